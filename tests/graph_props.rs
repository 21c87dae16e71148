//! Property tests of the step graph: on random programs with valid flow fields, the checker's
//! reachability, unreachable-step errors and cycle diagnostics agree with an independent walk
//! of DESIGN §3's rules, and a checked program comes out exactly when there is no error.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use nanovm::check::{Options, check_source};
use nanovm::diagnostics::has_errors;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::collections::{BTreeSet, VecDeque};

/// A generated step; targets are indices into the step array.
#[derive(Debug, Clone)]
enum Flow {
    /// A tool or llm step.
    Plain {
        llm: bool,
        is_terminal: Option<bool>,
        next_step: Option<usize>,
    },
    Condition {
        then: Option<usize>,
        otherwise: Option<usize>,
        skip: bool,
    },
}

#[derive(Debug, Clone)]
struct Prog {
    steps: Vec<Flow>,
    max_steps: Option<u64>,
}

fn id(i: usize) -> String {
    format!("s{i}")
}

fn flow(n: usize) -> impl Strategy<Value = Flow> {
    let target = proptest::option::weighted(0.4, 0..n);
    prop_oneof![
        // Plain: is_terminal true never goes with next_step.
        (
            any::<bool>(),
            proptest::option::weighted(0.4, any::<bool>()),
            target.clone()
        )
            .prop_map(|(llm, is_terminal, next_step)| Flow::Plain {
                llm,
                is_terminal,
                next_step: if is_terminal == Some(true) {
                    None
                } else {
                    next_step
                },
            }),
        // Condition: at least one branch.
        (0..n, target, any::<bool>(), 0..6u8).prop_map(|(first, other, then_first, skip)| {
            let (then, otherwise) = if then_first {
                (Some(first), other)
            } else {
                (other, Some(first))
            };
            Flow::Condition {
                then,
                otherwise,
                skip: skip == 0,
            }
        }),
    ]
}

fn prog() -> impl Strategy<Value = Prog> {
    (1usize..12)
        .prop_flat_map(|n| {
            (
                proptest::collection::vec(flow(n), n),
                proptest::option::of(prop_oneof![1u64..4, Just(1000)]),
            )
        })
        .prop_map(|(steps, max_steps)| Prog { steps, max_steps })
}

fn to_json(p: &Prog) -> Value {
    let steps: Vec<Value> = p
        .steps
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut m = Map::new();
            m.insert("id".into(), id(i).into());
            match f {
                Flow::Plain {
                    llm,
                    is_terminal,
                    next_step,
                } => {
                    if *llm {
                        m.insert("type".into(), "llm".into());
                        m.insert("prompt".into(), "Say $x".into());
                    } else {
                        m.insert("type".into(), "tool".into());
                        m.insert("tool".into(), "t".into());
                    }
                    if let Some(t) = is_terminal {
                        m.insert("is_terminal".into(), (*t).into());
                    }
                    if let Some(n) = next_step {
                        m.insert("next_step".into(), id(*n).into());
                    }
                }
                Flow::Condition {
                    then,
                    otherwise,
                    skip,
                } => {
                    m.insert("type".into(), "condition".into());
                    m.insert("condition".into(), "$x == 1".into());
                    if let Some(t) = then {
                        m.insert("then".into(), id(*t).into());
                    }
                    if let Some(o) = otherwise {
                        m.insert("otherwise".into(), id(*o).into());
                    }
                    if *skip {
                        m.insert("on_error".into(), "skip".into());
                    }
                }
            }
            Value::Object(m)
        })
        .collect();
    let mut prog = json!({"name": "p", "inputs": {"x": "int"}, "steps": steps});
    if let Some(m) = p.max_steps {
        prog["max_steps"] = m.into();
    }
    prog
}

/// A state of the walk: a step and whether it was entered from a condition branch.
type State = (usize, bool);

/// The states that may follow `(i, branch)`, from DESIGN §3's prose.
fn next_states(p: &Prog, (i, branch): State) -> Vec<State> {
    let n = p.steps.len();
    let seq = |j: usize| {
        if j + 1 < n {
            vec![(j + 1, false)]
        } else {
            vec![]
        }
    };
    match &p.steps[i] {
        Flow::Plain {
            is_terminal,
            next_step,
            ..
        } => {
            if *is_terminal == Some(true) {
                vec![]
            } else if let Some(t) = next_step {
                vec![(*t, false)]
            } else if branch {
                // The branch-leaf rule: the run ends.
                vec![]
            } else {
                seq(i)
            }
        }
        Flow::Condition {
            then,
            otherwise,
            skip,
        } => {
            let mut v: Vec<State> = then.iter().chain(otherwise).map(|t| (*t, true)).collect();
            if *skip {
                v.extend(seq(i));
            }
            v
        }
    }
}

/// Steps executed on some run: breadth-first from `steps[0]` entered in sequence.
fn reachable(p: &Prog) -> Vec<bool> {
    let mut seen = BTreeSet::new();
    let mut queue = VecDeque::from([(0usize, false)]);
    while let Some(s) = queue.pop_front() {
        if seen.insert(s) {
            queue.extend(next_states(p, s));
        }
    }
    (0..p.steps.len())
        .map(|i| seen.contains(&(i, false)) || seen.contains(&(i, true)))
        .collect()
}

/// Whether the state graph has a cycle among the states reachable from the entry or from any
/// step entered in sequence (the checker reports loops in dead code too).
fn has_cycle(p: &Prog) -> bool {
    let mut roots: BTreeSet<State> = BTreeSet::new();
    let mut stack: Vec<State> = (0..p.steps.len()).map(|i| (i, false)).collect();
    while let Some(s) = stack.pop() {
        if roots.insert(s) {
            stack.extend(next_states(p, s));
        }
    }
    // A cycle among the reached states: repeatedly strip states with no reached successor
    // left (Kahn); whatever remains lies on or leads into a cycle.
    let mut alive: BTreeSet<State> = roots;
    loop {
        let dead: Vec<State> = alive
            .iter()
            .copied()
            .filter(|s| !next_states(p, *s).iter().any(|t| alive.contains(t)))
            .collect();
        if dead.is_empty() {
            break;
        }
        for s in dead {
            alive.remove(&s);
        }
    }
    !alive.is_empty()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn reachability_matches_an_independent_walk(p in prog()) {
        let text = serde_json::to_string_pretty(&to_json(&p)).unwrap();
        let report = check_source(&text, &Options::default());
        let codes: Vec<&str> = report.diagnostics.iter().map(|d| d.code.as_str()).collect();

        prop_assert_eq!(
            report.checked.is_some(),
            !has_errors(&report.diagnostics),
            "checked iff no error: {:?}\n{}", codes, text
        );
        prop_assert!(
            !codes.iter().any(|c| c.starts_with("NV001") || *c == "NV0021"),
            "the generator makes schema-valid programs with existing targets: {:?}\n{}", codes, text
        );

        let view = report.graph.as_ref().expect("valid flow fields give a graph view");
        let expected = reachable(&p);
        prop_assert_eq!(view.steps.len(), p.steps.len());
        for (i, s) in view.steps.iter().enumerate() {
            prop_assert_eq!(&s.id, &id(i));
            prop_assert_eq!(
                s.reachable, expected[i],
                "step s{} reachability: checker {}, walk {}\n{}", i, s.reachable, expected[i], text
            );
        }

        // Every step the walk never reaches has exactly one NV0022, and no other step has one.
        let unreachable: BTreeSet<String> = report
            .diagnostics
            .iter()
            .filter(|d| d.code.as_str() == "NV0022")
            .map(|d| d.step_id.clone().unwrap_or_default())
            .collect();
        let want: BTreeSet<String> = (0..p.steps.len()).filter(|i| !expected[*i]).map(id).collect();
        prop_assert_eq!(&unreachable, &want, "NV0022 steps\n{}", text);
        prop_assert_eq!(
            codes.iter().filter(|c| **c == "NV0022").count(),
            want.len(),
            "one NV0022 per unreachable step\n{}", text
        );

        // Cycles: an error without max_steps, a warning with it.
        let cycle = has_cycle(&p);
        let (bad, ok) = if p.max_steps.is_some() { ("NV0024", "NV0023") } else { ("NV0023", "NV0024") };
        prop_assert_eq!(codes.contains(&bad), cycle, "cycle {} but codes {:?}\n{}", cycle, codes, text);
        prop_assert!(!codes.contains(&ok), "{:?}\n{}", codes, text);
    }
}
