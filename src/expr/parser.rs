//! Parsing: chumsky over the repaired token stream of [`super::lexer`], with error recovery so
//! one pass reports every syntax error. Constructs the language rejects but people write
//! (calls, bare words, chained comparisons, `and`/`or` mixed without parentheses) are parsed
//! on purpose and reported with their own codes instead of a generic "unexpected token".

use super::ast::{CmpOp, Expr, ExprKind, Lit, LogicOp, Path};
use super::lexer::{Tok, unescape};
use crate::diagnostics::{Code, Diagnostic};
use crate::source::Span;
use chumsky::error::{EmptyErr, LabelError, Rich, RichPattern, RichReason};
use chumsky::extra;
use chumsky::input::{Input as _, ValueInput};
use chumsky::inspector::TruncateState;
use chumsky::prelude::*;

type Extra<Er> = extra::Full<Er, TruncateState<Diagnostic>, ()>;

impl chumsky::span::Span for Span {
    type Context = ();
    type Offset = usize;

    fn new((): (), range: std::ops::Range<usize>) -> Self {
        Span::new(range.start, range.end)
    }

    fn context(&self) -> Self::Context {}

    fn start(&self) -> usize {
        self.start
    }

    fn end(&self) -> usize {
        self.end
    }
}

fn push(state: &mut TruncateState<Diagnostic>, d: Diagnostic) {
    state.push(d);
}

/// Parse a lexed, limit-checked token stream. `src` is the condition text (for help texts).
pub fn parse(src: &str, tokens: &[(Tok<'_>, Span)]) -> (Option<Expr>, Vec<Diagnostic>) {
    let eoi = Span::point(src.len());

    // Fast path: the same grammar with an error type that records nothing. Most conditions
    // are valid, and chumsky's bookkeeping of expected tokens dominates a valid parse.
    let mut state = TruncateState::from(Vec::new());
    let fast =
        parser::<_, EmptyErr>(src).parse_with_state(tokens.split_token_span(eoi), &mut state);
    if !fast.has_errors()
        && state.0.is_empty()
        && let Some(expr) = fast.into_output()
    {
        return (Some(expr), Vec::new());
    }

    // Slow path: rich errors with what was expected, and recovery.
    let mut state = TruncateState::from(Vec::new());
    let (out, errs) = parser::<_, Rich<'_, Tok<'_>, Span>>(src)
        .parse_with_state(tokens.split_token_span(eoi), &mut state)
        .into_output_errors();
    let mut diags: Vec<Diagnostic> = state.0;
    diags.extend(errs.into_iter().map(|e| rich_to_diag(&e)));
    (out, diags)
}

fn parser<'t, 's: 't, 'src: 't, I, Er>(
    src: &'src str,
) -> impl Parser<'t, I, Expr, Extra<Er>> + Clone
where
    I: ValueInput<'t, Token = Tok<'s>, Span = Span>,
    Er: chumsky::error::Error<'t, I> + LabelError<'t, I, &'static str> + 't,
{
    recursive(move |expr| {
        // Everything between a call's parentheses, balanced (the lexer balanced them).
        let tt = recursive(|tt| {
            choice((
                tt.repeated()
                    .delimited_by(just(Tok::LParen), just(Tok::RParen))
                    .ignored(),
                none_of([Tok::LParen, Tok::RParen]).ignored(),
            ))
        });
        let call_args = tt
            .repeated()
            .delimited_by(just(Tok::LParen), just(Tok::RParen))
            .map_with(|(), e| -> Span { e.span() });

        let literal = select! {
            Tok::Int(s) => Lit::Int(s.parse().unwrap_or_default()),
            Tok::Float(s) => Lit::Float(s.parse().unwrap_or_default()),
            Tok::Str(s) => Lit::Str(unescape(s)),
            Tok::True => Lit::Bool(true),
            Tok::False => Lit::Bool(false),
            Tok::None => Lit::Null,
        }
        .map_with(|l, e| Expr::new(ExprKind::Lit(l), e.span()));

        let var = select! { Tok::Var(v) => v }
            .map_with(|v, e| -> (&str, Span) { (v, e.span()) })
            .then(call_args.clone().or_not())
            .map_with(|((v, vspan), call), e| match call {
                None => Expr::new(ExprKind::Var(Path::parse(v)), vspan),
                Some(args) => {
                    let method = v.rsplit_once('.').map(|(_, m)| m);
                    let (primary, value) = match method {
                        // `.lower()`: from the dot before the method to the `)`.
                        Some(m) => {
                            let dot = vspan.end.saturating_sub(m.len() + 1);
                            (Span::new(dot, args.end), Span::new(vspan.start, dot))
                        }
                        None => (args, vspan),
                    };
                    let d = Diagnostic::new(
                        Code::CallSyntax,
                        primary,
                        match method {
                            Some(m) => format!("method call `.{m}()` in a condition"),
                            None => format!("call syntax after `${v}`"),
                        },
                    )
                    .with_label("conditions cannot call anything")
                    .with_secondary(value, "on this value")
                    .with_help(match method {
                        Some(_) => "compare the value directly, e.g. `$x == 'yes'`; there are no methods",
                        None => "remove the parentheses; there are no functions or methods",
                    });
                    push(e.state(), d);
                    Expr::new(ExprKind::Error, e.span())
                }
            });

        let word = select! { Tok::Ident(w) => w }
            .map_with(|w, e| -> (&str, Span) { (w, e.span()) })
            .then(call_args.or_not())
            .map_with(|((w, wspan), call), e| {
                let d = match call {
                    Some(args) => Diagnostic::new(
                        Code::CallSyntax,
                        wspan.to(args),
                        format!("function call `{w}(…)` in a condition"),
                    )
                    .with_label("conditions cannot call anything")
                    .with_help(if w == "len" {
                        "there are no functions; an empty list or string is false, so test the value itself: `$items`"
                    } else {
                        "there are no functions; compare values directly, e.g. `$name == 'x'`"
                    }),
                    None => Diagnostic::new(Code::BareWord, wspan, format!("bare word `{w}`"))
                        .with_label("not a value")
                        .with_help(bare_word_help(w)),
                };
                push(e.state(), d);
                Expr::new(ExprKind::Error, e.span())
            });

        let invalid = just(Tok::Invalid).map_with(|_, e| Expr::new(ExprKind::Error, e.span()));

        let parens = expr
            .clone()
            .delimited_by(just(Tok::LParen), just(Tok::RParen))
            .map_with(|x: Expr, e| Expr::new(x.kind, e.span()))
            .recover_with(via_parser(nested_delimiters(
                Tok::LParen,
                Tok::RParen,
                [],
                |s| Expr::new(ExprKind::Error, s),
            )));

        // Error productions: a missing value (before `and`, `or`, `)` or the end) and a missing
        // operator (two values in a row) are reported here and parsing goes on, so the errors
        // after them are found in the same pass.
        let missing_value = choice((
            one_of([Tok::And, Tok::Or, Tok::RParen]).map_with(|t, e| (Some(t), e.span())),
            end().map_with(|(), e| (None, e.span())),
        ))
        .rewind()
        .map_with(|(found, span): (Option<Tok<'s>>, Span), e| {
            let d = match found {
                // A zero-width `)` is the one the lexer added for an unclosed `(`.
                Some(t) if !(t == Tok::RParen && span.is_empty()) => {
                    Diagnostic::new(Code::UnexpectedToken, span, format!("unexpected {}", describe(&t)))
                }
                _ => Diagnostic::new(Code::UnexpectedEnd, span, "unexpected end of condition"),
            };
            push(e.state(), d.with_label("expected a value here"));
            Expr::new(ExprKind::Error, Span::point(span.start))
        });

        let operand = choice((literal, var, word, invalid, parens, missing_value)).labelled("a value");

        let missing_op = any()
            .filter(|t: &Tok<'s>| {
                matches!(
                    t,
                    Tok::Var(_) | Tok::Str(_) | Tok::Int(_) | Tok::Float(_) | Tok::True | Tok::False | Tok::None | Tok::Invalid
                )
            })
            .map_with(|t, e| (t, e.span()))
            .rewind()
            .map_with(|(t, span): (Tok<'s>, Span), e| {
                push(
                    e.state(),
                    Diagnostic::new(Code::UnexpectedToken, span, format!("unexpected {}", describe(&t)))
                        .with_label("expected an operator before this value")
                        .with_help("two values in a row need an operator between them, e.g. `==` or `and`"),
                );
                (CmpOp::Eq, Span::point(span.start))
            });

        let cmp_op = choice((
            just(Tok::Eq).to(CmpOp::Eq),
            just(Tok::Ne).to(CmpOp::Ne),
            just(Tok::Le).to(CmpOp::Le),
            just(Tok::Ge).to(CmpOp::Ge),
            just(Tok::Lt).to(CmpOp::Lt),
            just(Tok::Gt).to(CmpOp::Gt),
            just(Tok::In).to(CmpOp::In),
            just(Tok::Not).then(just(Tok::In)).to(CmpOp::NotIn),
            just(Tok::Contains).to(CmpOp::Contains),
        ))
        .map_with(|op, e| (op, e.span()))
        .labelled("an operator")
        .or(missing_op);

        let comparison = operand
            .clone()
            .then(cmp_op.then(operand).repeated().collect::<Vec<_>>())
            .map_with(|(first, rest), e| {
                let mut it = rest.into_iter();
                let Some(((op, op_span), rhs)) = it.next() else { return first };
                // A missing operator (zero-width, already reported) makes the comparison an error.
                if op_span.is_empty() || it.as_slice().iter().any(|((_, s), _)| s.is_empty()) {
                    return Expr::new(ExprKind::Error, e.span());
                }
                if let Some(((op2, op2_span), rhs2)) = it.as_slice().first() {
                    let text = |s: Span| src.get(s.range()).unwrap_or("…");
                    let (l, r) = (text(first.span), text(rhs.span));
                    let help = format!(
                        "join two comparisons with `and`: `{l} {} {r} and {r} {} {}`",
                        op.as_str(),
                        op2.as_str(),
                        text(rhs2.span)
                    );
                    push(
                        e.state(),
                        Diagnostic::new(
                            Code::ChainedComparison,
                            *op2_span,
                            format!("comparisons do not chain: a second `{}`", op2.as_str()),
                        )
                        .with_label("a second comparison operator")
                        .with_secondary(first.span.to(rhs.span), "this comparison is already complete")
                        .with_help(help),
                    );
                    return Expr::new(ExprKind::Error, e.span());
                }
                let span = first.span.to(rhs.span);
                Expr::new(ExprKind::Cmp(op, Box::new(first), Box::new(rhs)), span)
            });

        let unary = just(Tok::Not)
            .map_with(|_, e| e.span())
            .repeated()
            .foldr(comparison, |not_span: Span, inner: Expr| {
                let span = not_span.to(inner.span);
                Expr::new(ExprKind::Not(Box::new(inner)), span)
            });

        let logic_op = choice((
            just(Tok::And).to(LogicOp::And),
            just(Tok::Or).to(LogicOp::Or),
        ))
        .map_with(|op, e| (op, e.span()));

        unary
            .clone()
            .map(Chain::start)
            .foldl(logic_op.then(unary).repeated(), Chain::push)
            .map_with(move |chain: Chain, e| {
                if let Some(d) = chain.mixed(src) {
                    push(e.state(), d);
                }
                chain.expr
            })
    })
    .then_ignore(end())
}

/// An `and`/`or` chain folded left to right, remembering what the mixing check needs.
struct Chain {
    expr: Expr,
    first_and: Option<Span>,
    first_or: Option<Span>,
    any_error: bool,
    /// Spans of the first three items and ops, for the suggested groupings.
    items: [Span; 3],
    ops: [LogicOp; 2],
    len: usize,
}

impl Chain {
    fn start(expr: Expr) -> Chain {
        Chain {
            any_error: matches!(expr.kind, ExprKind::Error),
            items: [expr.span, Span::default(), Span::default()],
            expr,
            first_and: None,
            first_or: None,
            ops: [LogicOp::And, LogicOp::And],
            len: 1,
        }
    }

    fn push(mut self, ((op, op_span), rhs): ((LogicOp, Span), Expr)) -> Chain {
        let first = match op {
            LogicOp::And => &mut self.first_and,
            LogicOp::Or => &mut self.first_or,
        };
        first.get_or_insert(op_span);
        self.any_error |= matches!(rhs.kind, ExprKind::Error);
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = rhs.span;
        }
        if let Some(slot) = self.ops.get_mut(self.len - 1) {
            *slot = op;
        }
        self.len += 1;
        let span = self.expr.span.to(rhs.span);
        self.expr = Expr::new(
            ExprKind::Logic(op, Box::new(self.expr), Box::new(rhs)),
            span,
        );
        self
    }

    /// The mixed `and`/`or` diagnostic, if the chain mixes them.
    fn mixed(&self, src: &str) -> Option<Diagnostic> {
        let (Some(a), Some(o), false) = (self.first_and, self.first_or, self.any_error) else {
            return None;
        };
        let (first, second) = if a.start < o.start { (a, o) } else { (o, a) };
        let d = Diagnostic::new(
            Code::MixedLogic,
            second,
            "`and` and `or` mixed without parentheses",
        )
        .with_label("add parentheses to say which goes first")
        .with_secondary(first, "mixed with this");
        let d = if self.len == 3 {
            let [x, y, z] = self.items.map(|s| src.get(s.range()).unwrap_or("…"));
            let [o1, o2] = self.ops.map(LogicOp::as_str);
            d.with_help(format!(
                "write `({x} {o1} {y}) {o2} {z}` or `{x} {o1} ({y} {o2} {z})`"
            ))
        } else {
            d.with_help("group the `and`s or the `or`s in parentheses")
        };
        Some(d.with_note(
            "llm-nano-vm read `A or B and C` as `(A or B) and C`, Python as `A or (B and C)`; nanovm makes you choose",
        ))
    }
}

fn bare_word_help(w: &str) -> String {
    match w {
        "is" => "`is` is Python: write `==` (and `!=` for `is not`)".to_owned(),
        "if" | "else" | "then" => {
            "conditions are a single test; branches are the step's `then`/`otherwise`".to_owned()
        }
        _ => format!("a string is quoted: `'{w}'`; a variable starts with `$`: `${w}`"),
    }
}

fn describe(t: &Tok<'_>) -> String {
    match t {
        Tok::Var(_) => format!("variable `{t}`"),
        Tok::Str(_) => format!("string {t}"),
        Tok::Int(_) | Tok::Float(_) => format!("number `{t}`"),
        Tok::Invalid => "an invalid value".to_owned(),
        _ => format!("`{t}`"),
    }
}

fn rich_to_diag(e: &Rich<'_, Tok<'_>, Span>) -> Diagnostic {
    let span = *e.span();
    let mut expected: Vec<String> = e
        .expected()
        .filter_map(|p| match p {
            // A `(` after a value is only ever a call, which is an error: never suggest it.
            RichPattern::Token(t) if **t == Tok::LParen => None,
            RichPattern::Token(t) => Some(format!("`{}`", &**t)),
            RichPattern::Label(l) => Some(l.to_string()),
            RichPattern::EndOfInput => Some("the end of the condition".to_owned()),
            _ => None,
        })
        .collect();
    expected.sort();
    expected.dedup();
    let expected = match expected.as_slice() {
        [] => None,
        [one] => Some(format!("expected {one}")),
        [init @ .., last] => Some(format!("expected {} or {last}", init.join(", "))),
    };
    match (e.reason(), e.found()) {
        (RichReason::Custom(msg), _) => Diagnostic::new(Code::UnexpectedToken, span, msg.clone()),
        (_, None) => {
            let d = Diagnostic::new(Code::UnexpectedEnd, span, "unexpected end of condition");
            match expected {
                Some(x) => d.with_label(x),
                None => d,
            }
        }
        (_, Some(Tok::Ident(w))) => {
            let d = Diagnostic::new(Code::BareWord, span, format!("unexpected word `{w}`"));
            let d = match expected {
                Some(x) => d.with_label(x),
                None => d,
            };
            d.with_help(bare_word_help(w))
        }
        (_, Some(found)) => {
            let d = Diagnostic::new(
                Code::UnexpectedToken,
                span,
                format!("unexpected {}", describe(found)),
            );
            let d = match expected {
                Some(x) => d.with_label(x),
                None => d,
            };
            match found {
                Tok::Var(_) | Tok::Str(_) | Tok::Int(_) | Tok::Float(_) => d.with_help(
                    "two values in a row need an operator between them, e.g. `==` or `and`",
                ),
                Tok::Comma => {
                    d.with_help("commas only appear in calls, and conditions cannot call anything")
                }
                _ => d,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::expr::Limits;
    use crate::expr::lexer::lex;

    fn p(src: &str) -> (Option<Expr>, Vec<Diagnostic>) {
        let lexed = lex(src, &Limits::default());
        let (e, mut d) = parse(src, &lexed.tokens);
        d.extend(lexed.diagnostics);
        (e, d)
    }

    fn ok(src: &str) -> String {
        let (e, d) = p(src);
        assert!(d.is_empty(), "{src}: {d:#?}");
        e.unwrap().to_string()
    }

    fn errs(src: &str) -> Vec<Code> {
        let (_, d) = p(src);
        let mut c: Vec<Code> = d.into_iter().map(|d| d.code).collect();
        c.sort();
        c
    }

    #[test]
    fn precedence() {
        assert_eq!(ok("not $a == 1 and $b == 2"), "not $a == 1 and $b == 2");
        assert_eq!(ok("$a or $b or $c"), "$a or $b or $c");
        assert_eq!(ok("$a or ($b and $c)"), "$a or ($b and $c)");
        assert_eq!(ok("($a or $b) and $c"), "($a or $b) and $c");
        assert_eq!(ok("not not $a"), "not not $a");
        assert_eq!(ok("not ($a and $b)"), "not ($a and $b)");
        assert_eq!(ok("$r not   in 'x'"), "$r not in 'x'");
        assert_eq!(ok("$r contains 'x'"), "$r contains 'x'");
        assert_eq!(ok("($a == 1) == True"), "($a == 1) == True");
        assert_eq!(ok("$a == true"), "$a == True");
    }

    #[test]
    fn recovery_reports_every_error() {
        for src in [
            "$a == and $b ==",
            "($a ==) or ($b $c)",
            "$a == 1 $b",
            "not",
            "$a == (",
            "$a == 1 and ($b or) and $c ==",
        ] {
            let (_, d) = p(src);
            eprintln!("{src}");
            for x in &d {
                eprintln!("   {} {:?} {} {:?}", x.code, x.span, x.message, x.label);
            }
        }
    }

    #[test]
    fn errors() {
        assert_eq!(errs("$a or $b and $c"), vec![Code::MixedLogic]);
        assert_eq!(errs("1 < $x < 10"), vec![Code::ChainedComparison]);
        assert_eq!(errs("$x.lower() == 'a'"), vec![Code::CallSyntax]);
        assert_eq!(errs("$text.strip () == ''"), vec![Code::CallSyntax]);
        assert_eq!(errs("lower($name) == 'x'"), vec![Code::CallSyntax]);
        assert_eq!(errs("$status == approved"), vec![Code::BareWord]);
        assert_eq!(errs("$a $b"), vec![Code::UnexpectedToken]);
        assert_eq!(errs("$a and"), vec![Code::UnexpectedEnd]);
        assert_eq!(errs("$a = 1"), vec![Code::UnexpectedChar]);
        assert_eq!(errs("$status == 'ok' please"), vec![Code::BareWord]);
    }
}
