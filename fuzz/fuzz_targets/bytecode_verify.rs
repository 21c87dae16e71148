//! Arbitrary bytecode through the decoder, the verifier and the VM.
//!
//! Input layout: `[counts, spans, fuel, code...]`.
//! - `counts`: low nibble = how many of [`CONSTS`] the chunk gets, high nibble = how many of
//!   [`SLOTS`];
//! - `spans`: bit 0 clear = no spans; set = one span per instruction, or (bit 1 also set) one
//!   too many, which the verifier must reject;
//! - `fuel`: picks a fuel below the static cost for a second, starved run;
//! - `code`: the byte encoding [`bytecode::decode`] reads.
//!
//! Invariants: nothing panics; a decoded chunk re-encodes to the same bytes; a verified chunk
//! run with fuel = cost (lazily from several contexts, and with slots resolved up front)
//! never reports `FuelExhausted` or `Internal`, uses at most `cost()` fuel, and both slot
//! strategies agree; a starved run uses at most its fuel, never reports `Internal`, and
//! either matches the full run or stops with `FuelExhausted { used: fuel }`; a run with more
//! fuel than the cost matches the full run.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nanovm::expr::ast::Path;
use nanovm::expr::bytecode::{self, Chunk, Verified};
use nanovm::expr::names::{Context, SlotPath};
use nanovm::expr::vm::{self, FromScope, Outcome, Resolved, RuntimeError};
use nanovm::source::Span;
use serde_json::{Value, json};
use std::sync::OnceLock;

const SLOTS: &[&str] = &[
    "a",
    "b",
    "s.output.x",
    "l.0",
    "d.k",
    "n",
    "missing",
    "s",
    "str",
    "l",
    "s.output",
    "d.output.k",
    "l.output.1",
    "f",
    "u",
    "e",
];

struct Fixed {
    consts: Vec<Value>,
    slots: Vec<SlotPath>,
    contexts: Vec<Context>,
}

fn fixed() -> &'static Fixed {
    static F: OnceLock<Fixed> = OnceLock::new();
    F.get_or_init(|| {
        let consts = vec![
            json!(null),
            json!(true),
            json!(false),
            json!(0),
            json!(1),
            json!(-1),
            json!(1.5),
            json!(u64::MAX),
            json!(""),
            json!("a"),
            json!("abc"),
            json!([1, "a", null]),
            json!({"k": 1, "a": "x"}),
            json!([]),
            json!({}),
        ];
        let slots = SLOTS
            .iter()
            .map(|p| SlotPath::new(&Path::parse(p)))
            .collect();
        let raw = [
            json!({
                "step_outputs": {
                    "s": {"output": {"x": 3}, "x": "no"},
                    "l": [1, 2.5, "a"],
                    "n": -7,
                    "u": u64::MAX
                },
                "data": {
                    "a": "abc",
                    "b": true,
                    "d": {"k": "a", "output": {"k": [1]}},
                    "str": "a",
                    "f": -0.0,
                    "e": {}
                }
            }),
            json!({
                "step_outputs": {
                    "a": 1,
                    "b": 1.0,
                    "s": "a",
                    "str": ["abc", "a"]
                },
                "data": {
                    "l": [],
                    "d": {"k": null},
                    "n": 9223372036854775807i64,
                    "f": 1e300,
                    "u": 18446744073709551615u64,
                    "e": [[]]
                }
            }),
            json!({}),
        ];
        let contexts = raw
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap_or_default())
            .collect();
        Fixed {
            consts,
            slots,
            contexts,
        }
    })
}

fn check_full(v: &Verified, r: &Result<Outcome, RuntimeError>) {
    match r {
        Ok(o) => assert!(
            o.fuel_used <= v.cost(),
            "fuel {} > cost {}\n{}",
            o.fuel_used,
            v.cost(),
            bytecode::disassemble(v)
        ),
        Err(e @ (RuntimeError::FuelExhausted { .. } | RuntimeError::Internal { .. })) => {
            panic!(
                "{e:?} with fuel = cost {}\n{}",
                v.cost(),
                bytecode::disassemble(v)
            )
        }
        Err(RuntimeError::Type { .. }) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let [counts, spans_sel, fuel_sel, code_bytes @ ..] = data else {
        return;
    };
    let Ok(code) = bytecode::decode(code_bytes) else {
        return;
    };
    assert_eq!(
        bytecode::encode(&code),
        code_bytes,
        "decode/encode round trip"
    );

    let f = fixed();
    let n_consts = usize::from(counts & 0x0f).min(f.consts.len());
    let n_slots = usize::from(counts >> 4).min(f.slots.len());
    let spans = if spans_sel & 1 == 0 {
        Vec::new()
    } else {
        let extra = usize::from(spans_sel & 2 != 0);
        (0..code.len() + extra)
            .map(|i| Span::new(i, i + 1))
            .collect()
    };
    let chunk = Chunk {
        code,
        consts: f.consts.get(..n_consts).unwrap_or_default().to_vec(),
        slots: f.slots.get(..n_slots).unwrap_or_default().to_vec(),
        spans,
    };
    let Ok(v) = bytecode::verify(chunk) else {
        return;
    };
    assert!(v.cost() >= 1, "verified chunk with cost 0");
    let _ = bytecode::disassemble(&v);

    for ctx in &f.contexts {
        let lazy = vm::run(&v, &FromScope(ctx));
        check_full(&v, &lazy);

        let values = vm::resolve_slots(&v, ctx);
        let eager = vm::run(&v, &Resolved(&values));
        assert_eq!(lazy, eager, "lazy vs resolved slots\n{}", bytecode::disassemble(&v));

        // More fuel than needed changes nothing.
        let rich = vm::run_with_fuel(&v, &FromScope(ctx), v.cost().saturating_add(7));
        assert_eq!(lazy, rich, "fuel above cost changed the result");

        // A starved run.
        let fuel = u32::from(*fuel_sel) % v.cost();
        let starved = vm::run_with_fuel(&v, &FromScope(ctx), fuel);
        match starved {
            Ok(o) => {
                assert!(o.fuel_used <= fuel, "fuel {} > limit {fuel}", o.fuel_used);
                assert_eq!(Ok(o), lazy, "starved run finished differently");
            }
            Err(RuntimeError::FuelExhausted { used, .. }) => {
                assert_eq!(used, fuel, "FuelExhausted after {used}, limit {fuel}");
                if let Ok(o) = lazy {
                    assert!(
                        o.fuel_used > fuel,
                        "full run used {} but starved run at {fuel} ran out",
                        o.fuel_used
                    );
                }
            }
            Err(e @ RuntimeError::Type { .. }) => {
                assert_eq!(Err(e), lazy, "starved run failed differently");
            }
            Err(e @ RuntimeError::Internal { .. }) => {
                panic!("{e:?} in starved run\n{}", bytecode::disassemble(&v))
            }
        }
    }
});
