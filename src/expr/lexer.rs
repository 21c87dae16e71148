//! Lexing: every character of a condition becomes a token or a diagnostic at its exact bytes.
//!
//! The raw logos token set includes the mistakes people make (`===`, `!`, `&&`, `AND`, `2kg`,
//! `$my-var`, a lone `$`), so each gets a precise diagnostic with help. [`lex`] then hands the
//! parser a *repaired* stream (`===` becomes `==`, `AND` becomes `and`, a broken literal becomes
//! [`Tok::Invalid`], unbalanced parentheses are balanced) so one pass reports every error
//! without knock-on errors. It also enforces the length, nesting and operator limits before
//! anything recursive runs.

use super::Limits;
use crate::diagnostics::{Code, Diagnostic};
use crate::source::Span;
use logos::Logos;
use std::fmt;

/// Raw tokens, including the mistakes that get their own diagnostics.
#[derive(Logos, Debug, Clone, Copy, PartialEq)]
#[logos(skip r"[ \t\r\n]+")]
enum Raw<'s> {
    #[regex(r"\$\w+(\.\w+)*")]
    Var(&'s str),
    #[regex(r"\$\w+(\.\w+)*-\w+([.-]\w+)*")]
    HyphenVar(&'s str),
    #[token("$")]
    Dollar,
    #[regex(r#"'([^'\\]|\\(?s:.))*'"#)]
    #[regex(r#""([^"\\]|\\(?s:.))*""#)]
    Str(&'s str),
    #[regex(r#"'([^'\\]|\\(?s:.))*\\?"#)]
    #[regex(r#""([^"\\]|\\(?s:.))*\\?"#)]
    UnterminatedStr(&'s str),
    #[regex(r"-?[0-9]+", priority = 10)]
    Int(&'s str),
    #[regex(r"-?[0-9]+\.[0-9]+", priority = 10)]
    Float(&'s str),
    #[regex(r"-?[0-9][\w.]*", priority = 2)]
    #[regex(r"-?\.[0-9][\w.]*")]
    BadNumber(&'s str),
    #[token("-")]
    Minus,
    #[regex(r"-[ \t\r\n]+[0-9][\w.]*")]
    SpacedNumber(&'s str),
    #[token("==")]
    Eq,
    #[token("!=")]
    Ne,
    #[token("<")]
    Lt,
    #[token("<=")]
    Le,
    #[token(">")]
    Gt,
    #[token(">=")]
    Ge,
    #[token("===")]
    TripleEq,
    #[token("!==")]
    TripleNe,
    #[token("=")]
    SingleEq,
    #[token("<>")]
    Diamond,
    #[token("!")]
    Bang,
    #[token("&&")]
    AmpAmp,
    #[token("||")]
    PipePipe,
    #[token("(")]
    LParen,
    #[token(")")]
    RParen,
    #[token(",")]
    Comma,
    #[token("and")]
    And,
    #[token("or")]
    Or,
    #[token("not")]
    Not,
    #[token("in")]
    In,
    #[token("contains")]
    Contains,
    #[token("True")]
    #[token("true")]
    True,
    #[token("False")]
    #[token("false")]
    False,
    #[token("None")]
    #[token("null")]
    None,
    #[regex(r"[\p{L}_]\w*", priority = 1)]
    Ident(&'s str),
}

/// Tokens as the parser sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tok<'s> {
    /// A `$path` without the `$`.
    Var(&'s str),
    /// A string literal including its quotes, escapes not yet decoded (they were checked).
    Str(&'s str),
    /// A checked integer literal.
    Int(&'s str),
    /// A checked decimal literal.
    Float(&'s str),
    True,
    False,
    None,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Contains,
    Not,
    And,
    Or,
    LParen,
    RParen,
    Comma,
    /// A bare word (not a keyword). Only valid before `(` — where it is a call error.
    Ident(&'s str),
    /// An operand whose error was already reported (bad number, broken string, lone `$`).
    Invalid,
}

impl fmt::Display for Tok<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Tok::Var(v) => return write!(f, "${v}"),
            Tok::Str(s) | Tok::Int(s) | Tok::Float(s) | Tok::Ident(s) => return f.write_str(s),
            Tok::True => "True",
            Tok::False => "False",
            Tok::None => "None",
            Tok::Eq => "==",
            Tok::Ne => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::In => "in",
            Tok::Contains => "contains",
            Tok::Not => "not",
            Tok::And => "and",
            Tok::Or => "or",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::Comma => ",",
            Tok::Invalid => "<invalid>",
        };
        f.write_str(s)
    }
}

impl Tok<'_> {
    fn is_operator(self) -> bool {
        matches!(
            self,
            Tok::Eq
                | Tok::Ne
                | Tok::Lt
                | Tok::Le
                | Tok::Gt
                | Tok::Ge
                | Tok::In
                | Tok::Contains
                | Tok::Not
                | Tok::And
                | Tok::Or
        )
    }
}

/// The result of lexing: the repaired token stream and every lexical diagnostic.
#[derive(Debug, Clone, Default)]
pub struct Lexed<'s> {
    pub tokens: Vec<(Tok<'s>, Span)>,
    pub diagnostics: Vec<Diagnostic>,
    /// A limit was exceeded: the tokens are incomplete and must not be parsed.
    pub limit_exceeded: bool,
}

const KEYWORDS: &[(&str, Tok<'static>)] = &[
    ("and", Tok::And),
    ("or", Tok::Or),
    ("not", Tok::Not),
    ("in", Tok::In),
    ("contains", Tok::Contains),
    ("true", Tok::True),
    ("false", Tok::False),
    ("none", Tok::None),
    ("null", Tok::None),
];

/// Lex a condition. Never panics; every problem is a diagnostic.
pub fn lex<'s>(src: &'s str, limits: &Limits) -> Lexed<'s> {
    let mut out = Lexed::default();
    if src.len() > limits.max_len {
        let mut start = limits.max_len.min(src.len());
        while !src.is_char_boundary(start) {
            start -= 1;
        }
        out.diagnostics.push(
            Diagnostic::new(
                Code::TooLong,
                Span::new(start, src.len()),
                format!(
                    "condition is {} bytes long; the limit is {}",
                    src.len(),
                    limits.max_len
                ),
            )
            .with_label("past the limit")
            .with_help("split the decision into several condition steps"),
        );
        out.limit_exceeded = true;
        return out;
    }

    // About one token per four bytes in typical conditions; sizing up front avoids regrowth.
    out.tokens.reserve(src.len() / 4 + 2);
    let mut lexer = Raw::lexer(src);
    let mut open_parens: Vec<Span> = Vec::new();
    let mut not_run = 0usize;
    let mut operators = 0usize;
    let mut last_unknown = false;
    while let Some(raw) = lexer.next() {
        let span = Span::from(lexer.span());
        let tok = match raw {
            Ok(raw) => {
                last_unknown = false;
                repair(raw, span, &mut out.diagnostics)
            }
            Err(()) => {
                match out.diagnostics.last_mut() {
                    // Extend a run of adjacent unknown characters into one error.
                    Some(prev) if last_unknown && prev.span.end == span.start => {
                        prev.span.end = span.end;
                        let run = src.get(prev.span.range()).unwrap_or("?");
                        prev.message = format!("unexpected characters `{}`", run.escape_debug());
                    }
                    _ => out
                        .diagnostics
                        .push(unexpected_char(src.get(span.range()).unwrap_or("?"), span)),
                }
                last_unknown = true;
                continue;
            }
        };
        let Some(tok) = tok else { continue };

        // Balance parentheses here so the parser never sees an unmatched one.
        match tok {
            Tok::LParen => open_parens.push(span),
            Tok::RParen if open_parens.pop().is_none() => {
                out.diagnostics.push(
                    Diagnostic::new(Code::UnbalancedParen, span, "unmatched `)`")
                        .with_label("no `(` opens this")
                        .with_help("remove it, or add the `(` it closes"),
                );
                continue;
            }
            _ => {}
        }

        // Nesting depth: open parentheses plus a run of stacked `not`s.
        match tok {
            Tok::Not => not_run += 1,
            Tok::LParen => {}
            _ => not_run = 0,
        }
        let depth = open_parens.len() + not_run;
        if depth > limits.max_depth {
            out.diagnostics.push(
                Diagnostic::new(
                    Code::TooDeep,
                    span,
                    format!("nesting is deeper than the limit of {}", limits.max_depth),
                )
                .with_label(format!("depth {depth} here"))
                .with_help("flatten the condition or split it into several steps"),
            );
            out.limit_exceeded = true;
            return out;
        }
        if tok.is_operator() {
            operators += 1;
            if operators > limits.max_operators {
                out.diagnostics.push(
                    Diagnostic::new(
                        Code::TooManyOperators,
                        span,
                        format!(
                            "condition uses more than {} operators",
                            limits.max_operators
                        ),
                    )
                    .with_label("one operator too many")
                    .with_help("split the decision into several condition steps"),
                );
                out.limit_exceeded = true;
                return out;
            }
        }
        out.tokens.push((tok, span));
    }

    for open in open_parens.into_iter().rev() {
        out.diagnostics.push(
            Diagnostic::new(Code::UnbalancedParen, open, "unclosed `(`")
                .with_label("this `(` is never closed")
                .with_help("add the missing `)`"),
        );
        out.tokens.push((Tok::RParen, Span::point(src.len())));
    }
    out
}

fn unexpected_char(ch: &str, span: Span) -> Diagnostic {
    let d = Diagnostic::new(
        Code::UnexpectedChar,
        span,
        format!("unexpected character `{}`", ch.escape_debug()),
    )
    .with_label("not part of the condition language");
    match ch {
        "." => d.with_help("paths are written `$step.output.field`; decimals as `0.5`"),
        "[" | "]" => d.with_help("there is no indexing: write `$data.key` or `$list.0`"),
        "{" | "}" => d.with_help("there are no object literals; compare fields one by one"),
        "+" | "*" | "/" | "%" => d.with_help("there is no arithmetic in conditions; compute the value in a step"),
        _ => d.with_note(
            "conditions compare values with == != < <= > >= in contains and combine them with and, or, not",
        ),
    }
}

/// Turn a raw token into a parser token, reporting the mistakes.
fn repair<'s>(raw: Raw<'s>, span: Span, diags: &mut Vec<Diagnostic>) -> Option<Tok<'s>> {
    let tok = match raw {
        Raw::Var(s) => Tok::Var(s.get(1..).unwrap_or("")),
        Raw::HyphenVar(s) => {
            let dash = s.find('-').unwrap_or(s.len());
            diags.push(
                Diagnostic::new(
                    Code::UnexpectedChar,
                    Span::new(span.start + dash, span.start + dash + 1),
                    format!("names cannot contain `-`: `{s}`"),
                )
                .with_label("not allowed in a name")
                .with_help(format!(
                    "names are letters, digits and `_`: name the step or key `{}`",
                    s.replace('-', "_")
                ))
                .with_note("a context key that contains `-` cannot be referenced; pass it under another name"),
            );
            Tok::Invalid
        }
        Raw::Dollar => {
            diags.push(
                Diagnostic::new(Code::UnexpectedChar, span, "`$` without a name")
                    .with_label("expected a name right after `$`")
                    .with_help("write `$name` or `$step.output.field`"),
            );
            Tok::Invalid
        }
        Raw::Str(s) => {
            if check_escapes(s, span.start, diags) {
                Tok::Str(s)
            } else {
                Tok::Invalid
            }
        }
        Raw::UnterminatedStr(s) => {
            let quote = s.chars().next().unwrap_or('\'');
            diags.push(
                Diagnostic::new(Code::UnterminatedString, span, "unterminated string")
                    .with_label(format!("this string has no closing {quote}"))
                    .with_help(format!("add {quote} where the string ends")),
            );
            Tok::Invalid
        }
        Raw::Int(s) => {
            if s.parse::<i64>().is_ok() {
                Tok::Int(s)
            } else {
                diags.push(
                    Diagnostic::new(
                        Code::NumberOutOfRange,
                        span,
                        "integer does not fit in 64 bits",
                    )
                    .with_label("out of range")
                    .with_note("integers range from -9223372036854775808 to 9223372036854775807"),
                );
                Tok::Invalid
            }
        }
        Raw::Float(s) => {
            if s.parse::<f64>().is_ok_and(f64::is_finite) {
                Tok::Float(s)
            } else {
                diags.push(
                    Diagnostic::new(Code::NumberOutOfRange, span, "decimal is not finite")
                        .with_label("too large"),
                );
                Tok::Invalid
            }
        }
        Raw::BadNumber(s) => {
            diags.push(bad_number(s, span));
            Tok::Invalid
        }
        Raw::Minus => {
            diags.push(
                Diagnostic::new(Code::MalformedNumber, span, "a lone `-`")
                    .with_label("a minus sign must be written directly before the digits")
                    .with_help("negative numbers are written `-5`; there is no arithmetic or negation of values"),
            );
            Tok::Invalid
        }
        Raw::SpacedNumber(s) => {
            let digits: String = s.chars().filter(|c| !c.is_whitespace()).collect();
            diags.push(
                Diagnostic::new(
                    Code::MalformedNumber,
                    span,
                    "space between `-` and the digits",
                )
                .with_label("a minus sign must be written directly before the digits")
                .with_help(format!("write `{digits}`")),
            );
            Tok::Invalid
        }
        Raw::Eq => Tok::Eq,
        Raw::Ne => Tok::Ne,
        Raw::Lt => Tok::Lt,
        Raw::Le => Tok::Le,
        Raw::Gt => Tok::Gt,
        Raw::Ge => Tok::Ge,
        Raw::TripleEq | Raw::SingleEq => {
            let what = if matches!(raw, Raw::TripleEq) {
                "==="
            } else {
                "="
            };
            diags.push(
                Diagnostic::new(
                    Code::UnexpectedChar,
                    span,
                    format!("`{what}` is not an operator"),
                )
                .with_label("equality is `==`")
                .with_help("write `==`"),
            );
            Tok::Eq
        }
        Raw::TripleNe | Raw::Diamond => {
            let what = if matches!(raw, Raw::TripleNe) {
                "!=="
            } else {
                "<>"
            };
            diags.push(
                Diagnostic::new(
                    Code::UnexpectedChar,
                    span,
                    format!("`{what}` is not an operator"),
                )
                .with_label("inequality is `!=`")
                .with_help("write `!=`"),
            );
            Tok::Ne
        }
        Raw::Bang => {
            diags.push(
                Diagnostic::new(Code::UnexpectedChar, span, "`!` is not an operator")
                    .with_label("negation is `not`")
                    .with_help("write `not $x`"),
            );
            Tok::Not
        }
        Raw::AmpAmp => {
            diags.push(
                Diagnostic::new(Code::UnexpectedChar, span, "`&&` is not an operator")
                    .with_label("conjunction is `and`")
                    .with_help("write `and`"),
            );
            Tok::And
        }
        Raw::PipePipe => {
            diags.push(
                Diagnostic::new(Code::UnexpectedChar, span, "`||` is not an operator")
                    .with_label("disjunction is `or`")
                    .with_help("write `or`"),
            );
            Tok::Or
        }
        Raw::LParen => Tok::LParen,
        Raw::RParen => Tok::RParen,
        Raw::Comma => Tok::Comma,
        Raw::And => Tok::And,
        Raw::Or => Tok::Or,
        Raw::Not => Tok::Not,
        Raw::In => Tok::In,
        Raw::Contains => Tok::Contains,
        Raw::True => Tok::True,
        Raw::False => Tok::False,
        Raw::None => Tok::None,
        Raw::Ident(word) => {
            let lower = word.to_lowercase();
            if let Some((kw, tok)) = KEYWORDS.iter().find(|(k, _)| *k == lower) {
                let right = match *tok {
                    Tok::True => "True",
                    Tok::False => "False",
                    Tok::None => "None",
                    _ => kw,
                };
                diags.push(
                    Diagnostic::new(Code::BareWord, span, format!("unknown word `{word}`"))
                        .with_label(format!("did you mean `{right}`?"))
                        .with_help(format!("keywords are lower case: write `{right}`")),
                );
                *tok
            } else {
                Tok::Ident(word)
            }
        }
    };
    Some(tok)
}

fn bad_number(s: &str, span: Span) -> Diagnostic {
    let d = Diagnostic::new(
        Code::MalformedNumber,
        span,
        format!("malformed number `{s}`"),
    );
    let sign = if s.starts_with('-') { "-" } else { "" };
    let digits = s.trim_start_matches('-');
    let points = digits.matches('.').count();
    let is_exponent = {
        let (mantissa, exp) = digits.split_once(['e', 'E']).unwrap_or((digits, ""));
        !exp.is_empty()
            && mantissa
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            && exp.bytes().all(|b| b.is_ascii_digit())
    };
    if digits.starts_with('.') {
        d.with_label("a decimal needs a digit before the point")
            .with_help(format!("write `{sign}0{digits}`"))
    } else if is_exponent {
        let help = match s.parse::<f64>() {
            Ok(v) if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e18 => format!("write `{v}`"),
            _ => "write the number out in full".to_owned(),
        };
        d.with_label("there is no exponent syntax").with_help(help)
    } else if digits.starts_with("0x")
        || digits.starts_with("0X")
        || digits.starts_with("0b")
        || digits.starts_with("0o")
    {
        d.with_label("only decimal numbers are supported")
            .with_help("write the number in decimal")
    } else if digits.contains('_') {
        d.with_label("digits cannot be grouped with `_`")
            .with_help(format!("write `{}`", s.replace('_', "")))
    } else if points == 1 && digits.ends_with('.') {
        d.with_label("a decimal needs a digit after the point")
            .with_help(format!("write `{s}0`"))
    } else if points > 1 {
        d.with_label("a number has at most one decimal point")
            .with_help(format!("if this is a version or code, quote it: `'{s}'`"))
    } else if digits.chars().any(char::is_alphabetic) {
        d.with_label("a number cannot be followed by letters")
            .with_help("units and suffixes are not part of numbers; compare the number alone")
    } else {
        d.with_label("numbers are `42`, `-7` or `0.5`")
    }
}

/// Check the escapes of a string literal (with quotes). Returns false if any is invalid.
fn check_escapes(raw: &str, offset: usize, diags: &mut Vec<Diagnostic>) -> bool {
    let mut ok = true;
    let mut chars = raw.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '\\' {
            continue;
        }
        let Some((_, e)) = chars.next() else { break };
        match e {
            '\\' | '\'' | '"' | 'n' | 'r' | 't' => {}
            'u' => {
                let start = i;
                let mut end = i + 2;
                let mut valid = false;
                if chars.peek().map(|(_, c)| *c) == Some('{') {
                    chars.next();
                    end += 1;
                    let mut hex = String::new();
                    while let Some(&(j, h)) = chars.peek() {
                        if h == '}' {
                            chars.next();
                            end = j + 1;
                            valid = !hex.is_empty()
                                && hex.len() <= 6
                                && u32::from_str_radix(&hex, 16)
                                    .ok()
                                    .and_then(char::from_u32)
                                    .is_some();
                            break;
                        }
                        if !h.is_ascii_hexdigit() || hex.len() > 6 {
                            end = j;
                            break;
                        }
                        hex.push(h);
                        chars.next();
                        end = j + h.len_utf8();
                    }
                }
                if !valid {
                    ok = false;
                    let rest = raw.get(i + 2..).unwrap_or("");
                    let hex4: String = rest.chars().take(4).collect();
                    let help = if hex4.len() == 4 && hex4.chars().all(|c| c.is_ascii_hexdigit()) {
                        format!("write `\\u{{{hex4}}}`")
                    } else {
                        "escapes are `\\u{XXXX}` with 1 to 6 hex digits, at most 10FFFF".to_owned()
                    };
                    diags.push(
                        Diagnostic::new(
                            Code::InvalidEscape,
                            Span::new(offset + start, offset + end),
                            "invalid unicode escape",
                        )
                        .with_label(
                            "expected `\\u{XXXX}` with 1 to 6 hex digits of a valid code point",
                        )
                        .with_help(help),
                    );
                }
            }
            other => {
                ok = false;
                diags.push(
                    Diagnostic::new(
                        Code::InvalidEscape,
                        Span::new(offset + i, offset + i + 1 + other.len_utf8()),
                        format!("invalid escape `\\{}`", other.escape_debug()),
                    )
                    .with_label("unknown escape")
                    .with_help("supported escapes: \\\\ \\' \\\" \\n \\r \\t \\u{XXXX}; write `\\\\` for a backslash"),
                );
            }
        }
    }
    ok
}

/// Decode a checked string literal (with quotes) into its value.
pub fn unescape(raw: &str) -> String {
    let inner = raw.get(1..raw.len().saturating_sub(1)).unwrap_or_default();
    if !inner.contains('\\') {
        return inner.to_owned();
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('u') => {
                let rest: String = chars.by_ref().skip(1).take_while(|c| *c != '}').collect();
                if let Some(ch) = u32::from_str_radix(&rest, 16).ok().and_then(char::from_u32) {
                    out.push(ch);
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn toks(src: &str) -> Vec<Tok<'_>> {
        lex(src, &Limits::default())
            .tokens
            .into_iter()
            .map(|(t, _)| t)
            .collect()
    }

    fn codes(src: &str) -> Vec<(Code, usize, usize)> {
        lex(src, &Limits::default())
            .diagnostics
            .into_iter()
            .map(|d| (d.code, d.span.start, d.span.end))
            .collect()
    }

    #[test]
    fn basic_tokens() {
        assert_eq!(
            toks("$a.b == 'x' and not $c in \"y\" or 1 <= -2.5"),
            vec![
                Tok::Var("a.b"),
                Tok::Eq,
                Tok::Str("'x'"),
                Tok::And,
                Tok::Not,
                Tok::Var("c"),
                Tok::In,
                Tok::Str("\"y\""),
                Tok::Or,
                Tok::Int("1"),
                Tok::Le,
                Tok::Float("-2.5"),
            ]
        );
        assert_eq!(toks("$città"), vec![Tok::Var("città")]);
        assert_eq!(
            toks("true None null"),
            vec![Tok::True, Tok::None, Tok::None]
        );
    }

    #[test]
    fn mistakes_are_exact() {
        assert_eq!(codes("$a === 1"), vec![(Code::UnexpectedChar, 3, 6)]);
        assert_eq!(codes("!$x"), vec![(Code::UnexpectedChar, 0, 1)]);
        assert_eq!(codes("$n == .5"), vec![(Code::MalformedNumber, 6, 8)]);
        assert_eq!(codes("$n < 1e3"), vec![(Code::MalformedNumber, 5, 8)]);
        assert_eq!(codes("$w == 2kg"), vec![(Code::MalformedNumber, 6, 9)]);
        assert_eq!(codes("$my-var == 'x'"), vec![(Code::UnexpectedChar, 3, 4)]);
        assert_eq!(
            codes("$città-vecchia.output"),
            vec![(Code::UnexpectedChar, 7, 8)]
        );
        assert_eq!(codes("@#% $a"), vec![(Code::UnexpectedChar, 0, 3)]);
        assert_eq!(codes("$a AND $b"), vec![(Code::BareWord, 3, 6)]);
        assert_eq!(codes("'abc"), vec![(Code::UnterminatedString, 0, 4)]);
        assert_eq!(codes(r"'a\qb'"), vec![(Code::InvalidEscape, 2, 4)]);
        assert_eq!(codes("'a€' @"), vec![(Code::UnexpectedChar, 7, 8)]);
        assert_eq!(codes("€"), vec![(Code::UnexpectedChar, 0, 3)]);
        assert_eq!(codes("$n > - 5"), vec![(Code::MalformedNumber, 5, 8)]);
        assert_eq!(codes("$n > -$m"), vec![(Code::MalformedNumber, 5, 6)]);
        assert_eq!(
            codes("99999999999999999999"),
            vec![(Code::NumberOutOfRange, 0, 20)]
        );
        assert_eq!(codes("($a"), vec![(Code::UnbalancedParen, 0, 1)]);
        assert_eq!(codes("$a)"), vec![(Code::UnbalancedParen, 2, 3)]);
    }

    #[test]
    fn escapes() {
        assert_eq!(unescape(r"'a\'b\\c\n\u{e9}'"), "a'b\\c\né");
        assert!(
            codes(r"'\u{110000}'")
                .iter()
                .any(|c| c.0 == Code::InvalidEscape)
        );
        assert!(codes(r"'\u{}'").iter().any(|c| c.0 == Code::InvalidEscape));
        assert!(codes(r"'\u12'").iter().any(|c| c.0 == Code::InvalidEscape));
        assert!(codes(r"'\u{1F600}'").is_empty());
    }

    #[test]
    fn limits() {
        let l = Limits {
            max_len: 20,
            max_depth: 3,
            max_operators: 2,
        };
        let d = lex("$aaaaaaaaaaaaaaaaaaaaaaaa", &l);
        assert!(d.limit_exceeded);
        assert_eq!(d.diagnostics[0].code, Code::TooLong);
        let d = lex("((((", &l);
        assert_eq!(d.diagnostics[0].code, Code::TooDeep);
        let d = lex(
            "not not not not $a",
            &Limits {
                max_depth: 3,
                ..Limits::default()
            },
        );
        assert_eq!(d.diagnostics[0].code, Code::TooDeep);
        let d = lex("$a and $b or $c and", &l);
        assert_eq!(d.diagnostics[0].code, Code::TooManyOperators);
    }
}
