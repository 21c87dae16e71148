//! A decoded JSON string that remembers where its characters came from.

use crate::diagnostics::{Code, Diagnostic};
use crate::source::Span;
use std::borrow::Cow;

/// One escape sequence: `dec_len` decoded bytes that came from `src_len` source bytes.
/// Offsets are relative to the decoded text and to the first byte after the opening quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Escape {
    dec: u32,
    dec_len: u32,
    src: u32,
    src_len: u32,
}

/// A JSON string: its decoded value, the span of the literal (quotes included) and the
/// escapes needed to map decoded offsets back to the file. The value borrows the document's
/// text (`'s`) unless it had escapes; [`Str::into_static`] makes it own it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Str<'s> {
    pub value: Cow<'s, str>,
    /// The literal in the file, quotes included.
    pub span: Span,
    escapes: Box<[Escape]>,
}

impl<'s> Str<'s> {
    /// A string whose decoded text equals its source text (no escapes).
    pub fn plain(value: impl Into<Cow<'s, str>>, span: Span) -> Self {
        Self {
            value: value.into(),
            span,
            escapes: Box::default(),
        }
    }

    /// A string whose decoded text cannot be mapped back to the file (its literal is
    /// malformed and already reported): every decoded offset maps to the start or the end of
    /// the literal's content, so later diagnostics cover the whole literal.
    pub fn opaque(value: impl Into<Cow<'s, str>>, span: Span) -> Self {
        let value = value.into();
        let src_len = span.end.saturating_sub(span.start).saturating_sub(2);
        Self {
            escapes: Box::new([Escape {
                dec: 0,
                dec_len: to_u32(value.len()),
                src: 0,
                src_len: to_u32(src_len),
            }]),
            value,
            span,
        }
    }

    /// Decode the literal at `span` of `text` (a validated JSON string token).
    pub fn from_source(text: &'s str, span: Span) -> Result<Self, Box<Diagnostic>> {
        let bad = |at: usize, len: usize, msg: &str| {
            Box::new(
                Diagnostic::new(
                    Code::JsonSyntax,
                    Span::new(at, at + len),
                    format!("invalid JSON: {msg}"),
                )
                .with_label("here")
                .with_help(
                    "in a JSON string, write control characters as escapes such as \\n or \\t",
                ),
            )
        };
        let raw = text
            .get(span.start + 1..span.end.saturating_sub(1))
            .ok_or_else(|| bad(span.start, 1, "unterminated string"))?;
        let base = span.start + 1;
        // Both are ASCII, so a byte scan finds exactly the chars (no UTF-8 continuation byte is
        // below 0x80).
        if !raw.bytes().any(|b| b == b'\\' || b < b' ') {
            return Ok(Self::plain(raw, span));
        }
        let mut value = String::with_capacity(raw.len());
        let mut escapes = Vec::new();
        let mut chars = raw.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c < ' ' {
                return Err(bad(
                    base + i,
                    c.len_utf8(),
                    "raw control character in a string",
                ));
            }
            if c != '\\' {
                value.push(c);
                continue;
            }
            let dec = value.len();
            let Some((_, e)) = chars.next() else {
                return Err(bad(base + i, 1, "unterminated escape"));
            };
            let decoded = match e {
                '"' => '"',
                '\\' => '\\',
                '/' => '/',
                'b' => '\u{8}',
                'f' => '\u{c}',
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                'u' => {
                    let hi = hex4(raw, i + 2).ok_or_else(|| bad(base + i, 2, "bad \\u escape"))?;
                    skip(&mut chars, 4);
                    let cp = if (0xD800..0xDC00).contains(&hi) {
                        let lo = raw
                            .get(i + 6..i + 8)
                            .filter(|s| *s == "\\u")
                            .and_then(|_| hex4(raw, i + 8))
                            .filter(|lo| (0xDC00..0xE000).contains(lo))
                            .ok_or_else(|| bad(base + i, 6, "unpaired surrogate"))?;
                        skip(&mut chars, 6);
                        0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                    } else {
                        hi
                    };
                    char::from_u32(cp).ok_or_else(|| bad(base + i, 6, "unpaired surrogate"))?
                }
                _ => return Err(bad(base + i, 1 + e.len_utf8(), "unknown escape")),
            };
            value.push(decoded);
            let src_end = chars.peek().map_or(raw.len(), |(j, _)| *j);
            escapes.push(Escape {
                dec: to_u32(dec),
                dec_len: to_u32(decoded.len_utf8()),
                src: to_u32(i),
                src_len: to_u32(src_end - i),
            });
        }
        Ok(Self {
            value: Cow::Owned(value),
            span,
            escapes: escapes.into_boxed_slice(),
        })
    }

    /// The decoded text.
    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// The string, owning its text.
    pub fn into_static(self) -> Str<'static> {
        Str {
            value: Cow::Owned(self.value.into_owned()),
            span: self.span,
            escapes: self.escapes,
        }
    }

    /// The first byte of the content in the file (after the opening quote).
    pub fn content_start(&self) -> usize {
        self.span.start + 1
    }

    /// Map a byte offset of the decoded value to a byte offset in the file. An offset inside
    /// an escape maps to the escape's start, or to its end when `is_end`.
    pub fn source_offset(&self, decoded: usize, is_end: bool) -> usize {
        let d = to_u32(decoded);
        let idx = self.escapes.partition_point(|e| e.dec <= d);
        let rel = match idx.checked_sub(1).and_then(|k| self.escapes.get(k)) {
            None => d,
            Some(e) if d >= e.dec + e.dec_len => e.src + e.src_len + (d - e.dec - e.dec_len),
            Some(e) if d == e.dec => e.src,
            Some(e) if is_end => e.src + e.src_len,
            Some(e) => e.src,
        };
        self.content_start() + rel as usize
    }

    /// Map a span of the decoded value to the bytes of the file.
    pub fn source_span(&self, decoded: Span) -> Span {
        let start = self.source_offset(decoded.start, false);
        let end = self.source_offset(decoded.end, true).max(start);
        Span::new(start, end)
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn hex4(raw: &str, at: usize) -> Option<u32> {
    let h = raw.get(at..at + 4)?;
    if h.bytes().all(|b| b.is_ascii_hexdigit()) {
        u32::from_str_radix(h, 16).ok()
    } else {
        None
    }
}

fn skip(chars: &mut impl Iterator, n: usize) {
    for _ in 0..n {
        chars.next();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn lit(src: &str) -> Str<'_> {
        Str::from_source(src, Span::new(0, src.len())).unwrap()
    }

    #[test]
    fn decodes_and_maps() {
        let s = lit(r#""a\nb\u00e9c\ud83d\ude00d""#);
        assert_eq!(s.value, "a\nbéc😀d");
        // `b` is decoded byte 2, source byte 4 (after `"a\n`).
        assert_eq!(s.source_offset(2, false), 4);
        // `c` follows `é` (2 decoded bytes from 6 source bytes).
        let c = s.value.find('c').unwrap();
        assert_eq!(
            &r#""a\nb\u00e9c\ud83d\ude00d""#[s.source_offset(c, false)..][..1],
            "c"
        );
        // The emoji maps to its whole surrogate-pair escape.
        let e = s.value.find('😀').unwrap();
        let sp = s.source_span(Span::new(e, e + 4));
        assert_eq!(
            &r#""a\nb\u00e9c\ud83d\ude00d""#[sp.range()],
            r"\ud83d\ude00"
        );
    }

    #[test]
    fn plain_strings_map_linearly() {
        let s = lit(r#""$x > 1""#);
        assert_eq!(s.source_span(Span::new(0, 2)), Span::new(1, 3));
    }

    #[test]
    fn rejects_raw_control_and_bad_escapes() {
        assert!(Str::from_source("\"a\u{1}\"", Span::new(0, 4)).is_err());
        assert!(Str::from_source(r#""\q""#, Span::new(0, 4)).is_err());
        assert!(Str::from_source(r#""\ud800""#, Span::new(0, 8)).is_err());
    }

    #[test]
    fn opaque_strings_map_to_the_literal_bounds() {
        // `"\u44e9ץo<NUL>"`: the raw NUL is rejected; the decoded text is kept but its offsets
        // say nothing about the source, so they map to the content's start or end only.
        let src = "\"\\u44e9\u{5e5}o\u{0}\"";
        assert!(Str::from_source(src, Span::new(0, src.len())).is_err());
        let s = Str::opaque("\u{44e9}\u{5e5}o\u{0}".to_owned(), Span::new(0, src.len()));
        for d in 0..=s.value.len() {
            let o = s.source_offset(d, false);
            assert!(o == 1 || o == src.len() - 1, "{d} -> {o}");
            assert!(src.is_char_boundary(o));
        }
        assert_eq!(s.source_span(Span::new(6, 7)), Span::new(1, src.len() - 1));
    }
}
