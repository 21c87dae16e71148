//! `nanovm check` and `nanovm graph`: read files, run the checker, print in the chosen format.

use super::{ColorChoice, EXIT_INVALID, EXIT_OK, EXIT_USAGE};
use crate::check::{GraphView, Options, check_bytes};
use crate::diagnostics::render_github::to_github;
use crate::diagnostics::render_json::to_json_all;
use crate::diagnostics::render_sarif::to_sarif;
use crate::diagnostics::render_text::{TextOptions, render};
use crate::diagnostics::{Code, Diagnostic, Severity};
use crate::source::{SourceFile, Span};
use clap::{Args, ValueEnum};
use serde_json::json;
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckFormat {
    /// Rendered diagnostics with source excerpts.
    Human,
    /// One JSON document per file (JSON Lines with several files).
    Json,
    /// One SARIF 2.1.0 log for all files.
    Sarif,
    /// GitHub Actions annotations.
    Github,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Program files to check (`-` reads standard input).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = CheckFormat::Human)]
    format: CheckFormat,
    /// Exit with 1 when there are warnings, too.
    #[arg(long)]
    deny_warnings: bool,
    /// Colour for human output.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
    /// Check tool steps against the tools and policy of this config file (default:
    /// `$NANOVM_CONFIG`, else `./nanovm.toml` when it exists; `--config none` for no catalog).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Mermaid,
    Dot,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    /// The program file (`-` reads standard input).
    file: PathBuf,
    #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
    format: GraphFormat,
}

/// One checked file.
pub(super) struct Checked {
    pub(super) source: SourceFile,
    pub(super) diagnostics: Vec<Diagnostic>,
    pub(super) io_error: bool,
    graph: Option<GraphView>,
    pub(super) checked: Option<crate::check::CheckedProgram>,
}

pub(super) fn display_name(path: &Path) -> String {
    if path.as_os_str() == "-" {
        "<stdin>".to_owned()
    } else {
        path.display().to_string()
    }
}

/// What reading a file gave: its bytes, or its size when it is over the limit.
pub(super) enum Input {
    Bytes(Vec<u8>),
    TooLarge(u64),
}

pub(super) fn read_limited(path: &Path, limit: usize) -> Result<Input, String> {
    let mut buf = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let size = if path.as_os_str() == "-" {
        std::io::stdin()
            .take(cap)
            .read_to_end(&mut buf)
            .map_err(|e| e.to_string())?;
        buf.len() as u64
    } else {
        let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
        if meta.is_dir() {
            return Err("it is a directory".to_owned());
        }
        let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
        file.take(cap)
            .read_to_end(&mut buf)
            .map_err(|e| e.to_string())?;
        meta.len().max(buf.len() as u64)
    };
    if buf.len() > limit {
        return Ok(Input::TooLarge(size));
    }
    Ok(Input::Bytes(buf))
}

pub(super) fn check_file(path: &Path, opts: &Options) -> Checked {
    let name = display_name(path);
    let io = |message: String| Checked {
        source: SourceFile::new(name.clone(), String::new()),
        diagnostics: vec![
            Diagnostic::new(Code::Io, Span::point(0), message)
                .with_help("pass the path of a program file"),
        ],
        io_error: true,
        graph: None,
        checked: None,
    };
    match read_limited(path, opts.json.max_bytes) {
        Err(e) => io(format!("cannot read `{name}`: {e}")),
        Ok(Input::TooLarge(size)) => Checked {
            source: SourceFile::new(name.clone(), String::new()),
            diagnostics: vec![crate::json::too_large(
                &format!("`{name}`"),
                size,
                opts.json.max_bytes,
            )],
            io_error: false,
            graph: None,
            checked: None,
        },
        Ok(Input::Bytes(bytes)) => {
            let (report, lossy) = check_bytes(&bytes, opts);
            let text = match lossy {
                Some(t) => t,
                None => String::from_utf8(bytes).unwrap_or_default(),
            };
            Checked {
                source: SourceFile::new(name, text),
                diagnostics: report.diagnostics,
                io_error: false,
                graph: report.graph,
                checked: report.checked,
            }
        }
    }
}

fn count(d: &[Diagnostic], s: Severity) -> usize {
    d.iter().filter(|x| x.severity == s).count()
}

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

pub fn run(args: &CheckArgs) -> u8 {
    let mut opts = Options::default();
    match super::config::load(args.config.as_deref()) {
        Ok(Some(config)) => opts.catalog = Some(std::sync::Arc::new(config.catalog())),
        Ok(None) => {}
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    }
    let files: Vec<Checked> = args.files.iter().map(|p| check_file(p, &opts)).collect();
    let color = args.color.enabled_for_stdout();
    match args.format {
        CheckFormat::Human => {
            for f in &files {
                let (e, w, n) = (
                    count(&f.diagnostics, Severity::Error),
                    count(&f.diagnostics, Severity::Warning),
                    count(&f.diagnostics, Severity::Note),
                );
                if f.io_error {
                    for d in &f.diagnostics {
                        println!("error[{}]: {}", d.code, d.message);
                    }
                    continue;
                }
                if !f.diagnostics.is_empty() {
                    print!(
                        "{}",
                        render(&f.diagnostics, &f.source, TextOptions { color })
                    );
                }
                let verdict = if e == 0 { "valid" } else { "invalid" };
                println!(
                    "{}: {verdict} ({}, {}, {})",
                    f.source.name(),
                    plural(e, "error"),
                    plural(w, "warning"),
                    plural(n, "note")
                );
            }
        }
        CheckFormat::Json => {
            for f in &files {
                let doc = json!({
                    "file": f.source.name(),
                    "valid": count(&f.diagnostics, Severity::Error) == 0,
                    "errors": count(&f.diagnostics, Severity::Error),
                    "warnings": count(&f.diagnostics, Severity::Warning),
                    "diagnostics": to_json_all(&f.diagnostics, &f.source),
                });
                println!("{doc}");
            }
        }
        CheckFormat::Sarif => {
            let parts: Vec<(&SourceFile, &[Diagnostic])> = files
                .iter()
                .map(|f| (&f.source, f.diagnostics.as_slice()))
                .collect();
            let log = to_sarif(&parts);
            println!(
                "{}",
                serde_json::to_string_pretty(&log).unwrap_or_else(|_| log.to_string())
            );
        }
        CheckFormat::Github => {
            for f in &files {
                print!("{}", to_github(&f.diagnostics, &f.source));
            }
        }
    }
    if files.iter().any(|f| f.io_error) {
        return EXIT_USAGE;
    }
    let failed = files.iter().any(|f| {
        count(&f.diagnostics, Severity::Error) > 0
            || (args.deny_warnings && count(&f.diagnostics, Severity::Warning) > 0)
    });
    if failed { EXIT_INVALID } else { EXIT_OK }
}

fn mermaid_text(s: &str) -> String {
    s.replace('"', "#quot;")
}

fn dot_text(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

pub fn render_graph(g: &GraphView, format: GraphFormat) -> String {
    let mut out = String::new();
    match format {
        GraphFormat::Mermaid => {
            out.push_str("flowchart TD\n");
            for (i, s) in g.steps.iter().enumerate() {
                let label = mermaid_text(&format!("{} ({})", s.id, s.kind));
                let shape = if s.kind == "condition" {
                    format!("s{i}{{\"{label}\"}}")
                } else {
                    format!("s{i}[\"{label}\"]")
                };
                out.push_str(&format!("    {shape}\n"));
                if !s.reachable {
                    out.push_str(&format!("    class s{i} unreachable\n"));
                }
            }
            out.push_str("    start((start)) --> s0\n");
            for e in &g.edges {
                if e.label == "next" {
                    out.push_str(&format!("    s{} --> s{}\n", e.from, e.to));
                } else {
                    out.push_str(&format!("    s{} -->|{}| s{}\n", e.from, e.label, e.to));
                }
            }
            for (i, s) in g.steps.iter().enumerate() {
                if s.ends {
                    out.push_str(&format!("    s{i} --> done((end))\n"));
                }
            }
            out.push_str("    classDef unreachable stroke-dasharray: 5 5,color:#999\n");
        }
        GraphFormat::Dot => {
            out.push_str("digraph program {\n    rankdir=TB;\n    start [shape=circle, label=\"start\"];\n    done [shape=doublecircle, label=\"end\"];\n");
            for (i, s) in g.steps.iter().enumerate() {
                let shape = if s.kind == "condition" {
                    "diamond"
                } else {
                    "box"
                };
                let style = if s.reachable {
                    ""
                } else {
                    ", style=dashed, fontcolor=gray"
                };
                out.push_str(&format!(
                    "    s{i} [shape={shape}, label=\"{} ({})\"{style}];\n",
                    dot_text(&s.id),
                    s.kind
                ));
            }
            out.push_str("    start -> s0;\n");
            for e in &g.edges {
                if e.label == "next" {
                    out.push_str(&format!("    s{} -> s{};\n", e.from, e.to));
                } else {
                    out.push_str(&format!(
                        "    s{} -> s{} [label=\"{}\"];\n",
                        e.from, e.to, e.label
                    ));
                }
            }
            for (i, s) in g.steps.iter().enumerate() {
                if s.ends {
                    out.push_str(&format!("    s{i} -> done;\n"));
                }
            }
            out.push_str("}\n");
        }
    }
    out
}

pub fn graph(args: &GraphArgs) -> u8 {
    let f = check_file(&args.file, &Options::default());
    if f.io_error {
        for d in &f.diagnostics {
            eprintln!("error[{}]: {}", d.code, d.message);
        }
        return EXIT_USAGE;
    }
    let errors = count(&f.diagnostics, Severity::Error);
    match &f.graph {
        Some(g) => {
            print!("{}", render_graph(g, args.format));
            if errors > 0 {
                eprintln!(
                    "{}: {} (run `nanovm check` for details)",
                    f.source.name(),
                    plural(errors, "error")
                );
            }
            EXIT_OK
        }
        None => {
            eprint!(
                "{}",
                render(&f.diagnostics, &f.source, TextOptions { color: false })
            );
            eprintln!("{}: the step graph cannot be built", f.source.name());
            EXIT_INVALID
        }
    }
}
