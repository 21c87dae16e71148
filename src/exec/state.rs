//! The state of a run: the data (initial context, `output_key` aliases, resume payloads) and
//! the step outputs. Names resolve with the one rule of [`crate::expr::names`]: a step id
//! first, then a data key.

use super::canon::{self, Hasher, SHA256_INIT, sha256_finish};
use crate::expr::names::{Root, Scope};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::block_api::compress256;

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

/// The two maps of a state, as sections of its canonical JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Data = 0,
    StepOutputs = 1,
}

const OPEN: &[u8] = b"{\"data\":{";
const MIDDLE: &[u8] = b"},\"step_outputs\":{";
const CLOSE: &[u8] = b"}}";

/// One `"key":value` of a section: its key (a range of the key arena) and its length in bytes.
#[derive(Debug, Clone, Copy)]
struct Entry {
    key: (u32, u32),
    len: usize,
}

#[derive(Debug, Clone, Default)]
struct Part {
    /// Sorted by key bytes.
    entries: Vec<Entry>,
    /// Bytes of the section's entries and the commas between them.
    bytes: usize,
}

/// The canonical JSON of a run's state, kept up to date key by key, with the SHA-256 state
/// at every 64-byte block boundary of it.
///
/// Values are never changed in place once stored, so each one is written as canonical JSON
/// once, when it is inserted; hashing after an insert compresses only the blocks from the
/// first changed byte on (an output appended after the last step id in sort order costs a
/// block or two, not the whole state). [`CanonState::digest`] is exactly
/// `sha256(canonical JSON of {"data": …, "step_outputs": …})`, the same as [`State::hash`].
#[derive(Debug, Clone)]
pub(crate) struct CanonState {
    /// `{"data":{…},"step_outputs":{…}}`.
    buf: Vec<u8>,
    /// The keys of both sections, end to end.
    keys: String,
    parts: [Part; 2],
    /// `mids[k]`: the SHA-256 state after the first `k` blocks of `buf`; never empty, and
    /// valid only for blocks before the first byte changed since.
    mids: Vec<[u32; 8]>,
}

impl Default for CanonState {
    /// Empty buffers (no allocation); [`CanonState::reset`] before use.
    fn default() -> Self {
        Self {
            buf: Vec::new(),
            keys: String::new(),
            parts: [Part::default(), Part::default()],
            mids: Vec::new(),
        }
    }
}

impl CanonState {
    #[cfg(test)]
    pub(crate) fn new(state: &State) -> Self {
        let mut c = Self::default();
        c.reset(state);
        c
    }

    /// Start over from `state`, keeping the buffers.
    pub(crate) fn reset(&mut self, state: &State) {
        self.buf.clear();
        self.buf.reserve(256);
        self.buf.extend_from_slice(OPEN);
        self.buf.extend_from_slice(MIDDLE);
        self.buf.extend_from_slice(CLOSE);
        self.keys.clear();
        for p in &mut self.parts {
            p.entries.clear();
            p.bytes = 0;
        }
        self.mids.clear();
        self.mids.push(SHA256_INIT);
        for (k, v) in &state.data {
            self.insert(Section::Data, k, v);
        }
        for (k, v) in &state.step_outputs {
            self.insert(Section::StepOutputs, k, v);
        }
    }

    /// Bytes held (to decide whether keeping the buffers for another run is worth it).
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
            + self.keys.capacity()
            + self.mids.capacity() * 32
            + self
                .parts
                .iter()
                .map(|p| p.entries.capacity() * 16)
                .sum::<usize>()
    }

    fn part(&self, s: Section) -> &Part {
        let [data, outs] = &self.parts;
        match s {
            Section::Data => data,
            Section::StepOutputs => outs,
        }
    }

    fn part_mut(&mut self, s: Section) -> &mut Part {
        let [data, outs] = &mut self.parts;
        match s {
            Section::Data => data,
            Section::StepOutputs => outs,
        }
    }

    fn start(&self, s: Section) -> usize {
        match s {
            Section::Data => OPEN.len(),
            Section::StepOutputs => OPEN.len() + self.part(Section::Data).bytes + MIDDLE.len(),
        }
    }

    fn key(&self, e: &Entry) -> &[u8] {
        let (at, len) = (e.key.0 as usize, e.key.1 as usize);
        self.keys.as_bytes().get(at..at + len).unwrap_or_default()
    }

    /// Record that `key` now maps to `value` in a section (as `Map::insert` does).
    pub(crate) fn insert(&mut self, s: Section, key: &str, value: &Value) {
        let part = self.part(s);
        let last_is_smaller = part
            .entries
            .last()
            .is_none_or(|e| self.key(e) < key.as_bytes());
        let found = if last_is_smaller {
            Err(part.entries.len())
        } else {
            part.entries
                .binary_search_by(|e| self.key(e).cmp(key.as_bytes()))
        };
        let (index, replace) = match found {
            Ok(i) => (i, true),
            Err(i) => (i, false),
        };
        let n = part.entries.len();
        let old = if replace {
            part.entries.get(index).map_or(0, |e| e.len)
        } else {
            0
        };
        // Where entry `index` starts (with the comma before it, when it has one).
        let before: usize = if index == n && n > 0 {
            part.bytes + 1
        } else {
            part.entries
                .get(..index)
                .unwrap_or_default()
                .iter()
                .map(|e| e.len + 1)
                .sum()
        };
        let start = self.start(s);
        // The new bytes are written at the end of `buf` and rotated into place.
        let at = if replace || index == 0 {
            start + before
        } else {
            // After the previous entry, whose comma `before` counted.
            start + before - 1
        };
        if replace {
            let end = (at + old).min(self.buf.len());
            self.buf.drain(at.min(end)..end);
        }
        let tail = self.buf.len();
        if !replace && index > 0 {
            self.buf.push(b',');
        }
        let head = self.buf.len();
        canon::put_str(key, &mut self.buf);
        self.buf.push(b':');
        canon::put(value, &mut self.buf);
        let len = self.buf.len() - head;
        if !replace && index == 0 && n > 0 {
            self.buf.push(b',');
        }
        let added = self.buf.len() - tail;
        if let Some(moved) = self.buf.get_mut(at..) {
            moved.rotate_right(added);
        }
        self.mids.truncate(at / 64 + 1);

        if replace {
            let part = self.part_mut(s);
            if let Some(e) = part.entries.get_mut(index) {
                e.len = len;
            }
            part.bytes = part.bytes + len - old;
        } else {
            let key_at = u32::try_from(self.keys.len()).unwrap_or(u32::MAX);
            let key_len = u32::try_from(key.len()).unwrap_or(u32::MAX);
            self.keys.push_str(key);
            let part = self.part_mut(s);
            part.entries.insert(
                index,
                Entry {
                    key: (key_at, key_len),
                    len,
                },
            );
            part.bytes += added;
        }
    }

    /// SHA-256 of the canonical JSON of the state.
    pub(crate) fn digest(&mut self) -> [u8; 32] {
        let (blocks, tail) = self.buf.as_chunks::<64>();
        let done = self.mids.len() - 1;
        let mut state = self.mids.last().copied().unwrap_or(SHA256_INIT);
        for b in blocks.get(done..).unwrap_or_default() {
            compress256(&mut state, std::slice::from_ref(b));
            self.mids.push(state);
        }
        sha256_finish(state, tail, self.buf.len())
    }

    /// The canonical JSON itself (for tests and debugging).
    #[cfg(test)]
    fn bytes(&self) -> &[u8] {
        &self.buf
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

    #[test]
    fn the_incremental_canonical_state_is_the_canonical_state() {
        let keys = [
            "s00", "s01", "a", "ab", "", "b", "z\"q", "é", "Z", "step_10", "s1", "aa", "\n",
        ];
        let values = [
            json!(1),
            json!("text with \"quotes\" and \u{1}"),
            json!({"y": [1, 2.5, null], "x": {"b": true, "a": "é"}}),
            json!(null),
            json!("a long string to cross block boundaries ................................"),
            json!([]),
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize % n
        };
        for round in 0..40 {
            let mut state = State::new(Map::new());
            if round % 2 == 1 {
                state.data.insert("ctx".into(), json!({"k": round}));
            }
            let mut c = CanonState::new(&state);
            for _ in 0..30 {
                let k = keys.get(next(keys.len())).copied().unwrap_or_default();
                let v = values.get(next(values.len())).cloned().unwrap_or_default();
                let (section, map) = if next(3) == 0 {
                    (Section::Data, &mut state.data)
                } else {
                    (Section::StepOutputs, &mut state.step_outputs)
                };
                c.insert(section, k, &v);
                map.insert(k.to_owned(), v);
                let whole = json!({"data": state.data, "step_outputs": state.step_outputs});
                assert_eq!(String::from_utf8_lossy(c.bytes()), canon::to_string(&whole));
                assert_eq!(canon::hex(&c.digest()), state.hash());
                assert_eq!(CanonState::new(&state).digest(), c.digest());
            }
        }
    }
}
