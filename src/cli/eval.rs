//! `nanovm eval EXPR [--context FILE] [--format human|json] [--disasm]`.

use super::{ColorChoice, EXIT_INVALID, EXIT_OK, EXIT_USAGE, Format};
use crate::diagnostics::render_json::to_json_all;
use crate::diagnostics::render_text::{TextOptions, render};
use crate::diagnostics::{Diagnostic, Severity};
use crate::expr::names::Context;
use crate::expr::{Limits, analyze, class_of, env_from_context, runtime_diagnostic};
use crate::source::SourceFile;
use clap::Args;
use serde_json::json;
use std::path::PathBuf;

/// Largest context file accepted.
const MAX_CONTEXT_BYTES: u64 = 8 * 1024 * 1024;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The condition, e.g. "$classify.output == 'yes' and $amount > 100".
    expr: String,
    /// A JSON file {"step_outputs": {...}, "data": {...}}; `-` reads standard input.
    #[arg(long, short)]
    context: Option<PathBuf>,
    #[arg(long, short, value_enum, default_value = "human")]
    format: Format,
    /// Print the verified bytecode before the value.
    #[arg(long)]
    disasm: bool,
    #[arg(long, value_enum, default_value = "auto")]
    color: ColorChoice,
}

fn load_context(path: &PathBuf) -> Result<Context, String> {
    let bytes = if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(std::io::stdin(), MAX_CONTEXT_BYTES + 1),
            &mut buf,
        )
        .map_err(|e| format!("cannot read standard input: {e}"))?;
        buf
    } else {
        let meta =
            std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if meta.len() > MAX_CONTEXT_BYTES {
            return Err(format!(
                "{} is {} bytes; the context limit is {MAX_CONTEXT_BYTES}",
                path.display(),
                meta.len()
            ));
        }
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?
    };
    if bytes.len() as u64 > MAX_CONTEXT_BYTES {
        return Err(format!(
            "the context is larger than {MAX_CONTEXT_BYTES} bytes"
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "{}: not a context of the form {{\"step_outputs\": {{…}}, \"data\": {{…}}}}: {e}",
            path.display()
        )
    })
}

pub fn run(args: &EvalArgs) -> u8 {
    let ctx = match &args.context {
        Some(p) => match load_context(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_USAGE;
            }
        },
        None => Context::default(),
    };
    let source = SourceFile::new("<condition>", args.expr.clone());
    let analysis = analyze(&args.expr, &env_from_context(&ctx), &Limits::default());
    let color = args.color.enabled_for_stderr();
    let Some(cond) = analysis.condition else {
        let class = class_of(&analysis.diagnostics);
        report(
            args.format,
            &source,
            &analysis.diagnostics,
            color,
            |diags| json!({"error": class, "diagnostics": diags}),
        );
        return EXIT_INVALID;
    };
    let warnings = analysis.diagnostics;
    if args.disasm && args.format == Format::Human {
        print!("{}", cond.disassemble());
    }
    match cond.eval(&ctx) {
        Ok(out) => {
            match args.format {
                Format::Human => {
                    if !warnings.is_empty() {
                        eprint!("{}", render(&warnings, &source, TextOptions { color }));
                    }
                    println!("{}", out.value);
                }
                Format::Json => {
                    let mut doc = json!({
                        "value": out.value,
                        "fuel": out.fuel_used,
                        "cost": cond.cost(),
                        "diagnostics": to_json_all(&warnings, &source),
                    });
                    if let (true, Some(obj)) = (args.disasm, doc.as_object_mut()) {
                        obj.insert("disasm".to_owned(), json!(cond.disassemble()));
                    }
                    println!("{doc}");
                }
            }
            EXIT_OK
        }
        Err(err) => {
            let mut diags = warnings;
            diags.push(runtime_diagnostic(&err));
            let class = class_of(&diags);
            report(
                args.format,
                &source,
                &diags,
                color,
                |d| json!({"error": class, "diagnostics": d}),
            );
            EXIT_INVALID
        }
    }
}

fn report(
    format: Format,
    source: &SourceFile,
    diags: &[Diagnostic],
    color: bool,
    doc: impl FnOnce(Vec<crate::diagnostics::render_json::JsonDiagnostic>) -> serde_json::Value,
) {
    match format {
        Format::Human => {
            eprint!("{}", render(diags, source, TextOptions { color }));
            let errors = diags
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count();
            eprintln!(
                "{errors} error{} in the condition",
                if errors == 1 { "" } else { "s" }
            );
        }
        Format::Json => println!("{}", doc(to_json_all(diags, source))),
    }
}
