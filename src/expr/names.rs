//! The one name-resolution rule (DESIGN §2, §8 Q9–Q12, Q18), used by conditions now and by
//! prompt, system and args interpolation later. Nothing else in the crate walks a `$path`.
//!
//! `$root.a.b`: the root is a step id (that step's output; step outputs win over data), else a
//! data key. A first `output` segment right after a step id is the step's output itself (so
//! `$s.output.x` is field `x` of step `s`'s output even when that output has an `output`
//! key). Every further segment is a key; a segment of digits applied to a list indexes it; an
//! `output` segment the current value does not have as a key is skipped. Anything missing
//! reads as `None`; resolution never fails.

use super::ast::Path;
use super::value::NULL;
use serde::Deserialize;
use serde_json::{Map, Value};

/// What a root name refers to.
#[derive(Debug, Clone, Copy)]
pub enum Root<'a> {
    Step(&'a Value),
    Data(&'a Value),
    Missing,
}

/// Where roots are looked up. The runtime implements it over its state.
pub trait Scope {
    fn root(&self, name: &str) -> Root<'_>;
}

/// An evaluation context in the conformance shape: `{"step_outputs": {…}, "data": {…}}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    #[serde(default)]
    pub step_outputs: Map<String, Value>,
    #[serde(default)]
    pub data: Map<String, Value>,
}

impl Scope for Context {
    fn root(&self, name: &str) -> Root<'_> {
        if let Some(v) = self.step_outputs.get(name) {
            Root::Step(v)
        } else if let Some(v) = self.data.get(name) {
            Root::Data(v)
        } else {
            Root::Missing
        }
    }
}

/// One pre-split path segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Segment {
    pub key: Box<str>,
    /// The segment as a list index, when it is all digits.
    pub index: Option<usize>,
    pub is_output: bool,
}

impl Segment {
    pub fn new(key: &str) -> Self {
        let index = if !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()) {
            key.parse().ok()
        } else {
            None
        };
        Self {
            key: key.into(),
            index,
            is_output: key == "output",
        }
    }
}

/// A compiled `$path`: a root and pre-split segments.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SlotPath {
    pub root: Box<str>,
    pub segments: Box<[Segment]>,
}

impl SlotPath {
    pub fn new(path: &Path) -> Self {
        Self {
            root: path.root.as_str().into(),
            segments: path.segments.iter().map(|s| Segment::new(s)).collect(),
        }
    }

    /// Whether the first segment is the `output` accessor of a step root (and so names the
    /// step's output itself rather than a key of it).
    pub fn first_is_step_output(&self, root_is_step: bool) -> bool {
        root_is_step && self.segments.first().is_some_and(|s| s.is_output)
    }

    /// The segments that follow the root, without the `output` accessor of a step root.
    pub fn segments_after_root(&self, root_is_step: bool) -> &[Segment] {
        let skip = usize::from(self.first_is_step_output(root_is_step));
        self.segments.get(skip..).unwrap_or_default()
    }
}

impl std::fmt::Display for SlotPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "${}", self.root)?;
        for s in &*self.segments {
            write!(f, ".{}", s.key)?;
        }
        Ok(())
    }
}

/// One `$path` inside a prompt, system text or argument string: `$` then `\w+(\.\w+)*`
/// (word characters are Unicode letters, digits and `_`, as Python's `\w`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRef {
    pub path: Path,
    /// Byte range of `$path` in the text.
    pub start: usize,
    pub end: usize,
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every `$path` of a text, in order. The runtime interpolates exactly these.
pub fn template_refs(text: &str) -> Vec<TemplateRef> {
    let mut out = Vec::new();
    let mut rest = text;
    let mut base = 0;
    while let Some(pos) = rest.find('$') {
        let after = pos + 1;
        let tail = rest.get(after..).unwrap_or_default();
        let mut end = tail.find(|c: char| !is_word(c)).unwrap_or(tail.len());
        if end == 0 {
            base += after;
            rest = tail;
            continue;
        }
        // Further `.word` segments.
        while let Some(next) = tail.get(end..).and_then(|t| t.strip_prefix('.')) {
            let seg = next.find(|c: char| !is_word(c)).unwrap_or(next.len());
            if seg == 0 {
                break;
            }
            end += 1 + seg;
        }
        let body = tail.get(..end).unwrap_or_default();
        out.push(TemplateRef {
            path: Path::parse(body),
            start: base + pos,
            end: base + after + end,
        });
        base += after + end;
        rest = tail.get(end..).unwrap_or_default();
    }
    out
}

/// One step of the walk over a value.
#[derive(Debug)]
pub enum Step<'a> {
    Into(&'a Value),
    Skip,
    Missing,
}

/// Apply one segment to a value.
#[inline]
pub fn step<'a>(v: &'a Value, seg: &Segment) -> Step<'a> {
    let found = match v {
        Value::Object(m) => m.get(&*seg.key),
        Value::Array(a) => seg.index.and_then(|i| a.get(i)),
        _ => None,
    };
    match found {
        Some(x) => Step::Into(x),
        None if seg.is_output => Step::Skip,
        None => Step::Missing,
    }
}

/// Resolve a path in a scope. Never fails: anything missing is `None`.
#[inline]
pub fn resolve<'a, S: Scope + ?Sized>(scope: &'a S, path: &SlotPath) -> &'a Value {
    lookup(scope, path).unwrap_or(&NULL)
}

/// Resolve a path in a scope, telling a missing name or key (`None`) from a present `null`:
/// interpolation keeps an unresolvable `$path` verbatim (Q19).
pub fn lookup<'a, S: Scope + ?Sized>(scope: &'a S, path: &SlotPath) -> Option<&'a Value> {
    let (mut v, is_step) = match scope.root(&path.root) {
        Root::Step(v) => (v, true),
        Root::Data(v) => (v, false),
        Root::Missing => return None,
    };
    for seg in path.segments_after_root(is_step) {
        match step(v, seg) {
            Step::Into(x) => v = x,
            Step::Skip => {}
            Step::Missing => return None,
        }
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn ctx(v: Value) -> Context {
        serde_json::from_value(v).unwrap()
    }

    fn r<'a>(c: &'a Context, p: &str) -> &'a Value {
        resolve(c, &SlotPath::new(&Path::parse(p)))
    }

    #[test]
    fn rule() {
        let c = ctx(json!({
            "step_outputs": {"s": {"output": "inner", "x": 1}, "cls": "yes", "clash": "step",
                             "lst": [10, 20]},
            "data": {"user": {"name": "ana"}, "clash": "data", "n": 5}
        }));
        assert_eq!(r(&c, "s.output.output"), &json!("inner"));
        assert_eq!(r(&c, "s.output.x"), &json!(1));
        assert_eq!(r(&c, "s.x"), &json!(1));
        assert_eq!(r(&c, "cls"), &json!("yes"));
        assert_eq!(r(&c, "cls.output"), &json!("yes"));
        assert_eq!(r(&c, "cls.output.output"), &json!("yes"));
        assert_eq!(r(&c, "cls.output.label"), &Value::Null);
        assert_eq!(r(&c, "clash"), &json!("step"));
        assert_eq!(r(&c, "user.output.name"), &json!("ana"));
        assert_eq!(r(&c, "lst.1"), &json!(20));
        assert_eq!(r(&c, "lst.output.0"), &json!(10));
        assert_eq!(r(&c, "lst.5"), &Value::Null);
        assert_eq!(r(&c, "ghost.output"), &Value::Null);
        assert_eq!(r(&c, "n.x"), &Value::Null);
    }

    #[test]
    fn templates() {
        let t = "Hi $user.name, $a.b. $ $$x é$città.x_1-y $9";
        let got: Vec<(String, &str)> = template_refs(t)
            .iter()
            .map(|r| (r.path.to_string(), &t[r.start..r.end]))
            .collect();
        assert_eq!(
            got,
            vec![
                ("$user.name".to_owned(), "$user.name"),
                ("$a.b".to_owned(), "$a.b"),
                ("$x".to_owned(), "$x"),
                ("$città.x_1".to_owned(), "$città.x_1"),
                ("$9".to_owned(), "$9"),
            ]
        );
    }
}
