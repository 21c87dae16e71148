//! `nanovm run`: check a program with the tool catalog, then run it and print the trace.

use super::check::{Input, check_file, display_name, read_limited};
use super::{ColorChoice, EXIT_INVALID, EXIT_OK, EXIT_USAGE, Format};
use crate::check::Options;
use crate::diagnostics::render_json::to_json_all;
use crate::diagnostics::render_text::{TextOptions, render};
use crate::diagnostics::{Severity, has_errors};
use crate::exec::adapter::Llm;
use crate::exec::mock::Mocks;
use crate::exec::secrets::{self, SecretTools};
use crate::exec::setup::Adapters;
use crate::exec::{Observer, RunOptions, Runnable, Runtime, Status, StepRecord, StepStatus, Trace};
use crate::store::{Content, RunRequest};
use clap::Args;
use serde_json::{Map, Value, json};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The program file (`-` reads standard input).
    file: PathBuf,
    /// A JSON object: the run's initial data (`$name` in the program). Values written
    /// `{"$secret": VALUE}` go to the vault (see the README).
    #[arg(long)]
    context: Option<PathBuf>,
    #[command(flatten)]
    adapters: AdapterArgs,
    #[command(flatten)]
    db: super::store::DbArgs,
    /// Do not store the run (no database is opened).
    #[arg(long, conflicts_with = "idempotency_key")]
    no_db: bool,
    /// Run at most once per key: a key whose run ended gives that run's stored trace back
    /// without running; a key whose run is still going waits for it.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Colour for diagnostics.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
}

/// Where a run's LLM and tools come from.
#[derive(Debug, Args)]
pub struct AdapterArgs {
    /// Scripted tools and LLM replies (the conformance `mocks` format); they replace the
    /// config's tools and LLM.
    #[arg(long)]
    mocks: Option<PathBuf>,
    /// The LLM, tools and policy (default: `$NANOVM_CONFIG`, else `./nanovm.toml` when it
    /// exists; `--config none` for none).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Delay before the first retry of a step with `on_error: retry`, in milliseconds; each
    /// further retry doubles it (at most 30 times this).
    #[arg(long, default_value_t = 1000)]
    pub(super) retry_backoff_ms: u64,
}

/// Limit for context and mocks files.
const MAX_JSON_FILE: usize = 8 * 1024 * 1024;

pub(super) fn read_json(path: &Path, what: &str) -> Result<Value, String> {
    let name = display_name(path);
    let bytes = match read_limited(path, MAX_JSON_FILE) {
        Ok(Input::Bytes(b)) => b,
        Ok(Input::TooLarge(size)) => {
            return Err(format!(
                "the {what} file `{name}` is {size} bytes, over the limit of {MAX_JSON_FILE}"
            ));
        }
        Err(e) => return Err(format!("cannot read the {what} file `{name}`: {e}")),
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| format!("the {what} file `{name}` is not valid JSON: {e}"))
}

/// The adapters and catalog of a run: `--mocks`, else the config file, else none.
pub(super) fn setup(args: &AdapterArgs) -> Result<Adapters, String> {
    if let Some(path) = &args.mocks {
        let mocks = Mocks::from_value(read_json(path, "mocks")?)
            .map_err(|e| format!("`{}`: {e}", display_name(path)))?;
        return Ok(Adapters::from_mocks(&mocks));
    }
    match super::config::load(args.config.as_deref()).map_err(|e| e.to_string())? {
        None => Ok(Adapters::none()),
        Some(config) => Adapters::from_config(&config).map_err(|e| e.to_string()),
    }
}

/// The check options of a run with these adapters: their catalog, and NV0036 for llm steps
/// when there is no LLM.
pub(super) fn check_options(setup: &Adapters) -> Options {
    Options {
        catalog: Some(setup.catalog.clone()),
        no_llm: setup.llm.is_none().then(|| {
            "add an [llm] section to nanovm.toml (e.g. provider = \"openai\"), or pass --mocks"
                .to_owned()
        }),
        ..Options::default()
    }
}

pub fn run(args: &RunArgs) -> u8 {
    let setup = match setup(&args.adapters) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let policy = setup.policy_snapshot();
    let opts = check_options(&setup);
    let checked = check_file(&args.file, &opts);
    if checked.io_error {
        for d in &checked.diagnostics {
            eprintln!("error: {}", d.message);
        }
        return EXIT_USAGE;
    }
    let color = args.color.enabled_for_stderr();
    let warnings: Vec<_> = checked
        .diagnostics
        .iter()
        .filter(|d| d.severity != Severity::Note)
        .cloned()
        .collect();
    let Some(program) = checked
        .checked
        .filter(|_| !has_errors(&checked.diagnostics))
    else {
        match args.format {
            Format::Human => {
                eprint!(
                    "{}",
                    render(&checked.diagnostics, &checked.source, TextOptions { color })
                );
                if !setup.configured {
                    eprintln!(
                        "note: no tool catalog: pass --mocks FILE, or --config nanovm.toml (or put one in the current directory)"
                    );
                }
                eprintln!(
                    "{}: rejected, the program does not pass `nanovm check`; nothing ran",
                    checked.source.name()
                );
            }
            Format::Json => println!(
                "{}",
                json!({
                    "file": checked.source.name(),
                    "valid": false,
                    "diagnostics": to_json_all(&checked.diagnostics, &checked.source),
                })
            ),
        }
        return EXIT_INVALID;
    };
    if args.format == Format::Human && !warnings.is_empty() {
        eprint!(
            "{}",
            render(&warnings, &checked.source, TextOptions { color })
        );
    }
    let out = (|| -> Result<u8, String> {
        let mut context = match &args.context {
            None => Map::new(),
            Some(path) => match read_json(path, "context")? {
                Value::Object(m) => m,
                other => {
                    return Err(format!(
                        "the context file `{}` must hold a JSON object, not {}",
                        display_name(path),
                        crate::json::describe(&other)
                    ));
                }
            },
        };
        let runtime = runtime_for(setup, args.format, &args.adapters);
        let runnable = Runnable::new(program);
        let store = if args.no_db {
            None
        } else {
            Some(super::store::open(args.db.db_path_flag(), true)?)
        };
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"))?;
        let work = async {
            match &store {
                None => {
                    // Without a vault the secrets stay in memory, for this run's tools only.
                    let found = secrets::extract(&mut context).map_err(|e| e.to_string())?;
                    let runtime = if found.is_empty() {
                        runtime
                    } else {
                        let values = found.into_iter().map(|s| (s.id, Some(s.value))).collect();
                        let tools = SecretTools::new(runtime.tools().clone(), values);
                        runtime.clone().with_tools(Arc::new(tools))
                    };
                    let outcome = runtime.run(&runnable, context).await;
                    Ok::<_, String>((outcome.trace, None))
                }
                Some(store) => {
                    let program: Value = serde_json::from_str(checked.source.text())
                        .map_err(|e| format!("the program is not valid JSON: {e}"))?;
                    let req = RunRequest {
                        program: Content::of(&program),
                        context,
                        policy: Content::of(&policy),
                        idempotency_key: args.idempotency_key.clone(),
                        save_as: None,
                    };
                    let p = store
                        .run(&runtime, &runnable, req)
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok((p.trace, Some((p.replayed, p.took_over))))
                }
            }
        };
        // Ctrl-C drops the run, which kills any tool process it started.
        let done = tokio.block_on(async {
            tokio::select! {
                out = work => Some(out),
                _ = tokio::signal::ctrl_c() => None,
            }
        });
        let Some(done) = done else {
            if args.format == Format::Human && std::io::stderr().is_terminal() {
                eprint!("\r\x1b[2K");
            }
            eprintln!("interrupted: the run was stopped (tool processes were killed)");
            return Ok(130);
        };
        let (trace, persisted) = done?;
        if args.format == Format::Human
            && let (Some(store), Some((replayed, took_over))) = (&store, &persisted)
        {
            let key = args.idempotency_key.as_deref().unwrap_or_default();
            if *replayed {
                eprintln!(
                    "idempotency key `{key}`: the stored result of run {}; nothing ran",
                    trace.trace_id
                );
            }
            if let Some(old) = took_over {
                eprintln!(
                    "idempotency key `{key}`: run {old} was interrupted (its process died); ran again"
                );
            }
            eprintln!(
                "run {} stored in {}",
                trace.trace_id,
                store.path().display()
            );
        }
        Ok(print_trace(&trace, args.format))
    })();
    out.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        EXIT_USAGE
    })
}

/// The runtime for a checked program: its LLM, tools, retry backoff and the progress line.
/// The check (NV0036) made sure a program with llm steps has an LLM.
pub(super) fn runtime_for(setup: Adapters, format: Format, adapters: &AdapterArgs) -> Runtime {
    let llm: Arc<dyn Llm> = setup
        .llm
        .unwrap_or_else(|| Arc::new(crate::exec::mock::MockLlm::default()));
    let progress = format == Format::Human && std::io::stderr().is_terminal();
    let base = Duration::from_millis(adapters.retry_backoff_ms);
    let options = RunOptions {
        backoff_base: base,
        backoff_max: base.saturating_mul(30),
        observer: progress.then(|| Arc::new(Progress) as Arc<dyn Observer>),
    };
    Runtime::new(llm, setup.tools).with_options(options)
}

/// Print a trace; the exit code follows its status.
pub(super) fn print_trace(trace: &Trace, format: Format) -> u8 {
    match format {
        Format::Json => match serde_json::to_string_pretty(trace) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: cannot write the trace: {e}");
                return EXIT_USAGE;
            }
        },
        Format::Human => print!("{}", table(trace)),
    }
    match trace.status {
        Status::Success | Status::Suspended => EXIT_OK,
        Status::Failed | Status::BudgetExceeded | Status::Stalled => EXIT_INVALID,
    }
}

/// A one-line preview of a value: compact JSON, at most `max` characters.
fn preview(v: &Value, max: usize) -> String {
    let s = match v {
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        other => other.to_string(),
    };
    let s = s.replace(['\n', '\r', '\t'], " ");
    if s.chars().count() <= max {
        return s;
    }
    let cut: String = s.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

/// The human trace: one row per step, then the outcome.
pub fn table(t: &Trace) -> String {
    let width = t
        .steps
        .iter()
        .map(|s| s.step_id.chars().count() + if s.parent.is_some() { 2 } else { 0 })
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "{:>3}  {:<width$}  {:<8}  {:>9}  output\n",
        "#", "step", "status", "time"
    );
    let mut n = 0;
    for s in &t.steps {
        let (num, name) = match &s.parent {
            Some(_) => (String::new(), format!("  {}", s.step_id)),
            None => {
                n += 1;
                (n.to_string(), s.step_id.clone())
            }
        };
        let detail = match (&s.status, &s.error) {
            (StepStatus::Failed | StepStatus::Skipped, Some(e)) => format!(
                "error: {}",
                preview(&Value::String(e.clone()), 70).trim_matches('"')
            ),
            _ => preview(&s.output, 70),
        };
        let detail = match s.retries {
            0 => detail,
            1 => format!("{detail}  (after 1 retry)"),
            r => format!("{detail}  (after {r} retries)"),
        };
        out.push_str(&format!(
            "{num:>3}  {name:<width$}  {:<8}  {:>7.1}ms  {detail}\n",
            s.status.as_str(),
            s.duration_ms
        ));
    }
    out.push_str(&format!(
        "\n{}: {} in {:.1} ms, {} step(s)",
        t.program_name,
        t.status.as_str(),
        t.duration_ms,
        n
    ));
    if t.total_tokens > 0 {
        out.push_str(&format!(", {} tokens", t.total_tokens));
    }
    if let Some(c) = t.cost_usd {
        out.push_str(&format!(", ${c:.6}"));
    }
    out.push('\n');
    match t.status {
        Status::Success => out.push_str(&format!(
            "final output: {}\n",
            preview(&t.final_output, 200)
        )),
        Status::Suspended => out.push_str(&format!(
            "suspended at step '{}' (a tool answered PENDING)\n",
            t.suspended_step_id.as_deref().unwrap_or_default()
        )),
        _ => {
            if let Some(e) = &t.error {
                out.push_str(&format!("error: {e}\n"));
            }
        }
    }
    out
}

/// The progress line on a terminal.
#[derive(Debug)]
struct Progress;

impl Observer for Progress {
    fn step_started(&self, step_id: &str, number: u64) {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K  [{number}] running {step_id} …");
        let _ = err.flush();
    }

    fn step_finished(&self, record: &StepRecord) {
        if record.parent.is_none() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}
