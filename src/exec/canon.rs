//! Canonical JSON and the hashes over it: object keys sorted by their UTF-8 bytes, no
//! whitespace, strings and numbers written as serde_json writes them. `1` and `"1"` differ,
//! `1` and `1.0` differ (an int is not a float), key order does not matter.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::io::{self, Write};

/// Write `v` as canonical JSON.
pub fn write<W: Write>(v: &Value, out: &mut W) -> io::Result<()> {
    match v {
        Value::Object(m) => write_object(m, out),
        Value::Array(items) => {
            out.write_all(b"[")?;
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write(x, out)?;
            }
            out.write_all(b"]")
        }
        scalar => Ok(serde_json::to_writer(out, scalar)?),
    }
}

/// Write an object as canonical JSON.
pub fn write_object<W: Write>(m: &Map<String, Value>, out: &mut W) -> io::Result<()> {
    let mut keys: Vec<(&String, &Value)> = m.iter().collect();
    keys.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.write_all(b"{")?;
    for (i, (k, v)) in keys.into_iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, k)?;
        out.write_all(b":")?;
        write(v, out)?;
    }
    out.write_all(b"}")
}

/// Canonical JSON as a string.
pub fn to_string(v: &Value) -> String {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = write(v, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A SHA-256 hasher that canonical JSON can be written into.
#[derive(Debug, Default, Clone)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn value(&mut self, v: &Value) {
        // Writing into a hasher cannot fail.
        let _ = write(v, self);
    }

    pub fn object(&mut self, m: &Map<String, Value>) {
        let _ = write_object(m, self);
    }

    pub fn bytes(&mut self, b: &[u8]) {
        self.0.update(b);
    }

    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }

    pub fn finish_hex(self) -> String {
        hex(&self.finish())
    }
}

impl Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// SHA-256 of the canonical JSON of `v`, in hex.
pub fn sha256_hex(v: &Value) -> String {
    let mut h = Hasher::new();
    h.value(v);
    h.finish_hex()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The reference's Merkle root over a trace's state snapshots: leaves are
/// `sha256("{index}:{hash}")`, each level hashes pairs of digests (an odd last one is paired
/// with itself), and no snapshots give `sha256("empty")`.
pub fn merkle_root<'a>(snapshots: impl IntoIterator<Item = (u64, &'a str)>) -> String {
    let mut level: Vec<[u8; 32]> = snapshots
        .into_iter()
        .map(|(i, h)| Sha256::digest(format!("{i}:{h}").as_bytes()).into())
        .collect();
    if level.is_empty() {
        return hex(&Sha256::digest(b"empty"));
    }
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| {
                let mut h = Sha256::new();
                match pair {
                    [a, b] => {
                        h.update(a);
                        h.update(b);
                    }
                    [a] => {
                        h.update(a);
                        h.update(a);
                    }
                    _ => {}
                }
                h.finalize().into()
            })
            .collect();
    }
    level.first().map_or_else(String::new, |d| hex(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical() {
        assert_eq!(
            to_string(&json!({"b": [1, 1.0, "1", null], "a": {"z": true, "é": "x\n"}})),
            r#"{"a":{"z":true,"é":"x\n"},"b":[1,1.0,"1",null]}"#
        );
        assert_ne!(sha256_hex(&json!(1)), sha256_hex(&json!("1")));
        assert_eq!(
            sha256_hex(&json!({"a": 1, "b": 2})),
            sha256_hex(&json!({"b": 2, "a": 1}))
        );
    }

    #[test]
    fn merkle_matches_the_reference() {
        // Values computed with the reference's Trace.canonical_snapshot_hash.
        assert_eq!(
            merkle_root([]),
            "2e1cfa82b035c26cbbbdae632cea070514eb8b773f616aaeaf668e2f0be8f10d"
        );
        let one = merkle_root([(0, "ab")]);
        assert_eq!(one, hex(&Sha256::digest(b"0:ab")));
        let three = merkle_root([(0, "a"), (1, "b"), (2, "c")]);
        let l = |s: &str| -> [u8; 32] { Sha256::digest(s.as_bytes()).into() };
        let pair = |a: [u8; 32], b: [u8; 32]| -> [u8; 32] {
            let mut h = Sha256::new();
            h.update(a);
            h.update(b);
            h.finalize().into()
        };
        let expect = pair(pair(l("0:a"), l("1:b")), pair(l("2:c"), l("2:c")));
        assert_eq!(three, hex(&expect));
        assert_eq!(
            three,
            "06f8953d458c7bfe8771a7131c8e355f57745145d00eb76cce2911a4e69a1845"
        );
    }
}
