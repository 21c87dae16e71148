//! Strict spanned JSON.
//!
//! [`parse`] reads RFC 8259 JSON (jsonc-parser with every lenient option off) into a tree of
//! [`Node`]s that each know their byte range. Duplicate keys stay visible in the tree and are
//! reported. A [`Str`] maps offsets in its decoded text back to bytes of the file, so a
//! diagnostic inside a condition string underlines the right bytes even across escapes.
//!
//! The tree borrows the document: keys, strings without escapes and numbers are slices of the
//! text (`'s`); only decoded escapes own their text. [`Node::into_static`] turns a subtree
//! into one that outlives the text (the `args` a program keeps).

mod string;

pub use string::Str;

use crate::diagnostics::{Code, Diagnostic};
use crate::source::Span;
use jsonc_parser::ast;
use jsonc_parser::{CollectOptions, CommentCollectionStrategy, ParseOptions};
use std::borrow::Cow;
use std::collections::HashMap;

/// Input limits of one JSON document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of the whole document.
    pub max_bytes: usize,
    /// Nesting of arrays and objects.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 8 * 1024 * 1024,
            max_depth: 128,
        }
    }
}

/// A JSON value with its byte range in the document (whose text it borrows, `'s`).
#[derive(Debug, Clone, PartialEq)]
pub struct Node<'s> {
    pub span: Span,
    pub kind: Kind<'s>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind<'s> {
    Null,
    Bool(bool),
    /// The number's source text (already validated as a JSON number).
    Number(Cow<'s, str>),
    String(Str<'s>),
    Array(Vec<Node<'s>>),
    /// Members in document order, duplicates included.
    Object(Vec<Member<'s>>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Member<'s> {
    pub key: Str<'s>,
    pub value: Node<'s>,
}

impl<'s> Node<'s> {
    /// The JSON type name used in diagnostics.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "boolean",
            Kind::Number(n) if is_integer_text(n) => "integer",
            Kind::Number(_) => "number",
            Kind::String(_) => "string",
            Kind::Array(_) => "array",
            Kind::Object(_) => "object",
        }
    }

    pub fn as_str(&self) -> Option<&Str<'s>> {
        match &self.kind {
            Kind::String(s) => Some(s),
            _ => None,
        }
    }

    /// The first member with this key.
    pub fn get(&self, key: &str) -> Option<&Node<'s>> {
        match &self.kind {
            Kind::Object(ms) => ms.iter().find(|m| m.key.value == key).map(|m| &m.value),
            _ => None,
        }
    }

    /// The value as plain JSON (duplicate keys: the first wins, as everywhere in nanovm).
    pub fn to_value(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Number(n) => number_value(n),
            Kind::String(s) => Value::String(s.as_str().to_owned()),
            Kind::Array(items) => Value::Array(items.iter().map(Node::to_value).collect()),
            Kind::Object(ms) => {
                let mut map = serde_json::Map::with_capacity(ms.len());
                for m in ms {
                    if !map.contains_key(m.key.as_str()) {
                        map.insert(m.key.as_str().to_owned(), m.value.to_value());
                    }
                }
                Value::Object(map)
            }
        }
    }

    /// The subtree, owning all its text (its vectors are reused).
    pub fn into_static(self) -> Node<'static> {
        let kind = match self.kind {
            Kind::Null => Kind::Null,
            Kind::Bool(b) => Kind::Bool(b),
            Kind::Number(n) => Kind::Number(Cow::Owned(n.into_owned())),
            Kind::String(s) => Kind::String(s.into_static()),
            Kind::Array(items) => Kind::Array(items.into_iter().map(Node::into_static).collect()),
            Kind::Object(ms) => Kind::Object(
                ms.into_iter()
                    .map(|m| Member {
                        key: m.key.into_static(),
                        value: m.value.into_static(),
                    })
                    .collect(),
            ),
        };
        Node {
            span: self.span,
            kind,
        }
    }
}

/// "a string", "an object", …: a decoded value's JSON type, for messages.
pub fn describe(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// NV0004: `what` (the document, a file) is `size` bytes, over `limit`. The one wording for
/// every layer that enforces the size limit.
pub fn too_large(what: &str, size: u64, limit: usize) -> Diagnostic {
    Diagnostic::new(
        Code::FileTooLarge,
        Span::point(0),
        format!("{what} is {size} bytes; the limit is {limit} bytes"),
    )
    .with_label("refused before parsing")
    .with_help("programs are small; a file this large is probably not a program")
}

/// Append `/key` to a JSON pointer, escaping `~` and `/` (RFC 6901).
pub fn push_pointer_segment(ptr: &mut String, key: &str) {
    ptr.push('/');
    if !key.bytes().any(|b| b == b'~' || b == b'/') {
        ptr.push_str(key);
        return;
    }
    for c in key.chars() {
        match c {
            '~' => ptr.push_str("~0"),
            '/' => ptr.push_str("~1"),
            c => ptr.push(c),
        }
    }
}

/// Whether a JSON number's text is an integer (no fraction, no exponent).
pub fn is_integer_text(n: &str) -> bool {
    !n.contains(['.', 'e', 'E'])
}

fn number_value(n: &str) -> serde_json::Value {
    if is_integer_text(n) {
        if let Ok(i) = n.parse::<i64>() {
            return i.into();
        }
        if let Ok(u) = n.parse::<u64>() {
            return u.into();
        }
    }
    n.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// A parsed document: the tree (absent when the text is not JSON) and every diagnostic.
#[derive(Debug, Clone)]
pub struct Parsed<'s> {
    pub root: Option<Node<'s>>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Parse strict JSON. Never panics; every problem is a diagnostic with a position.
pub fn parse<'s>(text: &'s str, limits: &Limits) -> Parsed<'s> {
    let fail = |d: Diagnostic| Parsed {
        root: None,
        diagnostics: vec![d],
    };
    if text.len() > limits.max_bytes {
        return fail(too_large(
            "the document",
            text.len() as u64,
            limits.max_bytes,
        ));
    }
    if let Some((root, diagnostics)) = Builder::parse(text, limits.max_depth.min(FAST_MAX_DEPTH)) {
        return Parsed {
            root: Some(root),
            diagnostics,
        };
    }
    general(text, limits)
}

/// The general path of [`parse`], for what the fast path leaves: too deep, not strict JSON,
/// strings with raw control characters or bad escapes, or nested beyond the fast path. The
/// depth scan, then jsonc-parser's own parser finds the error, with its position and kind.
fn general<'s>(text: &'s str, limits: &Limits) -> Parsed<'s> {
    let fail = |d: Diagnostic| Parsed {
        root: None,
        diagnostics: vec![d],
    };
    if let Some(at) = too_deep(text, limits.max_depth) {
        return fail(
            Diagnostic::new(
                Code::JsonTooDeep,
                Span::new(at, at + 1),
                format!("JSON nesting is deeper than {} levels", limits.max_depth),
            )
            .with_label("this bracket opens one level too many"),
        );
    }
    let collect = CollectOptions {
        comments: CommentCollectionStrategy::Off,
        tokens: false,
    };
    let value = match jsonc_parser::parse_to_ast(text, &collect, &STRICT) {
        Ok(r) => r.value,
        Err(e) => {
            let r = e.range();
            let span = if r.start == r.end && r.start >= text.len() && !text.is_empty() {
                Span::point(text.len())
            } else {
                Span::new(r.start, r.end.max(r.start))
            };
            return fail(
                Diagnostic::new(Code::JsonSyntax, span, format!("invalid JSON: {}", e.kind()))
                    .with_label(syntax_label(e.kind()))
                    .with_help("the program must be strict JSON (RFC 8259): no comments, no trailing commas, double-quoted strings"),
            );
        }
    };
    let Some(value) = value else {
        return fail(
            Diagnostic::new(
                Code::JsonSyntax,
                Span::point(0),
                "invalid JSON: the document is empty",
            )
            .with_label("expected a JSON object")
            .with_help("a program is a JSON object such as {\"steps\": [...]}"),
        );
    };
    let mut conv = Converter {
        text,
        diagnostics: Vec::new(),
    };
    let root = conv.node(&value);
    Parsed {
        root: Some(root),
        diagnostics: conv.diagnostics,
    }
}

fn syntax_label(kind: &jsonc_parser::errors::ParseErrorKind) -> &'static str {
    use jsonc_parser::errors::ParseErrorKind as K;
    match kind {
        K::CommentsNotAllowed => "comments are not JSON",
        K::TrailingCommasNotAllowed => "remove this comma",
        K::ExpectedComma => "a comma is missing here",
        K::SingleQuotedStringsNotAllowed => "use double quotes",
        K::ExpectedStringObjectProperty => "keys must be double-quoted strings",
        K::MultipleRootJsonValues => "text after the end of the document",
        K::UnterminatedObject | K::UnterminatedArray => "not closed",
        _ => "here",
    }
}

/// The byte offset of the first bracket that opens nesting level `max + 1`, if any.
/// A linear scan that knows strings, run before the (recursive) parser.
fn too_deep(text: &str, max: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, b) in text.bytes().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Some(i);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// Containers the fast path nests; deeper documents (only with raised limits) take the
/// general path, whose parser has its own depth limit.
const FAST_MAX_DEPTH: usize = 200;

/// The fast path of [`parse`]: one pass of its own lexer that builds the tree directly. It
/// accepts RFC 8259 JSON within the depth limit, with ASCII whitespace only and strings whose
/// escapes decode (a subset of what jsonc-parser's strict parser accepts, with the same tree),
/// and gives up (`None`) at the first byte it does not accept, leaving the document to the
/// depth scan and jsonc-parser's parser: every syntax and string diagnostic is the general
/// path's. Its own diagnostics (duplicate keys) come in the same order as the general path's.
struct Builder<'t> {
    text: &'t str,
    bytes: &'t [u8],
    /// The next byte to read.
    pos: usize,
    /// Where the last token starts.
    start: usize,
    diagnostics: Vec<Diagnostic>,
    /// Members and items of the open containers, innermost last.
    members: Vec<Member<'t>>,
    items: Vec<Node<'t>>,
    depth: usize,
    /// Nesting beyond this gives up (the general path reports it).
    max_depth: usize,
}

/// A token of the fast path's lexer.
enum Token<'t> {
    OpenBrace,
    CloseBrace,
    OpenBracket,
    CloseBracket,
    Comma,
    Colon,
    Null,
    Bool(bool),
    Number(&'t str),
    /// A string literal at `span` (quotes included), with escapes or not: the [`Str`] is made
    /// when the tree takes it (a small token is cheaper to move).
    String {
        span: Span,
        escaped: bool,
    },
}

/// Strict RFC 8259 JSON: every leniency of jsonc-parser off.
const STRICT: ParseOptions = ParseOptions {
    allow_comments: false,
    allow_loose_object_property_names: false,
    allow_trailing_commas: false,
    allow_missing_commas: false,
    allow_single_quoted_strings: false,
    allow_hexadecimal_numbers: false,
    allow_unary_plus_numbers: false,
    allow_bare_decimal_point_numbers: false,
    allow_non_finite_numbers: false,
    allow_extended_string_escapes: false,
};

/// Members an object holds before duplicate keys are found with a map instead of a scan.
const DUPLICATE_SCAN_MAX: usize = 16;

impl<'t> Builder<'t> {
    fn parse(text: &'t str, max_depth: usize) -> Option<(Node<'t>, Vec<Diagnostic>)> {
        let mut b = Builder {
            text,
            bytes: text.as_bytes(),
            pos: 0,
            start: 0,
            diagnostics: Vec::new(),
            members: Vec::new(),
            items: Vec::new(),
            depth: 0,
            max_depth,
        };
        let first = b.next()?;
        let root = b.value(first)?;
        b.skip_whitespace();
        (b.pos == b.bytes.len()).then_some((root, b.diagnostics))
    }

    /// RFC 8259 whitespace only (jsonc-parser also skips vertical tab, form feed and Unicode
    /// spaces: those documents take the general path).
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    /// The next token; `None` at the end of the text or at anything the fast path leaves to
    /// the general one.
    fn next(&mut self) -> Option<Token<'t>> {
        self.skip_whitespace();
        self.start = self.pos;
        let b = *self.bytes.get(self.pos)?;
        self.pos += 1;
        Some(match b {
            b'{' => Token::OpenBrace,
            b'}' => Token::CloseBrace,
            b'[' => Token::OpenBracket,
            b']' => Token::CloseBracket,
            b',' => Token::Comma,
            b':' => Token::Colon,
            b'"' => return self.string(),
            b'-' | b'0'..=b'9' => return self.number(),
            // A letter or digit right after a literal (`truex`) is not a token the builder
            // accepts next, so the document goes to the general path.
            b't' => self.word(b"rue", Token::Bool(true))?,
            b'f' => self.word(b"alse", Token::Bool(false))?,
            b'n' => self.word(b"ull", Token::Null)?,
            _ => return None,
        })
    }

    fn word(&mut self, rest: &[u8], token: Token<'t>) -> Option<Token<'t>> {
        let end = self.pos + rest.len();
        (self.bytes.get(self.pos..end)? == rest).then(|| {
            self.pos = end;
            token
        })
    }

    fn digits(&mut self) -> usize {
        let from = self.pos;
        while let Some(b'0'..=b'9') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
        self.pos - from
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`; the first byte is read.
    fn number(&mut self) -> Option<Token<'t>> {
        let first = *self.bytes.get(self.start)?;
        let int_first = if first == b'-' {
            let b = *self.bytes.get(self.pos)?;
            self.pos += 1;
            b
        } else {
            first
        };
        match int_first {
            b'0' => {}
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.bytes.get(self.pos) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        self.text.get(self.start..self.pos).map(Token::Number)
    }

    /// A string literal; the opening quote is read. Raw control characters and escapes that
    /// do not decode go to the general path (which reports them).
    fn string(&mut self) -> Option<Token<'t>> {
        let mut escaped = false;
        let mut at = self.pos;
        loop {
            // To the next quote, backslash or control character.
            at += self
                .bytes
                .get(at..)?
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
            match self.bytes.get(at)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    // The escaped byte: a quote here does not end the string.
                    self.bytes.get(at + 1)?;
                    at += 2;
                }
                _ => return None,
            }
        }
        self.pos = at + 1;
        Some(Token::String {
            span: Span::new(self.start, self.pos),
            escaped,
        })
    }

    /// The string of a [`Token::String`]; `None` when its escapes do not decode.
    fn str_of(&self, span: Span, escaped: bool) -> Option<Str<'t>> {
        if escaped {
            return Str::from_source(self.text, span).ok();
        }
        let raw = self.text.get(span.start + 1..span.end - 1)?;
        Some(Str::plain(raw, span))
    }

    fn token_span(&self) -> Span {
        Span::new(self.start, self.pos)
    }

    fn value(&mut self, token: Token<'t>) -> Option<Node<'t>> {
        let span = self.token_span();
        let kind = match token {
            Token::Null => Kind::Null,
            Token::Bool(b) => Kind::Bool(b),
            Token::Number(n) => Kind::Number(Cow::Borrowed(n)),
            Token::String { span, escaped } => Kind::String(self.str_of(span, escaped)?),
            Token::OpenBracket => return self.array(span.start),
            Token::OpenBrace => return self.object(span.start),
            _ => return None,
        };
        Some(Node { span, kind })
    }

    fn array(&mut self, start: usize) -> Option<Node<'t>> {
        self.depth += 1;
        if self.depth > self.max_depth {
            return None;
        }
        let base = self.items.len();
        let mut token = self.next()?;
        if !matches!(token, Token::CloseBracket) {
            loop {
                let item = self.value(token)?;
                self.items.push(item);
                match self.next()? {
                    Token::Comma => token = self.next()?,
                    Token::CloseBracket => break,
                    _ => return None,
                }
                // A trailing comma: the general path reports it.
                if matches!(token, Token::CloseBracket) {
                    return None;
                }
            }
        }
        self.depth -= 1;
        let items: Vec<Node<'t>> = self.items.drain(base..).collect();
        Some(Node {
            span: Span::new(start, self.pos),
            kind: Kind::Array(items),
        })
    }

    fn object(&mut self, start: usize) -> Option<Node<'t>> {
        self.depth += 1;
        if self.depth > self.max_depth {
            return None;
        }
        let base = self.members.len();
        // Keys seen, once the object is too large to scan: key → its first span.
        let mut seen: Option<HashMap<Cow<'t, str>, Span>> = None;
        let mut token = self.next()?;
        if !matches!(token, Token::CloseBrace) {
            loop {
                let Token::String { span, escaped } = token else {
                    return None;
                };
                let key = self.str_of(span, escaped)?;
                let key_span = key.span;
                let own = self.members.get(base..).unwrap_or_default();
                if seen.is_none() && own.len() >= DUPLICATE_SCAN_MAX {
                    seen = Some(
                        own.iter()
                            .rev()
                            .map(|m| (m.key.value.clone(), m.key.span))
                            .collect(),
                    );
                }
                let first = match &mut seen {
                    Some(map) => match map.get(&key.value) {
                        Some(sp) => Some(*sp),
                        None => {
                            map.insert(key.value.clone(), key_span);
                            None
                        }
                    },
                    None => own
                        .iter()
                        .find(|m| same_key(&m.key.value, &key.value))
                        .map(|m| m.key.span),
                };
                if let Some(first) = first {
                    self.diagnostics.push(duplicate_key(&key, key_span, first));
                }
                if !matches!(self.next()?, Token::Colon) {
                    return None;
                }
                let t = self.next()?;
                let value = self.value(t)?;
                self.members.push(Member { key, value });
                match self.next()? {
                    Token::Comma => token = self.next()?,
                    Token::CloseBrace => break,
                    _ => return None,
                }
            }
        }
        self.depth -= 1;
        let members: Vec<Member<'t>> = self.members.drain(base..).collect();
        Some(Node {
            span: Span::new(start, self.pos),
            kind: Kind::Object(members),
        })
    }
}

/// `a == b`, first by length and first byte (keys of one object rarely share both).
fn same_key(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.as_bytes().first() == b.as_bytes().first() && a == b
}

fn duplicate_key(key: &Str<'_>, key_span: Span, first: Span) -> Diagnostic {
    Diagnostic::new(
        Code::DuplicateKey,
        key_span,
        format!("duplicate key \"{}\"", key.value),
    )
    .with_label("repeated here")
    .with_secondary(first, "first defined here")
    .with_help("JSON readers disagree on which value wins; keep one")
}

struct Converter<'t> {
    text: &'t str,
    diagnostics: Vec<Diagnostic>,
}

impl<'t> Converter<'t> {
    fn span(r: jsonc_parser::common::Range) -> Span {
        Span::new(r.start, r.end)
    }

    fn string(&mut self, r: jsonc_parser::common::Range, fallback: &str) -> Str<'t> {
        match Str::from_source(self.text, Self::span(r)) {
            Ok(s) => s,
            Err(d) => {
                self.diagnostics.push(*d);
                Str::opaque(fallback.to_owned(), Self::span(r))
            }
        }
    }

    fn node(&mut self, v: &ast::Value<'t>) -> Node<'t> {
        use jsonc_parser::common::Ranged;
        let span = Self::span(v.range());
        let kind = match v {
            ast::Value::NullKeyword(_) => Kind::Null,
            ast::Value::BooleanLit(b) => Kind::Bool(b.value),
            ast::Value::NumberLit(n) => Kind::Number(Cow::Borrowed(n.value)),
            ast::Value::StringLit(s) => Kind::String(self.string(s.range, &s.value)),
            ast::Value::Array(a) => Kind::Array(a.elements.iter().map(|e| self.node(e)).collect()),
            ast::Value::Object(o) => {
                let mut seen: HashMap<&str, Span> = HashMap::with_capacity(o.properties.len());
                let mut members = Vec::with_capacity(o.properties.len());
                for p in &o.properties {
                    let (key_range, key_text) = match &p.name {
                        ast::ObjectPropName::String(s) => (s.range, s.value.as_ref()),
                        ast::ObjectPropName::Word(w) => (w.range, w.value),
                    };
                    let key = self.string(key_range, key_text);
                    let key_span = Self::span(key_range);
                    if let Some(first) = seen.get(key_text) {
                        self.diagnostics.push(duplicate_key(&key, key_span, *first));
                    } else {
                        seen.insert(key_text, key_span);
                    }
                    let value = self.node(&p.value);
                    members.push(Member { key, value });
                }
                Kind::Object(members)
            }
        };
        Node { span, kind }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn ok(text: &str) -> Node<'_> {
        let p = parse(text, &Limits::default());
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        p.root.unwrap()
    }

    fn err(text: &str) -> Diagnostic {
        let p = parse(text, &Limits::default());
        p.diagnostics.into_iter().next().unwrap()
    }

    #[test]
    fn spans_and_values() {
        let n = ok(r#"{"a": [1, 2.5, "x"], "b": null}"#);
        let a = n.get("a").unwrap();
        assert_eq!(a.span, Span::new(6, 19));
        assert_eq!(a.type_name(), "array");
        assert_eq!(
            n.to_value(),
            serde_json::json!({"a": [1, 2.5, "x"], "b": null})
        );
    }

    #[test]
    fn strictness() {
        for bad in [
            "{\"a\": 1,}",
            "{'a': 1}",
            "{a: 1}",
            "// c\n{}",
            "{\"a\": +1}",
            "{\"a\": .5}",
            "{\"a\": 0x10}",
            "{\"a\": NaN}",
            "{\"a\": 1 \"b\": 2}",
            "{} {}",
            "",
            "{\"a\": \"\\x41\"}",
        ] {
            assert_eq!(err(bad).code, Code::JsonSyntax, "{bad}");
        }
        assert_eq!(err("{\"a\": \"x\ny\"}").code, Code::JsonSyntax);
    }

    #[test]
    fn malformed_string_maps_to_its_literal() {
        // Fuzz regression (program_check): a raw NUL after a `\u` escape and a two-byte char.
        // The string is reported and kept, but its decoded offsets cannot be mapped, so every
        // span inside it covers the whole literal instead of landing mid-character.
        let text = "{\"c\":\"\\u44e9\u{5e5}o\u{0}\"}";
        let p = parse(text, &Limits::default());
        assert_eq!(p.diagnostics[0].code, Code::JsonSyntax);
        let c = p.root.unwrap();
        let s = c.get("c").unwrap().as_str().unwrap();
        let nul = s.value.find('\u{0}').unwrap();
        let sp = s.source_span(Span::new(nul, nul + 1));
        assert_eq!(sp, Span::new(s.span.start + 1, s.span.end - 1));
        assert!(text.is_char_boundary(sp.start) && text.is_char_boundary(sp.end));
    }

    #[test]
    fn duplicates_are_reported_first_wins() {
        let p = parse(r#"{"a": 1, "a": 2}"#, &Limits::default());
        assert_eq!(p.diagnostics[0].code, Code::DuplicateKey);
        assert_eq!(p.diagnostics[0].span, Span::new(9, 12));
        assert_eq!(p.root.unwrap().to_value(), serde_json::json!({"a": 1}));
    }

    /// The fast path gives up or builds exactly what the general path builds.
    fn same_as_general(text: &str) -> bool {
        let limits = Limits::default();
        let Some((root, diagnostics)) = Builder::parse(text, limits.max_depth) else {
            return false;
        };
        let g = general(text, &limits);
        assert_eq!(g.root.as_ref(), Some(&root), "{text:?}");
        assert_eq!(g.diagnostics, diagnostics, "{text:?}");
        true
    }

    #[test]
    fn fast_path_builds_what_the_general_path_builds() {
        for fast in [
            r#"{"a": [1, -2.5e+3, 0, -0, 1E9, 0.5E-7, "x", true, false, null, {}, []]}"#,
            r#" {"k\"ey": "a\nb\u00e9\ud83d\ude00\/\\\b\f\r\t", "e": ""} "#,
            "[\"\u{e9}\u{1F600}\"]",
            r#"{"a": 1, "a": 2, "b": {"a": 3}}"#,
            "\t[1,\r\n2]\n",
            "0",
            "\"s\"",
        ] {
            assert!(same_as_general(fast), "{fast}");
        }
        let many: Vec<String> = (0..40).map(|i| format!("\"k{}\": {i}", i % 30)).collect();
        assert!(same_as_general(&format!("{{{}}}", many.join(","))));
        // Left to the general path.
        for slow in [
            "{\"a\": 1,}",
            "[1,]",
            "[01]",
            "[1.]",
            "[.5]",
            "[+1]",
            "[-]",
            "[1e]",
            "[0x1]",
            "[truex]",
            "[true1]",
            "[nul]",
            "[NaN]",
            "\u{feff}{}",
            "{}\u{a0}",
            "[1,\u{b}2]",
            "{\"a\": \"x\u{1}\"}",
            r#"{"a": "\q"}"#,
            r#"{"a": "\ud800"}"#,
            r#"{"a": "\udc00"}"#,
            r#"{"a": "\u00"}"#,
            r#"{"a": "\é"}"#,
            "\"unterminated",
            "{\"a\" 1}",
            "{a: 1}",
            "{'a': 1}",
            "[1] 2",
            "// c\n{}",
            "",
        ] {
            assert!(!same_as_general(slow), "{slow:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn fast_path_agrees_on_any_text(
            text in "[\\[\\]{}:, \"\\\\/a-z0-9.eE+\\-\t\n\u{b}\u{a0}\u{1}\u{e9}]{0,24}"
        ) {
            same_as_general(&text);
        }

        #[test]
        fn fast_path_agrees_on_json(v in json_value()) {
            let text = serde_json::to_string(&v).unwrap();
            proptest::prop_assert!(same_as_general(&text), "{}", text);
            let pretty = serde_json::to_string_pretty(&v).unwrap();
            proptest::prop_assert!(same_as_general(&pretty), "{}", pretty);
        }
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "\\PC{0,8}|[\u{0}-\u{1f}\"\\\\/]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec(("[a-c\"\\\\]{0,3}", inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn limits() {
        let deep = "[".repeat(200);
        assert_eq!(err(&deep).code, Code::JsonTooDeep);
        assert_eq!(err(&deep).span, Span::new(128, 129));
        let within = format!("{}{}", "[".repeat(128), "]".repeat(128));
        ok(&within);
        let brackets_in_string = format!("{{\"a\": \"{}\"}}", "[".repeat(500));
        ok(&brackets_in_string);
        let small = Limits {
            max_bytes: 4,
            max_depth: 128,
        };
        assert_eq!(
            parse("{\"a\":1}", &small).diagnostics[0].code,
            Code::FileTooLarge
        );
    }
}
