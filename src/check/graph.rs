//! The step graph (DESIGN §3), the runtime's only source of control flow.
//!
//! Each top-level step is modelled twice, by how it is entered: in sequence, or as the target of
//! a condition branch. After a non-condition step: `is_terminal` ends the run, `next_step`
//! jumps (entering in sequence), otherwise a step entered in sequence falls through to the next
//! step in the array (past the last one the run ends with success) and a step entered from a
//! branch ends the run (the branch-leaf rule, after any chain of conditions). A condition jumps
//! to `then` or `otherwise` (entering as a branch); a missing branch fails the run. A condition
//! with `on_error: skip` that fails at run time falls through in sequence (Q25).
//!
//! Every analysis here is iterative and linear in the size of the graph, except the
//! "has step S run before X" query of [`Graph::ran_before`], which is answered from the
//! dominator tree in O(1) when S has a single reachable entry and by one search per queried
//! step otherwise.

use super::HashMap;
use crate::program::{OnError, Program, StepType};
use smallvec::SmallVec;

/// How a step is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Entry {
    Sequence,
    Branch,
}

/// Where control goes after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Run step `index`, entered this way.
    Step(usize, Entry),
    /// The run ends with success.
    End,
    /// The run fails: the condition's chosen branch is absent.
    NoTarget,
    /// The run fails: the jump names no step (the checker rejects such programs).
    TargetMissing,
}

/// One top-level step, as the graph sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StepFlow {
    is_condition: bool,
    terminal: bool,
    /// `None`: no such field; `Some(None)`: the field names no step (the run fails there).
    next_step: Option<Option<usize>>,
    then: Option<Option<usize>>,
    otherwise: Option<Option<usize>>,
    skip_on_error: bool,
}

/// The checked step graph over the top-level steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    steps: Vec<StepFlow>,
}

/// Successors (or predecessors, children) of a node: a condition has at most three.
type Succ = SmallVec<[NodeId; 3]>;

/// A node of the state graph: `index * 2 + entry`.
pub(crate) type NodeId = usize;

pub(crate) fn node(index: usize, entry: Entry) -> NodeId {
    index * 2 + usize::from(entry == Entry::Branch)
}

pub(crate) fn step_of(n: NodeId) -> usize {
    n / 2
}

impl Graph {
    /// Build the graph. Jumps go to top-level steps (`top`: id → index, and a span the graph
    /// does not read); targets that name none are left out (the checker reports them).
    pub(crate) fn build<T>(program: &Program, top: &HashMap<&str, (usize, T)>) -> Self {
        let target = |t: &Option<crate::program::Spanned<String>>| {
            t.as_ref()
                .map(|t| top.get(t.value.as_str()).map(|(i, _)| *i))
        };
        let steps = program
            .steps
            .iter()
            .map(|s| StepFlow {
                is_condition: s.step_type() == Some(StepType::Condition),
                terminal: s.is_terminal(),
                next_step: target(&s.next_step),
                then: target(&s.then),
                otherwise: target(&s.otherwise),
                skip_on_error: s.on_error() == OnError::Skip,
            })
            .collect();
        Self { steps }
    }

    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    fn seq_after(&self, index: usize) -> Next {
        if index + 1 < self.steps.len() {
            Next::Step(index + 1, Entry::Sequence)
        } else {
            Next::End
        }
    }

    /// Where control goes after non-condition step `index` succeeds (or is skipped).
    pub fn after(&self, index: usize, entry: Entry) -> Next {
        let Some(s) = self.steps.get(index) else {
            return Next::End;
        };
        if s.terminal {
            return Next::End;
        }
        match s.next_step {
            Some(Some(t)) => return Next::Step(t, Entry::Sequence),
            Some(None) => return Next::TargetMissing,
            None => {}
        }
        match entry {
            Entry::Sequence => self.seq_after(index),
            Entry::Branch => Next::End,
        }
    }

    /// Where control goes after condition step `index` evaluates to `value`.
    pub fn branch(&self, index: usize, value: bool) -> Next {
        let t = self
            .steps
            .get(index)
            .and_then(|s| if value { s.then } else { s.otherwise });
        match t {
            None => Next::NoTarget,
            Some(None) => Next::TargetMissing,
            Some(Some(t)) => Next::Step(t, Entry::Branch),
        }
    }

    /// Where control goes after condition step `index` fails with `on_error: skip` (Q25).
    pub fn skipped_condition(&self, index: usize) -> Next {
        self.seq_after(index)
    }

    /// Successor nodes of a node, and whether the run can end (with success) after it.
    pub(crate) fn successors(&self, n: NodeId, out: &mut Vec<NodeId>) -> bool {
        out.clear();
        let (index, entry) = (
            step_of(n),
            if n % 2 == 1 {
                Entry::Branch
            } else {
                Entry::Sequence
            },
        );
        let Some(s) = self.steps.get(index) else {
            return false;
        };
        let mut ends = false;
        let mut push = |next: Next, out: &mut Vec<NodeId>| match next {
            Next::Step(i, e) => {
                let id = node(i, e);
                if !out.contains(&id) {
                    out.push(id);
                }
            }
            Next::End => ends = true,
            Next::NoTarget | Next::TargetMissing => {}
        };
        if s.is_condition {
            push(self.branch(index, true), out);
            push(self.branch(index, false), out);
            if s.skip_on_error {
                push(self.skipped_condition(index), out);
            }
        } else {
            push(self.after(index, entry), out);
        }
        ends
    }

    pub(crate) fn node_count(&self) -> usize {
        self.steps.len() * 2
    }

    /// Run every whole-graph analysis.
    pub(crate) fn analyze(&self) -> Analysis {
        Analysis::new(self)
    }
}

/// Facts about the state graph, computed once.
#[derive(Debug, Clone)]
pub(crate) struct Analysis {
    pub reachable: Vec<bool>,
    /// Nodes after which the run can end with success.
    pub ends: Vec<bool>,
    /// Back edges of a depth-first search from the entry, successors in order: (from, to).
    pub back_edges: Vec<(NodeId, NodeId)>,
    /// Fewest steps executed on a path from the entry to an end, with that path.
    pub shortest: Option<Vec<NodeId>>,
    /// Most steps on a path to an end, when the reachable graph has no cycle.
    pub longest: Option<Vec<NodeId>>,
    /// Immediate dominators (entry: itself; unreachable: `usize::MAX`).
    idom: Vec<usize>,
    pre: Vec<u32>,
    post: Vec<u32>,
    succ: Vec<Succ>,
}

impl Analysis {
    fn new(g: &Graph) -> Self {
        let n = g.node_count();
        let mut ends = Vec::with_capacity(n);
        let mut buf = Vec::new();
        // Built in one pass (`vec![Succ::new(); n]` clones a SmallVec per node first).
        let succ: Vec<Succ> = (0..n)
            .map(|i| {
                ends.push(g.successors(i, &mut buf));
                Succ::from_slice(&buf)
            })
            .collect();
        let mut a = Analysis {
            reachable: vec![false; n],
            ends,
            back_edges: Vec::new(),
            shortest: None,
            longest: None,
            idom: vec![usize::MAX; n],
            pre: vec![0; n],
            post: vec![0; n],
            succ,
        };
        if n == 0 {
            return a;
        }
        let order = a.dfs();
        a.shortest_path();
        if a.back_edges.is_empty() {
            a.longest_path(&order);
        }
        a.dominators(&order);
        a
    }

    /// Iterative DFS from the entry: reachability, back edges; returns reverse postorder.
    fn dfs(&mut self) -> Vec<NodeId> {
        let n = self.succ.len();
        // 0 white, 1 grey, 2 black
        let mut color = vec![0u8; n];
        let mut postorder: Vec<NodeId> = Vec::with_capacity(n);
        // From the entry first (reachability), then from every step not reached yet, in array
        // order, so loops in dead code are reported too.
        let roots = std::iter::once(0).chain((1..n / 2).map(|i| node(i, Entry::Sequence)));
        let mut reached_from_entry = None;
        for root in roots {
            if color.get(root).copied() != Some(0) {
                continue;
            }
            self.dfs_from(root, &mut color, &mut postorder);
            if reached_from_entry.is_none() {
                reached_from_entry = Some(color.clone());
            }
        }
        for (v, c) in reached_from_entry.unwrap_or_default().iter().enumerate() {
            if let Some(r) = self.reachable.get_mut(v) {
                *r = *c != 0;
            }
        }
        // Reverse postorder of the part reachable from the entry (it was finished first).
        let from_entry = self.reachable.iter().filter(|r| **r).count();
        postorder.truncate(from_entry);
        postorder.reverse();
        postorder
    }

    fn dfs_from(&mut self, root: NodeId, color: &mut [u8], postorder: &mut Vec<NodeId>) {
        let mut stack: Vec<(NodeId, usize)> = vec![(root, 0)];
        if let Some(c) = color.get_mut(root) {
            *c = 1;
        }
        while let Some((v, i)) = stack.last_mut() {
            let v = *v;
            let next = self.succ.get(v).and_then(|s| s.get(*i)).copied();
            *i += 1;
            match next {
                Some(w) => match color.get(w).copied() {
                    Some(0) => {
                        if let Some(c) = color.get_mut(w) {
                            *c = 1;
                        }
                        stack.push((w, 0));
                    }
                    Some(1) => self.back_edges.push((v, w)),
                    _ => {}
                },
                None => {
                    if let Some(c) = color.get_mut(v) {
                        *c = 2;
                    }
                    postorder.push(v);
                    stack.pop();
                }
            }
        }
    }

    fn shortest_path(&mut self) {
        let n = self.succ.len();
        let mut prev = vec![usize::MAX; n];
        let mut seen = vec![false; n];
        let mut queue = std::collections::VecDeque::from([0usize]);
        if let Some(s) = seen.get_mut(0) {
            *s = true;
        }
        while let Some(v) = queue.pop_front() {
            if self.ends.get(v).copied().unwrap_or(false) {
                self.shortest = Some(path_to(&prev, v));
                return;
            }
            for &w in self.succ.get(v).map_or(&[][..], |s| s.as_slice()) {
                if let Some(s) = seen.get_mut(w)
                    && !*s
                {
                    *s = true;
                    if let Some(p) = prev.get_mut(w) {
                        *p = v;
                    }
                    queue.push_back(w);
                }
            }
        }
    }

    /// Longest path in an acyclic reachable graph, over the topological order.
    fn longest_path(&mut self, topo: &[NodeId]) {
        let n = self.succ.len();
        let mut len = vec![0u32; n];
        let mut prev = vec![usize::MAX; n];
        if let Some(l) = len.get_mut(0) {
            *l = 1;
        }
        let mut best: Option<(u32, NodeId)> = None;
        for &v in topo {
            let lv = len.get(v).copied().unwrap_or(0);
            if self.ends.get(v).copied().unwrap_or(false) && best.is_none_or(|(b, _)| lv > b) {
                best = Some((lv, v));
            }
            for &w in self.succ.get(v).map_or(&[][..], |s| s.as_slice()) {
                if let Some(lw) = len.get_mut(w)
                    && lv + 1 > *lw
                {
                    *lw = lv + 1;
                    if let Some(p) = prev.get_mut(w) {
                        *p = v;
                    }
                }
            }
        }
        self.longest = best.map(|(_, v)| path_to(&prev, v));
    }

    /// Cooper–Harvey–Kennedy iterative dominators, then pre/post numbers of the dominator tree.
    fn dominators(&mut self, rpo: &[NodeId]) {
        let n = self.succ.len();
        let mut rpo_index = vec![usize::MAX; n];
        for (i, &v) in rpo.iter().enumerate() {
            if let Some(r) = rpo_index.get_mut(v) {
                *r = i;
            }
        }
        // Predecessors in rpo order, all in one vector (`preds_of(v)` is a slice of it).
        let preds = Adjacency::new(
            n,
            rpo.iter().flat_map(|&v| {
                self.succ
                    .get(v)
                    .map_or(&[][..], |s| s.as_slice())
                    .iter()
                    .map(move |&w| (w, v))
            }),
        );
        let idom = &mut self.idom;
        if let Some(d) = idom.get_mut(0) {
            *d = 0;
        }
        let intersect = |idom: &[usize], mut a: usize, mut b: usize| {
            let ri = |x: usize| rpo_index.get(x).copied().unwrap_or(usize::MAX);
            while a != b {
                while ri(a) > ri(b) {
                    a = idom.get(a).copied().unwrap_or(0);
                }
                while ri(b) > ri(a) {
                    b = idom.get(b).copied().unwrap_or(0);
                }
            }
            a
        };
        let mut changed = true;
        while changed {
            changed = false;
            for &v in rpo.iter().skip(1) {
                let mut new: Option<usize> = None;
                for &p in preds.of(v) {
                    if idom.get(p).copied().unwrap_or(usize::MAX) == usize::MAX {
                        continue;
                    }
                    new = Some(match new {
                        None => p,
                        Some(q) => intersect(idom, p, q),
                    });
                }
                if let Some(d) = new
                    && idom.get(v).copied() != Some(d)
                {
                    if let Some(x) = idom.get_mut(v) {
                        *x = d;
                    }
                    changed = true;
                }
            }
        }
        // Number the dominator tree (children lists, iterative DFS).
        let children = Adjacency::new(
            n,
            rpo.iter()
                .skip(1)
                .map(|&v| (self.idom.get(v).copied().unwrap_or(usize::MAX), v)),
        );
        let mut clock = 0u32;
        let mut stack = vec![(0usize, 0usize)];
        if let Some(p) = self.pre.get_mut(0) {
            *p = clock;
        }
        while let Some((v, i)) = stack.last_mut() {
            let v = *v;
            match children.of(v).get(*i).copied() {
                Some(w) => {
                    *i += 1;
                    clock += 1;
                    if let Some(p) = self.pre.get_mut(w) {
                        *p = clock;
                    }
                    stack.push((w, 0));
                }
                None => {
                    clock += 1;
                    if let Some(p) = self.post.get_mut(v) {
                        *p = clock;
                    }
                    stack.pop();
                }
            }
        }
    }

    /// Whether node `a` dominates node `b` (both reachable).
    fn dominates(&self, a: NodeId, b: NodeId) -> bool {
        let get = |v: &Vec<u32>, i: usize| v.get(i).copied().unwrap_or(0);
        get(&self.pre, a) <= get(&self.pre, b) && get(&self.post, b) <= get(&self.post, a)
    }

    pub fn reachable_nodes(&self, index: usize) -> impl Iterator<Item = NodeId> + '_ {
        [node(index, Entry::Sequence), node(index, Entry::Branch)]
            .into_iter()
            .filter(|n| self.reachable.get(*n).copied().unwrap_or(false))
    }

    pub fn step_reachable(&self, index: usize) -> bool {
        self.reachable_nodes(index).next().is_some()
    }

    /// Nodes reachable from the successors of `from` (excluding `from` unless on a cycle).
    pub fn reach_after(&self, from: &[NodeId]) -> Vec<bool> {
        let mut seen = vec![false; self.succ.len()];
        let mut stack: Vec<NodeId> = from
            .iter()
            .flat_map(|f| self.succ.get(*f).into_iter().flatten().copied())
            .collect();
        while let Some(v) = stack.pop() {
            if let Some(s) = seen.get_mut(v)
                && !*s
            {
                *s = true;
                stack.extend(self.succ.get(v).into_iter().flatten().copied());
            }
        }
        seen
    }

    /// Nodes reachable from the entry without passing through `avoid`.
    pub fn reach_avoiding(&self, avoid: &[NodeId]) -> Vec<bool> {
        let mut seen = vec![false; self.succ.len()];
        if avoid.contains(&0) {
            return seen;
        }
        let mut stack = vec![0usize];
        while let Some(v) = stack.pop() {
            if avoid.contains(&v) {
                continue;
            }
            if let Some(s) = seen.get_mut(v)
                && !*s
            {
                *s = true;
                stack.extend(self.succ.get(v).into_iter().flatten().copied());
            }
        }
        seen
    }

    /// Whether step `s` has run before node `x` on every path (true), on none (false), or
    /// on some (None). `cache` holds per-step searches for steps with two reachable entries.
    pub fn ran_before(&self, s: usize, x: NodeId, cache: &mut RanCache) -> Option<bool> {
        let s_nodes: Vec<NodeId> = self.reachable_nodes(s).collect();
        if s_nodes.is_empty() {
            return Some(false);
        }
        let always = match s_nodes.as_slice() {
            [one] => *one != x && self.dominates(*one, x),
            _ => {
                let avoid = cache
                    .avoiding
                    .entry(s)
                    .or_insert_with(|| self.reach_avoiding(&s_nodes));
                !s_nodes.contains(&x) && !avoid.get(x).copied().unwrap_or(false)
            }
        };
        if always {
            return Some(true);
        }
        let after = cache
            .after
            .entry(s)
            .or_insert_with(|| self.reach_after(&s_nodes));
        if after.get(x).copied().unwrap_or(false) {
            None
        } else {
            Some(false)
        }
    }
}

/// Lists of nodes per node (predecessors, dominator-tree children) in one vector: node `v`'s
/// are `items[start[v]..start[v + 1]]`, in the order the pairs came.
struct Adjacency {
    start: Vec<usize>,
    items: Vec<NodeId>,
}

impl Adjacency {
    /// From `(node, item)` pairs; pairs whose node is not below `n` are left out.
    fn new(n: usize, pairs: impl Iterator<Item = (NodeId, NodeId)> + Clone) -> Self {
        let mut start = vec![0usize; n + 1];
        for (v, _) in pairs.clone() {
            if v < n
                && let Some(c) = start.get_mut(v + 1)
            {
                *c += 1;
            }
        }
        let mut total = 0;
        for c in &mut start {
            total += *c;
            *c = total;
        }
        // Node `v`'s items go to `start[v]..start[v + 1]`, filled from the front.
        let mut next = start.clone();
        let mut items = vec![0; total];
        for (v, w) in pairs {
            if v < n
                && let Some(at) = next.get_mut(v)
                && let Some(slot) = items.get_mut(*at)
            {
                *slot = w;
                *at += 1;
            }
        }
        Self { start, items }
    }

    fn of(&self, v: NodeId) -> &[NodeId] {
        match (self.start.get(v), self.start.get(v + 1)) {
            (Some(&a), Some(&b)) => self.items.get(a..b).unwrap_or_default(),
            _ => &[],
        }
    }
}

/// Memoised searches for [`Analysis::ran_before`].
#[derive(Debug, Default)]
pub(crate) struct RanCache {
    avoiding: HashMap<usize, Vec<bool>>,
    after: HashMap<usize, Vec<bool>>,
}

fn path_to(prev: &[usize], mut v: NodeId) -> Vec<NodeId> {
    let mut path = vec![v];
    while let Some(&p) = prev.get(v) {
        if p == usize::MAX {
            break;
        }
        path.push(p);
        v = p;
    }
    path.reverse();
    path
}
