//! Canonical JSON and the hashes over it: object keys sorted by their UTF-8 bytes, no
//! whitespace, strings and numbers written as serde_json writes them. `1` and `"1"` differ,
//! `1` and `1.0` differ (an int is not a float), key order does not matter.

use serde_json::{Map, Value};
use sha2::block_api::compress256;
use sha2::{Digest, Sha256};
use smallvec::SmallVec;
use std::io::{self, Write};

/// Write `v` as canonical JSON.
pub fn write<W: Write>(v: &Value, out: &mut W) -> io::Result<()> {
    let mut buf = Vec::new();
    put(v, &mut buf);
    out.write_all(&buf)
}

/// Write an object as canonical JSON.
pub fn write_object<W: Write>(m: &Map<String, Value>, out: &mut W) -> io::Result<()> {
    let mut buf = Vec::new();
    put_object(m, &mut buf);
    out.write_all(&buf)
}

/// Write a string as a JSON string literal, escaped exactly as serde_json escapes it.
pub fn write_str<W: Write>(s: &str, out: &mut W) -> io::Result<()> {
    let mut buf = Vec::with_capacity(s.len() + 2);
    put_str(s, &mut buf);
    out.write_all(&buf)
}

/// Append `v` as canonical JSON.
pub(crate) fn put(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => put_object(m, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                put(x, out);
            }
            out.push(b']');
        }
        Value::String(s) => put_str(s, out),
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(i) = n.as_u64() {
                put_u64(i, out);
            } else if let Some(i) = n.as_i64() {
                out.push(b'-');
                put_u64(i.unsigned_abs(), out);
            } else {
                // Floats as serde_json writes them (ryu); writing into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, n);
            }
        }
    }
}

/// Append an integer in decimal.
pub(crate) fn put_u64(n: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(decimal(n, &mut [0; 20]));
}

/// An integer in decimal, written at the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        if let Some(d) = buf.get_mut(at) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || at == 0 {
            break;
        }
    }
    buf.get(at..).unwrap_or_default()
}

/// Append an object as canonical JSON.
fn put_object(m: &Map<String, Value>, out: &mut Vec<u8>) {
    let mut keys: SmallVec<[(&String, &Value); 16]> = m.iter().collect();
    keys.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push(b'{');
    for (i, (k, v)) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        put_str(k, out);
        out.push(b':');
        put(v, out);
    }
    out.push(b'}');
}

/// What a byte becomes inside a JSON string, as serde_json writes it: `0` for itself, a
/// letter for a short escape, `u` for `\u00XX`.
#[inline(always)]
const fn escape(b: u8) -> u8 {
    match b {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x09 => b't',
        0x0a => b'n',
        0x0c => b'f',
        0x0d => b'r',
        0x00..=0x1f => b'u',
        _ => 0,
    }
}

/// Whether any of 8 bytes is below 0x20, a quote or a backslash (exact: the borrow of a
/// subtraction only reaches bytes above one that is flagged).
#[inline(always)]
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    (control | zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\')))) != 0
}

/// Append a string as a JSON string literal, escaped exactly as serde_json escapes it.
pub(crate) fn put_str(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let (words, rest) = bytes.as_chunks::<8>();
    if !words
        .iter()
        .any(|w| word_needs_escape(u64::from_le_bytes(*w)))
        && rest.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\')
    {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        out.extend_from_slice(bytes.get(start..i).unwrap_or_default());
        start = i + 1;
        let e = escape(b);
        if e == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let hi = HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0');
            let lo = HEX.get(usize::from(b & 0xf)).copied().unwrap_or(b'0');
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', hi, lo]);
        } else {
            out.extend_from_slice(&[b'\\', e]);
        }
    }
    out.extend_from_slice(bytes.get(start..).unwrap_or_default());
    out.push(b'"');
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
    let mut out = String::with_capacity(bytes.len() * 2);
    hex_into(bytes, &mut out);
    out
}

/// Lower-case hex, appended to `out`.
pub fn hex_into(bytes: &[u8], out: &mut String) {
    for chunk in bytes.chunks(32) {
        let mut buf = [0u8; 64];
        for (pair, &b) in buf.chunks_exact_mut(2).zip(chunk) {
            pair.copy_from_slice(&[hex_digit(b >> 4), hex_digit(b & 0xf)]);
        }
        // Only ASCII digits and letters were written.
        out.push_str(
            std::str::from_utf8(buf.get(..chunk.len() * 2).unwrap_or_default()).unwrap_or_default(),
        );
    }
}

#[inline(always)]
fn hex_digit(d: u8) -> u8 {
    if d < 10 { b'0' + d } else { b'a' + (d - 10) }
}

/// SHA-256's initial state (FIPS 180-4 §5.3.3).
pub(crate) const SHA256_INIT: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// Finish a SHA-256: `state` has absorbed the first `len - tail.len()` bytes of a `len`-byte
/// message (a whole number of blocks), `tail` (shorter than a block) is the rest.
pub(crate) fn sha256_finish(mut state: [u32; 8], tail: &[u8], len: usize) -> [u8; 32] {
    let mut pad = [0u8; 128];
    let n = tail.len().min(63);
    if let (Some(dst), Some(src)) = (pad.get_mut(..n), tail.get(..n)) {
        dst.copy_from_slice(src);
    }
    if let Some(b) = pad.get_mut(n) {
        *b = 0x80;
    }
    let used = if n < 56 { 64 } else { 128 };
    let bits = (len as u64).wrapping_mul(8);
    if let Some(dst) = pad.get_mut(used - 8..used) {
        dst.copy_from_slice(&bits.to_be_bytes());
    }
    let (blocks, _) = pad.as_chunks::<64>();
    compress256(&mut state, blocks.get(..used / 64).unwrap_or_default());
    let mut out = [0u8; 32];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// SHA-256 of a byte string, straight on the block function (no buffering layer).
pub(crate) fn sha256(msg: &[u8]) -> [u8; 32] {
    let (blocks, tail) = msg.as_chunks::<64>();
    let mut state = SHA256_INIT;
    compress256(&mut state, blocks);
    sha256_finish(state, tail, msg.len())
}

/// A Merkle leaf: `sha256("{index}:{hash}")`.
fn leaf(index: u64, hash: &str) -> [u8; 32] {
    let mut digits = [0; 20];
    let digits = decimal(index, &mut digits);
    let len = digits.len() + 1 + hash.len();
    let mut msg = [0u8; 96];
    match msg.get_mut(..len) {
        Some(m) => {
            let (d, rest) = m.split_at_mut(digits.len());
            d.copy_from_slice(digits);
            if let Some((colon, h)) = rest.split_first_mut() {
                *colon = b':';
                h.copy_from_slice(hash.as_bytes());
            }
            sha256(m)
        }
        None => sha256(format!("{index}:{hash}").as_bytes()),
    }
}

/// The reference's Merkle root over a trace's state snapshots: leaves are
/// `sha256("{index}:{hash}")`, each level hashes pairs of digests (an odd last one is paired
/// with itself), and no snapshots give `sha256("empty")`.
pub fn merkle_root<'a>(snapshots: impl IntoIterator<Item = (u64, &'a str)>) -> String {
    let mut level: Vec<[u8; 32]> = snapshots.into_iter().map(|(i, h)| leaf(i, h)).collect();
    if level.is_empty() {
        return hex(&sha256(b"empty"));
    }
    // Each level overwrites the front of the one below: slot j is written after 2j and
    // 2j + 1 are read, and later pairs lie further right.
    while level.len() > 1 {
        let half = level.len().div_ceil(2);
        for j in 0..half {
            let a = level.get(2 * j).copied().unwrap_or_default();
            let b = level.get(2 * j + 1).copied().unwrap_or(a);
            let mut pair = [0u8; 64];
            let (x, y) = pair.split_at_mut(32);
            x.copy_from_slice(&a);
            y.copy_from_slice(&b);
            if let Some(slot) = level.get_mut(j) {
                *slot = sha256(&pair);
            }
        }
        level.truncate(half);
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
        let numbers = json!([
            0,
            7,
            -1,
            10,
            -10,
            i64::MIN,
            i64::MAX,
            u64::MAX,
            1.5,
            -0.0,
            1e300,
            0.1
        ]);
        assert_eq!(
            to_string(&numbers),
            serde_json::to_string(&numbers).unwrap_or_default()
        );
        assert_ne!(sha256_hex(&json!(1)), sha256_hex(&json!("1")));
        assert_eq!(
            sha256_hex(&json!({"a": 1, "b": 2})),
            sha256_hex(&json!({"b": 2, "a": 1}))
        );
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut all: String = (0u8..0x80).map(char::from).collect();
        all.push_str("é€😀\u{7f}\u{2028}");
        let mut cases = vec![
            all.clone(),
            String::new(),
            "plain".into(),
            "a\"b\\c".into(),
            "\u{1f}x".into(),
        ];
        for special in [
            '"', '\\', '\n', '\u{0}', '\u{1f}', ' ', '!', '#', '[', ']', '\u{7f}', 'é',
        ] {
            for at in 0..20 {
                let mut t: String = "abcdefghijklmnopqrs".chars().take(19).collect();
                t.insert(at.min(t.len()), special);
                cases.push(t);
            }
        }
        for s in cases.iter().map(String::as_str) {
            let mut out = Vec::new();
            write_str(s, &mut out).unwrap_or_default();
            assert_eq!(out, serde_json::to_vec(s).unwrap_or_default(), "{s:?}");
        }
    }

    #[test]
    fn block_level_sha256_is_sha256() {
        let msg: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for n in 0..msg.len() {
            let m = msg.get(..n).unwrap_or_default();
            assert_eq!(sha256(m), <[u8; 32]>::from(Sha256::digest(m)), "length {n}");
        }
        assert_eq!(hex(&[0x00, 0x7f, 0xa5, 0xff]), "007fa5ff");
        assert_eq!(hex(&[0xab; 40]), "ab".repeat(40));
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
        let long = "h".repeat(120);
        assert_eq!(
            merkle_root([(12_345, long.as_str())]),
            hex(&Sha256::digest(format!("12345:{long}").as_bytes()))
        );
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
