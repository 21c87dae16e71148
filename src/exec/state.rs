//! The state of a run: the data (initial context, `output_key` aliases, resume payloads) and
//! the step outputs. Names resolve with the one rule of [`crate::expr::names`]: a step id
//! first, then a data key.

use super::canon::Hasher;
use crate::expr::names::{Root, Scope};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub data: Map<String, Value>,
    pub step_outputs: Map<String, Value>,
}

impl Scope for State {
    #[inline]
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

impl State {
    pub fn new(data: Map<String, Value>) -> Self {
        Self {
            data,
            step_outputs: Map::new(),
        }
    }

    /// SHA-256 (hex) of the canonical JSON of `{"data": …, "step_outputs": …}`.
    pub fn hash(&self) -> String {
        let mut h = Hasher::new();
        h.bytes(b"{\"data\":");
        h.object(&self.data);
        h.bytes(b",\"step_outputs\":");
        h.object(&self.step_outputs);
        h.bytes(b"}");
        h.finish_hex()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::canon::sha256_hex;
    use serde_json::json;

    #[test]
    fn hash_is_canonical_json_of_the_state() {
        let mut s = State::new(
            json!({"b": 1, "a": "x"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        s.step_outputs.insert("t".into(), json!([1.0]));
        assert_eq!(
            s.hash(),
            sha256_hex(&json!({"data": {"a": "x", "b": 1}, "step_outputs": {"t": [1.0]}}))
        );
    }
}
