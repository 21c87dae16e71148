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
use chumsky::input::{Input, Stream, ValueInput};
use chumsky::prelude::*;

/// The parser's state: the condition text (token payloads are read from it by span) and the
/// diagnostics the error productions report, truncated when chumsky backtracks past them.
#[derive(Debug, Default)]
pub struct State {
    src: String,
    diags: Vec<Diagnostic>,
}

impl State {
    /// The source text of a token.
    fn text(&self, span: Span) -> &str {
        self.src.get(span.range()).unwrap_or_default()
    }
}

impl<'a, I: Input<'a>> chumsky::inspector::Inspector<'a, I> for State {
    type Checkpoint = usize;

    #[inline(always)]
    fn on_token(&mut self, _: &I::Token) {}

    #[inline(always)]
    fn on_save<'parse>(&self, _: &chumsky::input::Cursor<'a, 'parse, I>) -> usize {
        self.diags.len()
    }

    #[inline(always)]
    fn on_rewind<'parse>(&mut self, cp: &chumsky::input::Checkpoint<'a, 'parse, I, usize>) {
        self.diags.truncate(*cp.inspector());
    }
}

/// Tokens as the parser sees them: payloads erased (they are read back from the source by
/// span), so the parser's types have no lifetime and each thread builds it once.
type PTok = Tok<'static>;

type Extra<Er> = extra::Full<Er, State, ()>;

type Spanned = (PTok, Span);

/// The parser's input: the tokens with their spans.
type In = chumsky::input::MappedInput<
    'static,
    PTok,
    Span,
    Stream<std::vec::IntoIter<Spanned>>,
    fn(Spanned) -> Spanned,
>;

type RichErr = Rich<'static, PTok, Span>;

thread_local! {
    // Building the combinator graph costs about as much as parsing a condition, so each thread
    // builds each parser once.
    static FAST: Boxed<'static, 'static, In, Expr, Extra<EmptyErr>> = parser().boxed();
    static SLOW: Boxed<'static, 'static, In, Expr, Extra<RichErr>> = parser().boxed();
}

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

fn push(state: &mut State, d: Diagnostic) {
    state.diags.push(d);
}

/// A token without its payload.
fn erase(t: Tok<'_>) -> PTok {
    match t {
        Tok::Var(_) => Tok::Var(""),
        Tok::Str(_) => Tok::Str(""),
        Tok::Int(_) => Tok::Int(""),
        Tok::Float(_) => Tok::Float(""),
        Tok::Ident(_) => Tok::Ident(""),
        Tok::True => Tok::True,
        Tok::False => Tok::False,
        Tok::None => Tok::None,
        Tok::Eq => Tok::Eq,
        Tok::Ne => Tok::Ne,
        Tok::Lt => Tok::Lt,
        Tok::Le => Tok::Le,
        Tok::Gt => Tok::Gt,
        Tok::Ge => Tok::Ge,
        Tok::In => Tok::In,
        Tok::Contains => Tok::Contains,
        Tok::Not => Tok::Not,
        Tok::And => Tok::And,
        Tok::Or => Tok::Or,
        Tok::LParen => Tok::LParen,
        Tok::RParen => Tok::RParen,
        Tok::Comma => Tok::Comma,
        Tok::Invalid => Tok::Invalid,
    }
}

/// A token with its payload read back from the source (the inverse of [`erase`]).
fn restore<'s>(t: PTok, span: Span, src: &'s str) -> Tok<'s> {
    let text = src.get(span.range()).unwrap_or_default();
    match t {
        Tok::Var(_) => Tok::Var(text.get(1..).unwrap_or_default()),
        Tok::Str(_) => Tok::Str(text),
        Tok::Int(_) => Tok::Int(text),
        Tok::Float(_) => Tok::Float(text),
        Tok::Ident(_) => Tok::Ident(text),
        other => other,
    }
}

fn input(src: &str, tokens: &[(Tok<'_>, Span)]) -> In {
    let tokens: Vec<Spanned> = tokens.iter().map(|&(t, s)| (erase(t), s)).collect();
    Stream::from_iter(tokens).map(Span::point(src.len()), (|t| t) as fn(Spanned) -> Spanned)
}

/// Parse a lexed, limit-checked token stream. `src` is the condition text.
pub fn parse(src: &str, tokens: &[(Tok<'_>, Span)]) -> (Option<Expr>, Vec<Diagnostic>) {
    // Fastest path: most conditions are valid, and a valid one needs none of chumsky's
    // machinery (its combinator dispatch was more than half of a compile).
    if let Some(expr) = Valid::parse(src, tokens) {
        return (Some(expr), Vec::new());
    }
    parse_with_chumsky(src, tokens)
}

/// [`parse`] without the recursive-descent path: chumsky, fast then with rich errors.
fn parse_with_chumsky(src: &str, tokens: &[(Tok<'_>, Span)]) -> (Option<Expr>, Vec<Diagnostic>) {
    let mut state = State {
        src: src.to_owned(),
        diags: Vec::new(),
    };

    // Fast path: the same grammar with an error type that records nothing (what `Valid` does
    // not take but is still a tree without diagnostics: an operand the lexer already reported).
    // chumsky's bookkeeping of expected tokens dominates a valid parse.
    let fast = FAST.with(|p| {
        let out = p.parse_with_state(input(src, tokens), &mut state);
        match (out.has_errors(), state.diags.is_empty()) {
            (false, true) => out.into_output(),
            _ => None,
        }
    });
    if let Some(expr) = fast {
        return (Some(expr), Vec::new());
    }

    // Slow path: rich errors with what was expected, and recovery.
    state.diags.clear();
    let (out, errs) = SLOW.with(|p| {
        p.parse_with_state(input(src, tokens), &mut state)
            .into_output_errors()
    });
    let mut diags = state.diags;
    diags.extend(errs.into_iter().map(|e| rich_to_diag(&e, src)));
    (out, diags)
}

fn parser<'a, I, Er>() -> impl Parser<'a, I, Expr, Extra<Er>> + Clone
where
    I: ValueInput<'a, Token = PTok, Span = Span>,
    Er: chumsky::error::Error<'a, I> + LabelError<'a, I, &'static str> + 'a,
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

        let literal = any()
            .filter(|t: &PTok| literal(*t, "").is_some())
            .map_with(|t, e| {
                let span = e.span();
                let state: &mut State = e.state();
                let lit = literal(t, state.text(span)).unwrap_or(Lit::Null);
                Expr::new(ExprKind::Lit(lit), span)
            });

        let var = select! { Tok::Var(_) => () }
            .map_with(|(), e| -> Span { e.span() })
            .then(call_args.clone().or_not())
            .map_with(|(vspan, call), e| match call {
                None => {
                    let state: &mut State = e.state();
                    let text = state.text(vspan);
                    Expr::new(ExprKind::Var(Path::parse(text.get(1..).unwrap_or_default())), vspan)
                }
                Some(args) => {
                    let state: &mut State = e.state();
                    let v = state.text(vspan).get(1..).unwrap_or_default().to_owned();
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

        let word = select! { Tok::Ident(_) => () }
            .map_with(|(), e| -> Span { e.span() })
            .then(call_args.or_not())
            .map_with(|(wspan, call), e| {
                let state: &mut State = e.state();
                let w = state.text(wspan).to_owned();
                let w = w.as_str();
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
        .map_with(|(found, span): (Option<PTok>, Span), e| {
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
            .filter(|t: &PTok| {
                matches!(
                    t,
                    Tok::Var(_) | Tok::Str(_) | Tok::Int(_) | Tok::Float(_) | Tok::True | Tok::False | Tok::None | Tok::Invalid
                )
            })
            .map_with(|t, e| (t, e.span()))
            .rewind()
            .map_with(|(t, span): (PTok, Span), e| {
                let state: &mut State = e.state();
                let t = restore(t, span, &state.src);
                let message = format!("unexpected {}", describe(&t));
                push(
                    state,
                    Diagnostic::new(Code::UnexpectedToken, span, message)
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
                    let state: &mut State = e.state();
                    let text = |s: Span| state.src.get(s.range()).unwrap_or("…");
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
            .map_with(|chain: Chain, e| {
                let state: &mut State = e.state();
                if let Some(d) = chain.mixed(&state.src) {
                    push(e.state(), d);
                }
                chain.expr
            })
    })
    .then_ignore(end())
}

/// The literal a token is (`text`: the token's source text), or `None` for a token that is
/// not a literal. Both parsers decode literals here.
fn literal(tok: Tok<'_>, text: &str) -> Option<Lit> {
    Some(match tok {
        Tok::Int(_) => Lit::Int(text.parse().unwrap_or_default()),
        Tok::Float(_) => Lit::Float(text.parse().unwrap_or_default()),
        Tok::Str(_) => Lit::Str(unescape(text)),
        Tok::True => Lit::Bool(true),
        Tok::False => Lit::Bool(false),
        Tok::None => Lit::Null,
        _ => return None,
    })
}

/// A recursive-descent parser of valid conditions: the grammar of [`parser`] without its error
/// productions and recovery. It gives up (`None`) at the first token that is not part of a
/// valid condition, and [`parse`] hands the condition to chumsky, which reports it. When it
/// returns a tree, that tree is the one chumsky builds, spans included (a property test in
/// this module holds the two together).
struct Valid<'t, 's> {
    src: &'s str,
    tokens: &'t [(Tok<'s>, Span)],
    pos: usize,
    depth: usize,
}

impl<'t, 's> Valid<'t, 's> {
    /// Deeper than the lexer's nesting limit lets through: give up rather than recurse.
    const MAX_DEPTH: usize = 256;

    fn parse(src: &'s str, tokens: &'t [(Tok<'s>, Span)]) -> Option<Expr> {
        let mut p = Valid {
            src,
            tokens,
            pos: 0,
            depth: 0,
        };
        let expr = p.logic()?;
        (p.pos == tokens.len()).then_some(expr)
    }

    fn peek(&self) -> Option<Tok<'s>> {
        self.tokens.get(self.pos).map(|&(t, _)| t)
    }

    fn next(&mut self) -> Option<(Tok<'s>, Span)> {
        let t = self.tokens.get(self.pos).copied();
        self.pos += 1;
        t
    }

    fn text(&self, span: Span) -> &'s str {
        self.src.get(span.range()).unwrap_or_default()
    }

    /// `unary { ("and" | "or") unary }`, folded left; `and` and `or` mixed is an error.
    fn logic(&mut self) -> Option<Expr> {
        let mut expr = self.unary()?;
        let mut chain = None;
        loop {
            let op = match self.peek() {
                Some(Tok::And) => LogicOp::And,
                Some(Tok::Or) => LogicOp::Or,
                _ => return Some(expr),
            };
            if *chain.get_or_insert(op) != op {
                return None;
            }
            self.pos += 1;
            let rhs = self.unary()?;
            let span = expr.span.to(rhs.span);
            expr = Expr::new(ExprKind::Logic(op, Box::new(expr), Box::new(rhs)), span);
        }
    }

    /// `{ "not" } comparison`: each `not` spans from itself to the end of what it negates.
    fn unary(&mut self) -> Option<Expr> {
        let first = self.pos;
        while matches!(self.peek(), Some(Tok::Not)) {
            self.pos += 1;
        }
        let nots = self.tokens.get(first..self.pos)?;
        let mut expr = self.comparison()?;
        for &(_, not_span) in nots.iter().rev() {
            let span = not_span.to(expr.span);
            expr = Expr::new(ExprKind::Not(Box::new(expr)), span);
        }
        Some(expr)
    }

    /// `operand [ cmp_op operand ]` (a second operator is left for the caller to refuse).
    fn comparison(&mut self) -> Option<Expr> {
        let lhs = self.operand()?;
        let op = match self.peek() {
            Some(Tok::Eq) => CmpOp::Eq,
            Some(Tok::Ne) => CmpOp::Ne,
            Some(Tok::Le) => CmpOp::Le,
            Some(Tok::Ge) => CmpOp::Ge,
            Some(Tok::Lt) => CmpOp::Lt,
            Some(Tok::Gt) => CmpOp::Gt,
            Some(Tok::In) => CmpOp::In,
            Some(Tok::Contains) => CmpOp::Contains,
            Some(Tok::Not) => {
                self.pos += 1;
                if !matches!(self.peek(), Some(Tok::In)) {
                    return None;
                }
                CmpOp::NotIn
            }
            _ => return Some(lhs),
        };
        self.pos += 1;
        let rhs = self.operand()?;
        let span = lhs.span.to(rhs.span);
        Some(Expr::new(
            ExprKind::Cmp(op, Box::new(lhs), Box::new(rhs)),
            span,
        ))
    }

    /// A literal, a `$path` (not called) or a parenthesised condition.
    fn operand(&mut self) -> Option<Expr> {
        let (tok, span) = self.next()?;
        let text = self.text(span);
        if let Some(lit) = literal(tok, text) {
            return Some(Expr::new(ExprKind::Lit(lit), span));
        }
        match tok {
            Tok::Var(_) => {
                if matches!(self.peek(), Some(Tok::LParen)) {
                    return None;
                }
                let path = Path::parse(text.get(1..).unwrap_or_default());
                Some(Expr::new(ExprKind::Var(path), span))
            }
            Tok::LParen => {
                if self.depth >= Self::MAX_DEPTH {
                    return None;
                }
                self.depth += 1;
                let inner = self.logic()?;
                self.depth -= 1;
                let (Tok::RParen, close) = self.next()? else {
                    return None;
                };
                Some(Expr::new(inner.kind, span.to(close)))
            }
            _ => None,
        }
    }
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

fn rich_to_diag(e: &RichErr, src: &str) -> Diagnostic {
    let span = *e.span();
    let found = e.found().map(|t| restore(*t, span, src));
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
    match (e.reason(), found.as_ref()) {
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
    use proptest::prelude::*;

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

    /// Every tree the recursive-descent parser returns is chumsky's, spans included, with no
    /// diagnostics.
    fn agrees(src: &str) -> Option<Expr> {
        let lexed = lex(src, &Limits::default());
        if lexed.limit_exceeded || lexed.tokens.is_empty() {
            return None;
        }
        let valid = Valid::parse(src, &lexed.tokens);
        if let Some(v) = &valid {
            let (c, d) = parse_with_chumsky(src, &lexed.tokens);
            assert!(d.is_empty(), "{src}: chumsky reports {d:#?}");
            assert_eq!(Some(v), c.as_ref(), "{src}");
        }
        valid
    }

    fn operand() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "$a",
                "$b.c",
                "$s.output.x",
                "1",
                "-2",
                "0.5",
                "-0.25",
                "'x'",
                "''",
                "'a\\'b'",
                "\"d\"",
                "True",
                "False",
                "None",
                "true",
                "null",
            ])
            .prop_map(str::to_owned),
        ]
    }

    /// Well-formed conditions, printed with the parentheses the grammar needs.
    fn condition() -> impl Strategy<Value = String> {
        let ops = prop::sample::select(vec![
            "==", "!=", "<", "<=", ">", ">=", "in", "not in", "not   in", "contains",
        ]);
        let leaf = prop_oneof![
            operand(),
            (operand(), ops, operand()).prop_map(|(a, o, b)| format!("{a} {o} {b}")),
        ];
        leaf.prop_recursive(6, 48, 4, |inner| {
            let logic = prop::sample::select(vec!["and", "or"]);
            prop_oneof![
                (inner.clone(), logic.clone(), inner.clone())
                    .prop_map(|(a, o, b)| format!("({a}) {o} ({b})")),
                (prop::collection::vec(inner.clone(), 2..5), logic)
                    .prop_map(|(xs, o)| format!("({})", xs.join(&format!(") {o} (")))),
                inner.clone().prop_map(|a| format!("not ({a})")),
                inner.clone().prop_map(|a| format!("not not ({a})")),
                (inner.clone(), inner).prop_map(|(a, b)| format!("(({a})) == ({b})")),
            ]
        })
    }

    /// Token soup: mostly invalid, sometimes valid by chance.
    fn soup() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            operand(),
            prop::sample::select(vec![
                "==", "!=", "<", "<=", ">", ">=", "in", "not", "contains", "and", "or", "(", ")",
                ",", "foo", "len", "(", ")", "$x(", "=", "1.", "'open",
            ])
            .prop_map(str::to_owned),
        ];
        (prop::collection::vec(token, 1..14), prop::bool::ANY)
            .prop_map(|(ts, tight)| ts.join(if tight { "" } else { " " }))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn recursive_descent_takes_every_well_formed_condition(src in condition()) {
            prop_assert!(agrees(&src).is_some(), "{} was left to chumsky", src);
        }

        #[test]
        fn recursive_descent_agrees_with_chumsky_on_any_tokens(src in soup()) {
            agrees(&src);
        }
    }

    #[test]
    fn recursive_descent_leaves_errors_to_chumsky() {
        for src in [
            "$a or $b and $c",
            "1 < $x < 10",
            "$x.lower() == 'a'",
            "len($x) > 0",
            "$status == approved",
            "$a $b",
            "$a and",
            "$a not $b",
            "()",
            "$a == 1,",
        ] {
            let lexed = lex(src, &Limits::default());
            assert!(Valid::parse(src, &lexed.tokens).is_none(), "{src}");
            assert!(!p(src).1.is_empty(), "{src}");
        }
        // The lexer reports an unbalanced parenthesis and repairs it; both parsers take the rest.
        for src in ["($a", "$a)"] {
            assert!(agrees(src).is_some(), "{src}");
            assert!(!p(src).1.is_empty(), "{src}");
        }
        for src in [
            "$a == 1",
            "not not ($a or $b)",
            "($a) == (1)",
            "$r not in 'x'",
        ] {
            assert!(agrees(src).is_some(), "{src}");
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
