//! The stable diagnostic codes. A code never changes meaning once published; retired codes
//! are not reused. `nanovm explain CODE` prints [`CodeInfo::explanation`].
//!
//! Ranges: `NV000x` input files and JSON, `NV001x` schema, `NV002x` step graph, `NV003x`
//! references and fields, `NV01xx` condition syntax, `NV02xx` condition names and types, `NV03xx` input
//! limits, `NV04xx` run-time errors of conditions.

use super::Severity;
use serde::{Serialize, Serializer};
use std::fmt;

/// Static facts about a code.
#[derive(Debug, Clone, Copy)]
pub struct CodeInfo {
    pub code: &'static str,
    /// Short kebab-case name, stable like the code.
    pub name: &'static str,
    pub severity: Severity,
    pub summary: &'static str,
    /// Long explanation with a wrong and a right example.
    pub explanation: &'static str,
}

macro_rules! codes {
    ($( $variant:ident = $code:literal, $name:literal, $sev:ident, $summary:literal, $expl:literal; )*) => {
        /// A stable diagnostic code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code { $( $variant, )* }

        impl Code {
            /// Every code, in numeric order.
            pub const ALL: &'static [Code] = &[ $( Code::$variant, )* ];

            pub fn info(self) -> &'static CodeInfo {
                match self {
                    $( Code::$variant => &CodeInfo {
                        code: $code,
                        name: $name,
                        severity: Severity::$sev,
                        summary: $summary,
                        explanation: $expl,
                    }, )*
                }
            }
        }
    };
}

impl Code {
    pub fn as_str(self) -> &'static str {
        self.info().code
    }

    /// Look a code up by its text (`NV0101`, case-insensitive, the `NV` optional).
    pub fn parse(text: &str) -> Option<Code> {
        let t = text.trim();
        let digits = t
            .strip_prefix("NV")
            .or_else(|| t.strip_prefix("nv"))
            .unwrap_or(t);
        Code::ALL
            .iter()
            .copied()
            .find(|c| c.as_str().get(2..) == Some(digits))
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

codes! {
    JsonSyntax = "NV0001", "json-syntax", Error,
        "the file is not strict JSON",
"Programs are strict JSON (RFC 8259): no comments, no trailing commas, keys and strings in
double quotes, no NaN/Infinity, no hexadecimal or `+1`/`.5` numbers, control characters in
strings written as escapes.

Wrong:   {\"steps\": [{\"id\": \"a\", \"type\": \"tool\", \"tool\": \"t\",}]}
Right:   {\"steps\": [{\"id\": \"a\", \"type\": \"tool\", \"tool\": \"t\"}]}";

    DuplicateKey = "NV0002", "duplicate-key", Error,
        "an object has the same key twice",
"JSON readers disagree on which of two equal keys wins (the reference keeps the last, others the
first), so a repeated key makes the program mean different things to different tools.

Wrong:   {\"id\": \"a\", \"type\": \"tool\", \"tool\": \"x\", \"tool\": \"y\"}
Right:   {\"id\": \"a\", \"type\": \"tool\", \"tool\": \"y\"}";

    JsonTooDeep = "NV0003", "json-too-deep", Error,
        "arrays and objects nested deeper than the limit",
"A document may nest arrays and objects at most 128 levels deep (configurable). Programs are
shallow; a deeper document is rejected before it is parsed.

Wrong:   {\"args\": {\"a\": [[[[[[ ... 200 levels ... ]]]]]]}}
Right:   {\"args\": {\"a\": [1, 2]}}";

    FileTooLarge = "NV0004", "file-too-large", Error,
        "the document is larger than the limit",
"A program file may be at most 8 MiB (configurable). Larger inputs are refused before parsing.

Wrong:   nanovm check dump-100MB.json
Right:   nanovm check program.json      (a few KiB)";

    InvalidUtf8 = "NV0005", "invalid-utf8", Error,
        "the file is not UTF-8 text",
"JSON text must be UTF-8. The diagnostic points at the first byte that is not.

Wrong:   a program saved as Latin-1 with `é` in a prompt
Right:   the same program saved as UTF-8";

    Io = "NV0006", "io-error", Error,
        "the file cannot be read",
"The path does not exist, is a directory, or cannot be read. `nanovm check` exits with 2.

Wrong:   nanovm check programs/        (a directory)
Right:   nanovm check programs/*.json";

    TooManySteps = "NV0007", "too-many-steps", Error,
        "more steps than the limit",
"A program may have at most 100,000 steps, parallel sub-steps included (configurable).

Wrong:   a generated program with a million steps
Right:   split it into programs that hand over through a tool";

    WrongType = "NV0010", "wrong-type", Error,
        "a value of the wrong JSON type",
"Every field has one JSON type and nothing is coerced: `\"5\"` is not an integer and `\"yes\"`
is not a boolean (the reference's lax mode accepts both).

Wrong:   \"max_retries\": \"5\"        \"is_terminal\": \"yes\"
Right:   \"max_retries\": 5          \"is_terminal\": true";

    UnknownField = "NV0011", "unknown-field", Error,
        "a field the Program format does not have",
"Unknown fields are errors (the reference silently ignores them, so a typo such as `nextstep`
changes the control flow without a word). The help names the closest known field.

Wrong:   {\"id\": \"a\", \"type\": \"tool\", \"tool\": \"t\", \"nextstep\": \"c\"}
Right:   {\"id\": \"a\", \"type\": \"tool\", \"tool\": \"t\", \"next_step\": \"c\"}";

    MissingField = "NV0012", "missing-field", Error,
        "a required field is missing",
"A program needs `steps`; a step needs `id` and `type`; an `llm` step needs `prompt`, a `tool`
step `tool`, a `condition` step `condition` and at least one of `then`/`otherwise`, a
`parallel` step `parallel_steps`.

Wrong:   {\"id\": \"ask\", \"type\": \"llm\"}
Right:   {\"id\": \"ask\", \"type\": \"llm\", \"prompt\": \"Summarise $doc\"}";

    InvalidEnum = "NV0013", "invalid-enum-value", Error,
        "a value outside the allowed set",
"`type` is one of llm, tool, condition, parallel; `on_error` one of fail, skip, retry;
`on_timeout` one of fail, fallback. Values are case-sensitive.

Wrong:   \"on_error\": \"ignore\"
Right:   \"on_error\": \"skip\"";

    EmptyValue = "NV0014", "empty-value", Error,
        "an empty string or list where a value is required",
"Step ids, prompts, tool names, conditions and branch targets must not be empty; `steps`,
`parallel_steps` and `allowed_outputs` need at least one element.

Wrong:   \"prompt\": \"\"          \"steps\": []
Right:   \"prompt\": \"Classify: $text\"";

    NumberRange = "NV0015", "number-out-of-range", Error,
        "a number outside its allowed range",
"`max_steps`, `max_tokens`, `max_concurrency` and `max_stalled_steps` are positive integers,
`max_retries` an integer from 0 to 100, `timeout_seconds` a positive finite number.
`max_stalled_steps: 0` would stop every run after its first step.

Wrong:   \"max_steps\": -1        \"max_stalled_steps\": 0
Right:   \"max_steps\": 20        \"max_stalled_steps\": 3";

    MisplacedField = "NV0016", "field-not-for-step-type", Error,
        "a control-flow or validation field on a step type that cannot use it",
"`then`/`otherwise` belong to condition steps, `next_step` to non-condition steps,
`allowed_outputs` to llm steps, `parallel_steps`/`max_concurrency` to parallel steps. The
reference ignores most of these at run time but checks some as graph edges, so the program
means different things to its checker and its VM.

Wrong:   {\"id\": \"t\", \"type\": \"tool\", \"tool\": \"x\", \"then\": \"done\"}
Right:   {\"id\": \"t\", \"type\": \"tool\", \"tool\": \"x\", \"next_step\": \"done\"}";

    IgnoredField = "NV0017", "ignored-field", Warning,
        "a field that has no effect on this step type",
"The field is valid in the format but the step's type never reads it (for example `prompt`
on a tool step, `timeout_seconds` on a tool step).

Wrong:   {\"id\": \"t\", \"type\": \"tool\", \"tool\": \"x\", \"prompt\": \"hi\"}
Right:   {\"id\": \"t\", \"type\": \"tool\", \"tool\": \"x\", \"args\": {\"text\": \"hi\"}}";

    SubstepType = "NV0018", "invalid-substep-type", Error,
        "a condition or parallel step inside a parallel step",
"Sub-steps of a parallel step run concurrently and have no control flow: only `llm` and
`tool` sub-steps are allowed.

Wrong:   {\"type\": \"parallel\", \"parallel_steps\": [{\"id\": \"c\", \"type\": \"condition\", ...}]}
Right:   run the condition as its own step after the parallel step";

    TerminalWithNext = "NV0019", "terminal-with-next-step", Error,
        "`is_terminal` and `next_step` on one step",
"The reference honours `next_step` when the step is a branch target and `is_terminal` when it
is reached in sequence (Q22), so the same step behaves two ways. Say which one you mean.

Wrong:   {\"id\": \"done\", ..., \"is_terminal\": true, \"next_step\": \"report\"}
Right:   {\"id\": \"done\", ..., \"is_terminal\": true}";

    DuplicateStepId = "NV0020", "duplicate-step-id", Error,
        "two steps share an id",
"Step ids name branch targets and step outputs, so they must be unique across the program,
parallel sub-steps included. References go to the first step with the id.

Wrong:   [{\"id\": \"a\", ...}, {\"id\": \"a\", ...}]
Right:   [{\"id\": \"a\", ...}, {\"id\": \"a2\", ...}]";

    MissingTarget = "NV0021", "missing-target", Error,
        "`then`, `otherwise` or `next_step` names no step",
"A jump to a step that does not exist fails the run when it is taken.

Wrong:   \"then\": \"aprove\"          (step `approve` exists)
Right:   \"then\": \"approve\"";

    Unreachable = "NV0022", "unreachable-step", Error,
        "a step that no run can execute",
"Steps run from `steps[0]`: after a step comes its `next_step`, else the next step in the array;
a condition jumps to `then`/`otherwise`; a step entered from a condition branch ends the run
after it unless it has `next_step` (the branch-leaf rule). A step no path reaches is dead code,
often a forgotten `next_step`.

Wrong:   [cond(then: yes, otherwise: no), yes, no, after]     (`after` never runs)
Right:   give `yes` and `no` a `\"next_step\": \"after\"`";

    UnboundedCycle = "NV0023", "unbounded-cycle", Error,
        "a loop with no `max_steps` to bound it",
"A cycle in the step graph (a polling loop, a retry-by-jump) may run forever. Set `max_steps`
on the program to bound it; the loop is then allowed (NV0024).

Wrong:   poll -> check(otherwise: poll)          without max_steps
Right:   the same with \"max_steps\": 50";

    BoundedCycle = "NV0024", "bounded-cycle", Warning,
        "a loop bounded only by `max_steps`",
"The loop is allowed because `max_steps` stops it, but a run that hits the bound ends with
`budget_exceeded` rather than success. Consider `max_stalled_steps` too.

Wrong:   (no exit from the loop but the budget)
Right:   poll -> check(then: done, otherwise: poll) with max_steps";

    BudgetNeverFinishes = "NV0025", "max-steps-too-small", Error,
        "`max_steps` is smaller than every path to the end",
"Every way through the program executes more steps than `max_steps` allows, so every run
ends with `budget_exceeded`.

Wrong:   3 steps in sequence with \"max_steps\": 2
Right:   \"max_steps\": 3";

    BudgetBelowLongest = "NV0026", "max-steps-below-longest-path", Warning,
        "`max_steps` is smaller than the longest path",
"Some paths (the one named in the diagnostic) execute more steps than `max_steps`; runs that
take them end with `budget_exceeded`.

Wrong:   a 6-step path with \"max_steps\": 5
Right:   \"max_steps\": 6";

    OneSidedCondition = "NV0027", "one-sided-condition", Warning,
        "a condition with only `then` or only `otherwise`",
"When the condition takes the missing branch the run fails with `condition_no_target`.

Wrong:   {\"type\": \"condition\", \"condition\": \"$ok\", \"then\": \"go\"}
Right:   {\"type\": \"condition\", \"condition\": \"$ok\", \"then\": \"go\", \"otherwise\": \"stop\"}";

    NoFailureTerminal = "NV0028", "no-failure-terminal", Note,
        "no reachable step that ends the run reads as a failure exit",
"A program that can only end in success has no clean way out on unusable input. A failure exit
is an ending step whose id or `allowed_outputs` contains a word such as fail, error, reject,
blocked, escalate or help (whole words, unlike the reference's substring match).

Wrong:   [classify, reply]
Right:   [classify, route(then: reply, otherwise: escalate_to_human)]";

    SkipOnCondition = "NV0029", "skip-on-condition", Warning,
        "`on_error: skip` on a condition step",
"When such a condition fails at run time it is skipped and the run falls through to the next
step in the array, ignoring both branches (Q25).

Wrong:   {\"type\": \"condition\", ..., \"on_error\": \"skip\"}
Right:   guard the value instead: \"$x != None and $x > 1\"";

    OutputKeyClash = "NV0031", "output-key-clash", Error,
        "an `output_key` equal to a step id or to another `output_key`",
"`$name` would mean two things: conditions and interpolation resolve such a clash in opposite
directions in the reference (Q11).

Wrong:   [{\"id\": \"summary\", ...}, {\"id\": \"s2\", \"output_key\": \"summary\", ...}]
Right:   {\"id\": \"s2\", \"output_key\": \"final_summary\", ...}";

    SubstepNoEffect = "NV0032", "substep-field-no-effect", Warning,
        "an `output_key` or `on_error` on a parallel sub-step",
"A sub-step's `output_key` is ignored and its `on_error` too (the parent's decides), except
for the `allowed_outputs` fallback (Q33, Q34). Read sub-step outputs as
`$parent.output.sub_id`, or `$sub_id`.

Wrong:   {\"id\": \"a\", \"type\": \"tool\", \"tool\": \"x\", \"output_key\": \"ax\"}   (inside parallel)
Right:   {\"id\": \"a\", \"type\": \"tool\", \"tool\": \"x\"}";

    Portability = "NV0033", "reference-portability", Note,
        "a reference the Python reference reads differently",
"nanovm reads `$step` as the step's output and `$step.field` as a field of it everywhere. In
the reference's conditions, a bare `$step` is an always-true wrapper and `$step.field`
(without `.output`) is `None` (Q9, Q12). Write `$step.output` to mean the same in both.

Wrong:   \"condition\": \"$classify == 'yes'\"
Right:   \"condition\": \"$classify.output == 'yes'\"";

    UnknownTool = "NV0034", "unknown-tool", Error,
        "a tool step names a tool the catalog does not have",
"When nanovm knows the tools a run can call (the tools declared in `nanovm.toml` or scripted
in a mocks file), every `tool` step, parallel sub-steps included, must name one of them: a
run fails such a step with `tool_not_registered`. The help names the closest tool and lists
some of the others. Without a catalog, tool names are not checked.

Wrong:   {\"id\": \"find\", \"type\": \"tool\", \"tool\": \"lokup\"}      (tool `lookup` exists)
Right:   {\"id\": \"find\", \"type\": \"tool\", \"tool\": \"lookup\"}";

    ToolNotAllowed = "NV0035", "tool-not-allowed", Error,
        "a tool step names a tool the policy denies",
"The tool exists but the policy does not allow it, so a run would refuse the call. The message
gives the rule that denies it. Allow the tool in the policy if the program may call it, or
call a tool the policy allows.

Wrong:   {\"id\": \"pay\", \"type\": \"tool\", \"tool\": \"refund\"}      (the policy denies `refund`)
Right:   {\"id\": \"pay\", \"type\": \"tool\", \"tool\": \"request_refund\"}      (a tool it allows)";

    NoLlm = "NV0036", "no-llm", Error,
        "an llm step, but nothing can answer it",
"The program has an `llm` step (parallel sub-steps included) and the run would have no language
model: `nanovm run` without an `[llm]` section in `nanovm.toml` or a mocks file, or the MCP
server without an `[llm]` section and with a client that does not offer sampling. The program
is rejected before anything runs; the help names what to configure.

Wrong:   {\"id\": \"ask\", \"type\": \"llm\", \"prompt\": \"...\"}      (no [llm] configured)
Right:   [llm]
         provider = \"openai\"
         base_url = \"https://api.openai.com/v1\"
         model = \"gpt-4o-mini\"
         api_key_env = \"OPENAI_API_KEY\"";

    UnexpectedChar = "NV0101", "unexpected-character", Error,
        "a character that is not part of the condition language",
"Every character of a condition is lexed; one that is not part of the language is an error at
its exact position (the reference silently skipped such characters, so `!$x` meant `$x`).

Wrong:   $a === 1        !$approved        $a && $b
Right:   $a == 1         not $approved     $a and $b";

    UnterminatedString = "NV0102", "unterminated-string",  Error,
        "a string literal without its closing quote",
"A string starts with ' or \" and ends with the same quote on the same condition.

Wrong:   $status == 'open
Right:   $status == 'open'";

    InvalidEscape = "NV0103", "invalid-escape", Error,
        "an escape sequence a string literal does not support",
"Inside a string literal a backslash starts an escape. Supported: \\\\ \\' \\\" \\n \\r \\t and
\\u{XXXX} (1 to 6 hex digits naming a Unicode scalar value).

Wrong:   $path == 'C:\\data'
Right:   $path == 'C:\\\\data'";

    MalformedNumber = "NV0104", "malformed-number", Error,
        "a number written in a form the language does not accept",
"Numbers are integers (`42`, `-7`) or decimals with digits on both sides of the point
(`0.5`, `-1.25`). There is no exponent syntax, no leading or trailing point, no unit suffix,
and the minus sign is written directly before the digits.

Wrong:   $n > .5      $n < 1e3      $w == 2kg      $t > - 5
Right:   $n > 0.5     $n < 1000     $w == 2        $t > -5";

    NumberOutOfRange = "NV0105", "number-out-of-range", Error,
        "an integer outside the 64-bit range or a decimal that is not finite",
"Integers must fit in a signed 64-bit integer (-9223372036854775808 to 9223372036854775807);
decimals must be finite.

Wrong:   $n > 99999999999999999999
Right:   $n > 9223372036854775807";

    UnexpectedToken = "NV0106", "unexpected-token", Error,
        "a token where the grammar does not allow it",
"The condition grammar is `or`/`and` chains of `not`-prefixed comparisons between operands
(variables, literals, parenthesised conditions). A token that does not fit is reported with
what was expected there.

Wrong:   $a $b        $a == == 1        $a == 1 $b
Right:   $a == $b     $a == 1           $a == 1 and $b";

    UnexpectedEnd = "NV0107", "unexpected-end", Error,
        "the condition ends where more was expected",
"The condition stops in the middle of a construct, e.g. after an operator.

Wrong:   $a and        $a ==        not
Right:   $a and $b     $a == 1      not $a";

    EmptyCondition = "NV0108", "empty-condition", Error,
        "a condition with no tokens at all",
"A condition must contain at least one operand. The empty string and a string of only
whitespace are rejected before anything runs.

Wrong:   \"\"
Right:   \"$ready\"";

    CallSyntax = "NV0109", "call-syntax", Error,
        "a method or function call; conditions cannot call anything",
"Conditions have no functions and no methods, so nothing a program carries can execute code.
`$x.lower()`, `$x.strip ()` and `len($x)` are rejected at the call.

Wrong:   $answer.lower() == 'yes'        len($items) > 0
Right:   $answer == 'yes' or $answer == 'YES'        $items";

    MixedLogic = "NV0110", "mixed-and-or", Error,
        "`and` and `or` mixed without parentheses",
"The reference gave `and` and `or` equal precedence and grouped left to right, unlike
Python, so `A or B and C` meant `(A or B) and C`. nanovm never decides this silently: write
the grouping you mean.

Wrong:   $a == 1 or $b == 1 and $c == 1
Right:   ($a == 1 or $b == 1) and $c == 1      $a == 1 or ($b == 1 and $c == 1)";

    ChainedComparison = "NV0111", "chained-comparison", Error,
        "two comparison operators in a row",
"Comparisons do not chain: `1 < $x < 10` is not a range test. Join two comparisons with
`and`.

Wrong:   1 < $x < 10
Right:   1 < $x and $x < 10";

    BareWord = "NV0112", "bare-word", Error,
        "a word that is neither a keyword, a `$variable` nor a quoted string",
"Words without `$` or quotes are keywords (`and or not in contains True False None true false
null`) or errors. Keywords are lower case (`True`/`False`/`None` may also be capitalised).

Wrong:   $status == approved       $a AND $b
Right:   $status == 'approved'     $a and $b";

    UnbalancedParen = "NV0113", "unbalanced-parenthesis", Error,
        "a `(` without its `)` or a `)` without its `(`",
"Parentheses group conditions and must balance.

Wrong:   ($a or $b and $c        $a == 1)
Right:   ($a or $b) and $c       $a == 1";

    UnknownVariable = "NV0201", "unknown-variable", Error,
        "a name that no step, output_key or declared input provides",
"When a program declares its `inputs`, every `$name` must be a step id, an `output_key` or a
declared input. Without `inputs`, unknown names come from the run context (see NV0202).

Wrong:   \"inputs\": {\"amount\": \"int\"} ... \"condition\": \"$amout > 10\"
Right:   \"inputs\": {\"amount\": \"int\"} ... \"condition\": \"$amount > 10\"";

    PossiblyMisspelled = "NV0202", "possibly-misspelled-name", Warning,
        "an unknown name that is close to a known one",
"A name that is not a step id, an `output_key` or a declared input is read from the run
context. When it is within two edits of a known name it is probably a typo: at run time it
would silently read `None`.

Wrong:   \"condition\": \"$clasify == 'yes'\"     (step `classify` exists)
Right:   \"condition\": \"$classify == 'yes'\"";

    UnknownStep = "NV0203", "unknown-step", Error,
        "`$name.output` where `name` is not a step",
"`$name.output...` reads the output of step `name`. With declared `inputs`, a root that is no
step, `output_key` or input is an error.

Wrong:   \"condition\": \"$clasify.output == 'yes'\"
Right:   \"condition\": \"$classify.output == 'yes'\"";

    StepNeverRan = "NV0204", "step-not-yet-run", Error,
        "a reference to a step that cannot have run before this point",
"On every path that reaches this condition, the referenced step has not run yet, so the
reference always reads `None`.

Wrong:   steps: [check: \"$fetch.output.ok\"] then [fetch]
Right:   steps: [fetch] then [check: \"$fetch.output.ok\"]";

    StepMaybeNotRan = "NV0205", "step-may-not-have-run", Warning,
        "a reference to a step that has not run on some path to this point",
"Some path reaches this condition without running the referenced step; on that path the
reference reads `None`. Compare with `None` first if that is intended.

Wrong:   \"$maybe.output.ok\"
Right:   \"$maybe.output != None and $maybe.output.ok\"";

    NoSuchField = "NV0206", "no-such-field", Error,
        "a field that the value's known type does not have",
"The type of the value is known (a tool's output schema, an `inputs` declaration) and has no
such field; the read would always be `None`.

Wrong:   $lookup.output.amout > 10      (output schema has `amount`)
Right:   $lookup.output.amount > 10";

    OperatorTypes = "NV0207", "operator-not-defined", Error,
        "an operator applied to types it is not defined for",
"Ordering (`< <= > >=`) is defined between numbers, between strings and between lists; `in`
needs a string, list or object on the right (and a string on the left of a string). Anything
else fails at run time, so when the types are known it is rejected before.

Wrong:   5 in 'abc5'        'b' > 1        None < 3
Right:   '5' in 'abc5'      'b' > 'a'      $n != None and $n < 3";

    NotInEnum = "NV0208", "literal-not-in-allowed-outputs", Error,
        "a comparison of an `allowed_outputs` value with a string outside the set",
"The step's output is one of its `allowed_outputs`, so comparing it with another string is
always false (or always true for `!=`).

Wrong:   allowed_outputs [\"yes\",\"no\"] ... \"$classify == 'Yes'\"
Right:   allowed_outputs [\"yes\",\"no\"] ... \"$classify == 'yes'\"";

    ConstantComparison = "NV0209", "constant-comparison", Warning,
        "a comparison that is always true or always false",
"The types (or values) of both sides decide the result before anything runs, e.g. a string is
never equal to an integer. The branch that cannot be taken is still checked.

Wrong:   $code == 200        (code is a string)        1 == 1
Right:   $code == '200'";

    TooLong = "NV0301", "condition-too-long", Error,
        "the condition is longer than the limit",
"A condition may be at most 4096 bytes (configurable). Long conditions usually mean logic that
belongs in steps.

Wrong:   a 10 KiB condition
Right:   split the decision into several condition steps";

    TooDeep = "NV0302", "nesting-too-deep", Error,
        "parentheses and `not`s nested deeper than the limit",
"Nesting depth counts open parentheses plus stacked `not`s; the limit is 64 (configurable).

Wrong:   ((((((((...$a...))))))))      (65 levels)
Right:   $a";

    TooManyOperators = "NV0303", "too-many-operators", Error,
        "more operators than the limit",
"A condition may use at most 256 operators (`and or not == != < <= > >= in contains`);
configurable.

Wrong:   $a == 1 or ... (300 comparisons)
Right:   '$a' in a list value prepared by a step";

    RuntimeType = "NV0401", "runtime-type-error", Error,
        "an operator met values it is not defined for at run time",
"With `any`-typed values the check happens at run time: ordering a string against a number,
ordering against `None`, or `in` on a non-container fails the step (as in the reference).

Wrong:   $code > 100        (code = '200')
Right:   $code == '200'";

    FuelExhausted = "NV0402", "fuel-exhausted", Error,
        "evaluation used more instructions than its fuel",
"Every compiled condition has a static cost (instructions on its longest path) and the VM never
runs more; this error appears only when a caller sets a fuel limit below that cost.

Wrong:   nanovm eval --fuel 1 '$a and $b'
Right:   nanovm eval '$a and $b'";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_sorted() {
        let all: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        let mut sorted = all.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(all, sorted);
        for c in Code::ALL {
            assert!(c.info().explanation.contains("Wrong:"), "{c}");
            assert!(c.info().explanation.contains("Right:"), "{c}");
            assert_eq!(Code::parse(c.as_str()), Some(*c));
        }
        assert_eq!(Code::parse("0101"), Some(Code::UnexpectedChar));
        assert_eq!(Code::parse("nv0209"), Some(Code::ConstantComparison));
        assert_eq!(Code::parse("NV9999"), None);
    }
}
