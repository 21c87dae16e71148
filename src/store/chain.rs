//! The envelope chain: how an envelope's hash is computed, and how a run's chain is verified.
//!
//! ```text
//! hash      = sha256( canonical JSON of {"index", "payload", "policy_hash", "prev_hash",
//!                                        "state_hash", "step_id"} )
//! prev_hash = the previous envelope's hash; for index 0, genesis(run_id)
//! genesis   = sha256("nanovm/run/" + run_id)
//! ```
//!
//! The run row records the number of envelopes and the last hash (the head) when the run
//! ends or suspends; a deleted tail shows there. Canonical JSON is the runtime's
//! (`exec::canon`): sorted keys, no spaces. The payload is
//! stored as its canonical text, so the hashed bytes are exactly
//! `{"index":I,"payload":P,"policy_hash":"…","prev_hash":"…","state_hash":"…"|null,"step_id":"…"}`.

use crate::exec::canon::{hex, hex_into, put_str, put_u64, sha256};

/// A hash as the `envelopes` table stores it (schema 4 on): the 32 bytes of a sha256 digest
/// given in lowercase hex, half the size of its text. Anything else (nanovm never writes it;
/// a file changed by hand) is kept as its own bytes, so that verification reports the link
/// instead of the write or the upgrade failing. The chain hashes the hex text either way.
/// (Such a value of exactly 32 bytes reads back as their hex, not as the text: it was no
/// valid hash before, and verification still reports its link.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored<'a> {
    Digest([u8; 32]),
    Other(&'a [u8]),
}

impl<'a> Stored<'a> {
    pub fn of(hash: &'a str) -> Self {
        unhex32(hash).map_or(Stored::Other(hash.as_bytes()), Stored::Digest)
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Stored::Digest(d) => d,
            Stored::Other(b) => b,
        }
    }
}

/// The hex text a stored hash stands for (see [`Stored`]).
pub fn unstore(bytes: &[u8]) -> String {
    let mut out = String::new();
    unstore_into(bytes, &mut out);
    out
}

/// [`unstore`] into a buffer that is reused (its old text is replaced).
pub fn unstore_into(bytes: &[u8], out: &mut String) {
    out.clear();
    if bytes.len() == 32 {
        hex_into(bytes, out);
    } else {
        out.push_str(&String::from_utf8_lossy(bytes));
    }
}

/// The 32 bytes of a sha256 digest in lowercase hex (64 digits), or `None`.
fn unhex32(s: &str) -> Option<[u8; 32]> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let [hi, lo] = *pair else { return None };
        *o = (digit(hi)? << 4) | digit(lo)?;
    }
    Some(out)
}

/// The `prev_hash` of a run's first envelope: it binds the chain to its run id.
pub fn genesis(run_id: &str) -> String {
    let mut m = Vec::with_capacity(11 + run_id.len());
    m.extend_from_slice(b"nanovm/run/");
    m.extend_from_slice(run_id.as_bytes());
    hex(&sha256(&m))
}

/// The fields an envelope's hash covers.
#[derive(Debug, Clone, Copy)]
pub struct Link<'a> {
    pub index: u64,
    pub step_id: &'a str,
    pub policy_hash: &'a str,
    pub state_hash: Option<&'a str>,
    pub prev_hash: &'a str,
    /// Canonical JSON text.
    pub payload: &'a str,
}

impl Link<'_> {
    /// The envelope's hash, in hex.
    pub fn hash(&self) -> String {
        // The whole message in one buffer, hashed in one call on the block function: no
        // buffering layer, no allocation per field.
        let mut m = Vec::with_capacity(
            self.payload.len()
                + self.policy_hash.len()
                + self.prev_hash.len()
                + self.state_hash.map_or(4, str::len)
                + self.step_id.len()
                + 128,
        );
        m.extend_from_slice(b"{\"index\":");
        put_u64(self.index, &mut m);
        m.extend_from_slice(b",\"payload\":");
        m.extend_from_slice(self.payload.as_bytes());
        m.extend_from_slice(b",\"policy_hash\":");
        put_str(self.policy_hash, &mut m);
        m.extend_from_slice(b",\"prev_hash\":");
        put_str(self.prev_hash, &mut m);
        m.extend_from_slice(b",\"state_hash\":");
        match self.state_hash {
            Some(s) => put_str(s, &mut m),
            None => m.extend_from_slice(b"null"),
        }
        m.extend_from_slice(b",\"step_id\":");
        put_str(self.step_id, &mut m);
        m.push(b'}');
        hex(&sha256(&m))
    }
}

/// The first thing wrong with a chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Break {
    /// The envelope at position `index` of the chain carries another index (a row was
    /// deleted or the indices were changed).
    IndexGap { index: u64, found: u64 },
    /// `prev_hash` is not the previous envelope's hash.
    PrevMismatch { index: u64 },
    /// The stored hash is not the hash of the envelope's fields.
    HashMismatch { index: u64 },
    /// The run row records another number of envelopes than the chain holds.
    CountMismatch { recorded: u64, found: u64 },
    /// The run row's head hash is not the last envelope's hash.
    HeadMismatch,
}

impl Break {
    /// The index of the first broken link, when the break is at one.
    pub fn index(&self) -> Option<u64> {
        match self {
            Break::IndexGap { index, .. }
            | Break::PrevMismatch { index }
            | Break::HashMismatch { index } => Some(*index),
            Break::CountMismatch { .. } | Break::HeadMismatch => None,
        }
    }
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Break::IndexGap { index, found } => write!(
                f,
                "envelope {index}: expected index {index}, found {found} (an envelope was deleted or renumbered)"
            ),
            Break::PrevMismatch { index } => write!(
                f,
                "envelope {index}: prev_hash is not the hash of envelope {} (the chain was cut or reordered)",
                index.saturating_sub(1)
            ),
            Break::HashMismatch { index } => write!(
                f,
                "envelope {index}: the stored hash does not match its contents (the envelope was changed)"
            ),
            Break::CountMismatch { recorded, found } => write!(
                f,
                "the run records {recorded} envelope(s) but the chain holds {found} (envelopes were deleted or added)"
            ),
            Break::HeadMismatch => write!(
                f,
                "the run's head hash is not the hash of its last envelope"
            ),
        }
    }
}

/// Walks one run's envelopes in index order.
#[derive(Debug)]
pub struct Verifier {
    expected: u64,
    prev: String,
    broken: Option<Break>,
}

impl Verifier {
    pub fn new(run_id: &str) -> Self {
        Self {
            expected: 0,
            prev: genesis(run_id),
            broken: None,
        }
    }

    /// Check the next envelope (with its stored `hash`); after the first break the rest is
    /// ignored.
    pub fn push(&mut self, link: &Link<'_>, hash: &str) {
        if self.broken.is_some() {
            return;
        }
        let index = self.expected;
        if link.index != index {
            self.broken = Some(Break::IndexGap {
                index,
                found: link.index,
            });
        } else if link.prev_hash != self.prev {
            self.broken = Some(Break::PrevMismatch { index });
        } else if link.hash() != hash {
            self.broken = Some(Break::HashMismatch { index });
        }
        self.expected += 1;
        hash.clone_into(&mut self.prev);
    }

    /// The verdict on a run that has not ended: the links, and at least `recorded` of them.
    pub fn finish_open(self, recorded: u64) -> Result<u64, Break> {
        if let Some(b) = self.broken {
            return Err(b);
        }
        if self.expected < recorded {
            return Err(Break::CountMismatch {
                recorded,
                found: self.expected,
            });
        }
        Ok(self.expected)
    }

    /// The verdict, given what the run row records.
    pub fn finish(self, recorded: u64, head: &str) -> Result<u64, Break> {
        if let Some(b) = self.broken {
            return Err(b);
        }
        if recorded != self.expected {
            return Err(Break::CountMismatch {
                recorded,
                found: self.expected,
            });
        }
        if head != self.prev {
            return Err(Break::HeadMismatch);
        }
        Ok(self.expected)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::*;
    use crate::exec::canon;
    use serde_json::json;

    #[test]
    fn the_hash_is_sha256_of_the_canonical_object() {
        let payload = canon::to_string(&json!({"status": "success", "output": "é\n"}));
        let link = Link {
            index: 3,
            step_id: "s\"1",
            policy_hash: "p",
            state_hash: None,
            prev_hash: "q",
            payload: &payload,
        };
        let whole = json!({
            "index": 3,
            "payload": {"status": "success", "output": "é\n"},
            "policy_hash": "p",
            "prev_hash": "q",
            "state_hash": null,
            "step_id": "s\"1",
        });
        assert_eq!(link.hash(), canon::sha256_hex(&whole));
        let with_state = Link {
            state_hash: Some("h"),
            ..link
        };
        let mut whole = whole;
        whole["state_hash"] = json!("h");
        assert_eq!(with_state.hash(), canon::sha256_hex(&whole));

        // Messages of every length around the block boundaries (the padding takes one or two
        // blocks), a large index, and hex hashes as the chain has them.
        let prev = "ab".repeat(32);
        for n in 0..200 {
            let output = "x".repeat(n);
            let payload = canon::to_string(&json!({"output": output}));
            let link = Link {
                index: u64::MAX - n as u64,
                step_id: "step",
                policy_hash: &prev,
                state_hash: Some(&prev),
                prev_hash: &prev,
                payload: &payload,
            };
            let whole = json!({
                "index": u64::MAX - n as u64,
                "payload": {"output": output},
                "policy_hash": prev,
                "prev_hash": prev,
                "state_hash": prev,
                "step_id": "step",
            });
            assert_eq!(
                link.hash(),
                canon::sha256_hex(&whole),
                "output of {n} bytes"
            );
        }
    }

    #[test]
    fn a_digest_is_stored_as_its_32_bytes_and_anything_else_as_it_is() {
        let digest = genesis("r");
        let stored = Stored::of(&digest);
        assert!(matches!(stored, Stored::Digest(_)));
        assert_eq!(stored.as_bytes().len(), 32);
        assert_eq!(unstore(stored.as_bytes()), digest);
        // Upper case, the wrong length, other characters: not a digest nanovm wrote.
        for text in [
            digest.to_uppercase(),
            digest[1..].to_owned(),
            format!("{}g", &digest[1..]),
            "x".into(),
            String::new(),
        ] {
            let stored = Stored::of(&text);
            assert_eq!(stored, Stored::Other(text.as_bytes()), "{text}");
            assert_eq!(unstore(stored.as_bytes()), text);
        }
    }

    #[test]
    fn genesis_is_sha256_of_the_run_id_with_its_prefix() {
        use sha2::{Digest, Sha256};
        for id in ["", "r", &"0123456789abcdef".repeat(8)] {
            let expected = hex(&Sha256::digest(format!("nanovm/run/{id}").as_bytes()));
            assert_eq!(genesis(id), expected);
        }
    }

    #[test]
    fn a_chain_verifies_and_each_kind_of_break_is_found() {
        let payloads: Vec<String> = (0..4).map(|i| format!("{{\"n\":{i}}}")).collect();
        let mut links = Vec::new();
        let mut prev = genesis("r");
        for (i, p) in payloads.iter().enumerate() {
            let link = Link {
                index: i as u64,
                step_id: "s",
                policy_hash: "p",
                state_hash: Some("h"),
                prev_hash: "",
                payload: p,
            };
            let link = (link, prev.clone());
            let hash = Link {
                prev_hash: &link.1,
                ..link.0
            }
            .hash();
            links.push((link.1.clone(), hash.clone()));
            prev = hash;
        }
        let verify = |rows: &[(u64, String, String, &str)], recorded: u64, head: &str| {
            let mut v = Verifier::new("r");
            for (index, prev, hash, payload) in rows {
                let link = Link {
                    index: *index,
                    step_id: "s",
                    policy_hash: "p",
                    state_hash: Some("h"),
                    prev_hash: prev,
                    payload,
                };
                v.push(&link, hash);
            }
            v.finish(recorded, head)
        };
        let rows: Vec<(u64, String, String, &str)> = links
            .iter()
            .enumerate()
            .map(|(i, (p, h))| (i as u64, p.clone(), h.clone(), payloads[i].as_str()))
            .collect();
        assert_eq!(verify(&rows, 4, &prev), Ok(4));
        // A changed payload.
        let mut bad = rows.clone();
        bad[2].3 = "{\"n\":9}";
        assert_eq!(
            verify(&bad, 4, &prev),
            Err(Break::HashMismatch { index: 2 })
        );
        // A deleted row.
        let mut bad = rows.clone();
        bad.remove(1);
        assert_eq!(
            verify(&bad, 4, &prev),
            Err(Break::IndexGap { index: 1, found: 2 })
        );
        // The tail cut off.
        assert_eq!(
            verify(&rows[..3], 4, &prev),
            Err(Break::CountMismatch {
                recorded: 4,
                found: 3
            })
        );
        // Two envelopes swapped, indices renumbered to look contiguous.
        let mut bad = rows.clone();
        bad.swap(1, 2);
        bad[1].0 = 1;
        bad[2].0 = 2;
        assert_eq!(
            verify(&bad, 4, &prev),
            Err(Break::PrevMismatch { index: 1 })
        );
        assert_eq!(verify(&rows, 4, "x"), Err(Break::HeadMismatch));
        assert_eq!(verify(&[], 0, &genesis("r")), Ok(0));
    }
}
