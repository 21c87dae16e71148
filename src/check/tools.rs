//! Tool names against the catalog: every `tool` step, parallel sub-steps included, must name
//! a tool the catalog has (NV0034) and the policy allows (NV0035). Without a catalog nothing
//! is checked here.

use super::catalog::Catalog;
use super::{Checker, all_steps};
use crate::diagnostics::{Code, Diagnostic, did_you_mean, edit_distance};
use crate::program::StepType;
use std::collections::HashMap;

/// How many tool names a help lists.
const LISTED: usize = 5;

pub(super) fn check_tools(c: &mut Checker<'_>, catalog: &Catalog) {
    let p = c.p;
    // One suggestion and listing per distinct unknown name (the check stays linear).
    let mut advice: HashMap<&str, (Option<&str>, String)> = HashMap::new();
    for (_, s) in all_steps(p) {
        if s.step_type() != Some(StepType::Tool) {
            continue;
        }
        let Some(tool) = &s.tool else { continue };
        let name = tool.value.as_str();
        let d = match catalog.get(name) {
            Some(info) => match &info.allowed {
                Ok(()) => continue,
                Err(reason) => Diagnostic::new(
                    Code::ToolNotAllowed,
                    tool.span,
                    format!("tool `{name}` is not allowed: {reason}"),
                )
                .with_label("the policy denies this tool")
                .with_help("allow the tool in the policy, or call a tool it allows"),
            },
            None => {
                let (suggestion, listing) = advice
                    .entry(name)
                    .or_insert_with(|| (suggest(name, catalog), listing(name, catalog)))
                    .clone();
                let d = Diagnostic::new(
                    Code::UnknownTool,
                    tool.span,
                    format!("unknown tool `{name}`"),
                )
                .with_label("the tool catalog has no tool of this name");
                match suggestion {
                    Some(m) => d
                        .with_help(format!("did you mean `{m}`?"))
                        .with_note(listing),
                    None => d.with_help(listing),
                }
            }
        };
        c.push(s, Some("tool"), d);
    }
}

/// Every llm step, parallel sub-steps included, when the run has no LLM (NV0036).
pub(super) fn check_llm(c: &mut Checker<'_>, help: &str) {
    let p = c.p;
    for (_, s) in all_steps(p) {
        if s.step_type() != Some(StepType::Llm) {
            continue;
        }
        let span = s.kind.as_ref().map_or(s.span, |t| t.span);
        let d = Diagnostic::new(
            Code::NoLlm,
            span,
            match s.id_str() {
                Some(id) => format!("step `{id}` is an llm step, but no LLM is configured"),
                None => "an llm step, but no LLM is configured".to_owned(),
            },
        )
        .with_label("nothing can answer this step")
        .with_help(help.to_owned());
        c.push(s, Some("type"), d);
    }
}

/// The closest tool name within an edit budget that grows with the name's length.
fn suggest<'c>(name: &str, catalog: &'c Catalog) -> Option<&'c str> {
    let max = match name.chars().count() {
        0..=3 => 1,
        4..=7 => 2,
        _ => 3,
    };
    did_you_mean(name, catalog.names(), max)
}

/// "available tools: …": every tool when there are few, else the closest few.
fn listing(name: &str, catalog: &Catalog) -> String {
    if catalog.is_empty() {
        return "the tool catalog is empty: no tool step can run".to_owned();
    }
    let mut names: Vec<&str> = catalog.names().collect();
    if names.len() <= LISTED + 1 {
        let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
        return format!("available tools: {}", quoted.join(", "));
    }
    // Closest first (ties in name order: `names` is sorted and the sort is stable).
    names.sort_by_cached_key(|n| edit_distance(name, n));
    let total = names.len();
    let quoted: Vec<String> = names
        .iter()
        .take(LISTED)
        .map(|n| format!("`{n}`"))
        .collect();
    format!(
        "available tools include {} ({total} in all)",
        quoted.join(", ")
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::super::catalog::{ToolInfo, type_from_schema};
    use super::super::{Options, Report, check_source};
    use super::*;
    use crate::expr::types::Type;
    use serde_json::json;
    use std::sync::Arc;

    fn catalog() -> Catalog {
        let mut c = Catalog::new();
        c.insert(
            "lookup",
            ToolInfo {
                allowed: Ok(()),
                output: type_from_schema(&json!({
                    "type": "object", "required": ["amount"],
                    "properties": {"amount": {"type": "integer"}}
                })),
            },
        );
        c.insert(
            "refund",
            ToolInfo {
                allowed: Err("capability `payments` is denied".to_owned()),
                output: Type::Any,
            },
        );
        for name in ["notify", "escalate"] {
            c.insert(name, ToolInfo::default());
        }
        c
    }

    fn check(text: &str, catalog: Option<Catalog>) -> Report {
        let opts = Options {
            catalog: catalog.map(Arc::new),
            ..Options::default()
        };
        check_source(text, &opts)
    }

    fn program(steps: &str) -> String {
        format!(
            r#"{{"steps": [{steps},
            {{"id": "escalate_to_human", "type": "tool", "tool": "escalate", "is_terminal": true}}]}}"#
        )
    }

    /// (code, help, text at the span) of every diagnostic.
    fn found(text: &str, r: &Report) -> Vec<(Code, String, String)> {
        r.diagnostics
            .iter()
            .map(|d| {
                (
                    d.code,
                    d.help.clone().unwrap_or_default(),
                    text[d.span.start..d.span.end].to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn unknown_tool_with_suggestion_and_listing() {
        let text = program(r#"{"id": "find", "type": "tool", "tool": "lokup"}"#);
        let r = check(&text, Some(catalog()));
        assert_eq!(
            found(&text, &r),
            vec![(
                Code::UnknownTool,
                "did you mean `lookup`?".to_owned(),
                "\"lokup\"".to_owned()
            )]
        );
        let d = &r.diagnostics[0];
        assert_eq!(d.message, "unknown tool `lokup`");
        assert_eq!(d.pointer.as_deref(), Some("/steps/0/tool"));
        assert_eq!(d.step_id.as_deref(), Some("find"));
        assert_eq!(
            d.notes,
            vec!["available tools: `escalate`, `lookup`, `notify`, `refund`"]
        );
        assert!(r.checked.is_none());
    }

    #[test]
    fn unknown_tool_without_suggestion_lists_the_closest() {
        let mut c = catalog();
        for name in ["a1", "b2", "c3", "fax"] {
            c.insert(name, ToolInfo::default());
        }
        let text = program(r#"{"id": "find", "type": "tool", "tool": "telefax"}"#);
        let r = check(&text, Some(c));
        let d = &r.diagnostics[0];
        assert_eq!(d.code, Code::UnknownTool);
        assert!(d.notes.is_empty());
        assert_eq!(
            d.help.as_deref(),
            Some("available tools include `fax`, `a1`, `notify`, `refund`, `b2` (8 in all)")
        );
    }

    #[test]
    fn denied_tool() {
        let text = program(r#"{"id": "pay", "type": "tool", "tool": "refund"}"#);
        let r = check(&text, Some(catalog()));
        assert_eq!(r.diagnostics.len(), 1, "{:?}", r.diagnostics);
        let d = &r.diagnostics[0];
        assert_eq!(d.code, Code::ToolNotAllowed);
        assert_eq!(
            d.message,
            "tool `refund` is not allowed: capability `payments` is denied"
        );
        assert_eq!(&text[d.span.start..d.span.end], "\"refund\"");
    }

    #[test]
    fn substep_tools_are_checked() {
        let text = program(
            r#"{"id": "fan", "type": "parallel", "parallel_steps": [
                {"id": "a", "type": "tool", "tool": "lookup"},
                {"id": "b", "type": "tool", "tool": "notfy"},
                {"id": "c", "type": "tool", "tool": "refund"}
            ]}"#,
        );
        let r = check(&text, Some(catalog()));
        let got: Vec<(Code, Option<&str>)> = r
            .diagnostics
            .iter()
            .map(|d| (d.code, d.pointer.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Code::UnknownTool, Some("/steps/0/parallel_steps/1/tool")),
                (Code::ToolNotAllowed, Some("/steps/0/parallel_steps/2/tool")),
            ]
        );
        assert_eq!(
            r.diagnostics[0].help.as_deref(),
            Some("did you mean `notify`?")
        );
    }

    /// A typo of a field of a tool's typed output, in a condition, a prompt and an arg.
    const TYPO: &str = r#"
        {"id": "lookup", "type": "tool", "tool": "lookup"},
        {"id": "ask", "type": "llm", "prompt": "Refund $lookup.amout?"},
        {"id": "pay", "type": "tool", "tool": "notify", "args": {"n": ["$lookup.output.amout"]}},
        {"id": "route", "type": "condition", "condition": "$lookup.output.amout > 1", "then": "done", "otherwise": "escalate_to_human"},
        {"id": "done", "type": "tool", "tool": "notify", "is_terminal": true}"#;

    #[test]
    fn typed_output_field_typos() {
        let text = program(TYPO);
        let r = check(&text, Some(catalog()));
        assert_eq!(
            found(&text, &r),
            vec![
                (
                    Code::NoSuchField,
                    "did you mean `$lookup.amount`?".to_owned(),
                    "amout".to_owned()
                ),
                (
                    Code::NoSuchField,
                    "did you mean `$lookup.output.amount`?".to_owned(),
                    "amout".to_owned()
                ),
                (
                    Code::NoSuchField,
                    "did you mean `$lookup.output.amount`?".to_owned(),
                    "amout".to_owned()
                ),
            ]
        );
        let pointers: Vec<&str> = r
            .diagnostics
            .iter()
            .filter_map(|d| d.pointer.as_deref())
            .collect();
        assert_eq!(
            pointers,
            ["/steps/1/prompt", "/steps/2/args/n/0", "/steps/3/condition"]
        );
    }

    #[test]
    fn typed_output_comparisons() {
        let text = program(
            r#"{"id": "lookup", "type": "tool", "tool": "lookup"},
            {"id": "route", "type": "condition", "condition": "$lookup.output.amount == 'x'", "then": "done", "otherwise": "escalate_to_human"},
            {"id": "done", "type": "tool", "tool": "notify", "is_terminal": true}"#,
        );
        let r = check(&text, Some(catalog()));
        let codes: Vec<Code> = r.diagnostics.iter().map(|d| d.code).collect();
        assert_eq!(codes, vec![Code::ConstantComparison]);
        assert_eq!(
            r.diagnostics[0].message,
            "`==` compares `int` with `str`: always false"
        );
    }

    #[test]
    fn substep_outputs_are_typed() {
        let text = program(
            r#"{"id": "fan", "type": "parallel", "parallel_steps": [
                {"id": "a", "type": "tool", "tool": "lookup"},
                {"id": "b", "type": "tool", "tool": "notify"}
            ]},
            {"id": "route", "type": "condition", "condition": "$a.output.amout > 1 or $fan.output.a.amout > 1 or $fan.output.zzz", "then": "done", "otherwise": "escalate_to_human"},
            {"id": "done", "type": "tool", "tool": "notify", "is_terminal": true}"#,
        );
        let r = check(&text, Some(catalog()));
        let helps: Vec<(Code, Option<&str>)> = r
            .diagnostics
            .iter()
            .map(|d| (d.code, d.help.as_deref()))
            .collect();
        assert_eq!(
            helps,
            vec![
                (Code::NoSuchField, Some("did you mean `$a.output.amount`?")),
                (
                    Code::NoSuchField,
                    Some("did you mean `$fan.output.a.amount`?")
                ),
                (Code::NoSuchField, None),
            ]
        );
    }

    #[test]
    fn large_parallel_steps_have_untyped_outputs() {
        let subs: Vec<String> = (0..65)
            .map(|i| format!(r#"{{"id": "s{i}", "type": "tool", "tool": "lookup"}}"#))
            .collect();
        let text = program(&format!(
            r#"{{"id": "fan", "type": "parallel", "parallel_steps": [{}]}},
            {{"id": "route", "type": "condition", "condition": "$fan.output.zzz or $s64.output.amout > 1", "then": "done", "otherwise": "escalate_to_human"}},
            {{"id": "done", "type": "tool", "tool": "notify", "is_terminal": true}}"#,
            subs.join(",")
        ));
        let r = check(&text, Some(catalog()));
        let helps: Vec<Option<&str>> = r.diagnostics.iter().map(|d| d.help.as_deref()).collect();
        assert_eq!(helps, vec![Some("did you mean `$s64.output.amount`?")]);
    }

    #[test]
    fn skipped_steps_keep_any() {
        // `on_error: skip` on the step, or on the parallel step of a sub-step: the output may
        // be `None`, so its fields are not judged.
        let text = program(
            r#"{"id": "lookup", "type": "tool", "tool": "lookup", "on_error": "skip"},
            {"id": "fan", "type": "parallel", "on_error": "skip", "parallel_steps": [
                {"id": "a", "type": "tool", "tool": "lookup"}
            ]},
            {"id": "route", "type": "condition", "condition": "$lookup.output.amout > 1 or $a.output.amout > 1 or $fan.output.x", "then": "done", "otherwise": "escalate_to_human"},
            {"id": "done", "type": "tool", "tool": "notify", "is_terminal": true}"#,
        );
        let r = check(&text, Some(catalog()));
        assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics);
    }

    #[test]
    fn without_a_catalog_tools_are_not_checked() {
        let text = program(&format!(
            r#"{TYPO},
            {{"id": "x", "type": "tool", "tool": "lokup"}},
            {{"id": "fan", "type": "parallel", "parallel_steps": [{{"id": "y", "type": "tool", "tool": "refund"}}]}}"#
        ));
        let r = check(&text, None);
        // `x` and `fan` follow a terminal step: unreachable, and nothing else.
        let codes: Vec<Code> = r.diagnostics.iter().map(|d| d.code).collect();
        assert_eq!(codes, vec![Code::Unreachable, Code::Unreachable]);
        // With the catalog: the same program has the typos and the tool errors too.
        let with = check(&text, Some(catalog()));
        let codes: Vec<Code> = with.diagnostics.iter().map(|d| d.code).collect();
        assert!(codes.contains(&Code::UnknownTool) && codes.contains(&Code::ToolNotAllowed));
        assert_eq!(codes.iter().filter(|c| **c == Code::NoSuchField).count(), 3);
    }

    #[test]
    fn an_empty_catalog_says_so() {
        let text = program(r#"{"id": "find", "type": "tool", "tool": "lookup"}"#);
        let r = check(&text, Some(Catalog::new()));
        // `escalate` is unknown too.
        assert_eq!(r.diagnostics.len(), 2);
        assert_eq!(
            r.diagnostics[0].help.as_deref(),
            Some("the tool catalog is empty: no tool step can run")
        );
    }
}
