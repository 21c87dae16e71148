//! The database options and the commands over the store: `trace show|list`, `audit verify`,
//! `erase`, `resume`.

use super::run::{AdapterArgs, check_options, print_trace, runtime_for, setup};
use super::{ColorChoice, EXIT_INVALID, EXIT_OK, EXIT_USAGE, Format};
use crate::check::check_source;
use crate::diagnostics::has_errors;
use crate::diagnostics::render_text::{TextOptions, render};
use crate::exec::{Runnable, Source};
use crate::source::SourceFile;
use crate::store::{Erasure, Store, StoreOptions, Synchronous};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// Where runs are stored.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// The database file (default: `$NANOVM_DB`, else `./nanovm.db`).
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,
}

impl DbArgs {
    pub fn db_path_flag(&self) -> Option<&PathBuf> {
        self.db.as_ref()
    }
}

/// The database path: `--db`, `$NANOVM_DB` (or the reference's `$NANO_VM_MCP_DB`), `nanovm.db`.
pub fn db_path(flag: Option<&PathBuf>) -> PathBuf {
    if let Some(p) = flag {
        return p.clone();
    }
    for var in ["NANOVM_DB", "NANO_VM_MCP_DB"] {
        if let Some(v) = std::env::var_os(var)
            && !v.is_empty()
        {
            return PathBuf::from(v);
        }
    }
    PathBuf::from("nanovm.db")
}

/// Store options from the environment: `NANOVM_DB_SYNC` (`normal`|`full`) and
/// `NANOVM_LEASE_MS`.
fn store_options() -> Result<StoreOptions, String> {
    let mut opts = StoreOptions::default();
    if let Ok(v) = std::env::var("NANOVM_DB_SYNC") {
        opts.synchronous = match v.to_ascii_lowercase().as_str() {
            "normal" | "" => Synchronous::Normal,
            "full" => Synchronous::Full,
            other => {
                return Err(format!(
                    "NANOVM_DB_SYNC is `{other}`; it can be `normal` or `full`"
                ));
            }
        };
    }
    if let Ok(v) = std::env::var("NANOVM_LEASE_MS") {
        let ms: u64 = v
            .parse()
            .ok()
            .filter(|ms| (50..=3_600_000).contains(ms))
            .ok_or_else(|| {
                format!("NANOVM_LEASE_MS is `{v}`; it is milliseconds from 50 to 3600000")
            })?;
        opts.lease = Duration::from_millis(ms);
    }
    Ok(opts)
}

/// Open the store; `create` false refuses a file that does not exist.
pub fn open(flag: Option<&PathBuf>, create: bool) -> Result<Store, String> {
    let path = db_path(flag);
    if !create && !path.exists() {
        return Err(format!(
            "there is no database at `{}` (pass --db FILE or set NANOVM_DB)",
            path.display()
        ));
    }
    let opts = store_options()?;
    Store::open(&path, opts).map_err(|e| e.to_string())
}

fn tokio() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

#[derive(Debug, Subcommand)]
pub enum TraceCommand {
    /// Print a stored run's trace.
    Show {
        run_id: String,
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List stored runs, newest first.
    List {
        /// At most this many runs.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        #[command(flatten)]
        db: DbArgs,
    },
}

pub fn trace(cmd: &TraceCommand) -> u8 {
    match cmd {
        TraceCommand::Show { run_id, format, db } => {
            let out = (|| -> Result<u8, String> {
                let store = open(db.db.as_ref(), false)?;
                let rt = tokio()?;
                let trace = rt
                    .block_on(store.get_trace(run_id))
                    .map_err(|e| e.to_string())?;
                let Some(trace) = trace else {
                    let summary = rt
                        .block_on(store.run_summary(run_id))
                        .map_err(|e| e.to_string())?;
                    return match summary {
                        None => Err(format!("no run `{run_id}` in `{}`", store.path().display())),
                        Some(s) => {
                            eprintln!(
                                "run `{run_id}` is {} ({} step envelope(s) so far); it has no trace yet",
                                s.status, s.envelopes
                            );
                            Ok(EXIT_INVALID)
                        }
                    };
                };
                let trace: crate::exec::Trace = serde_json::from_value(trace)
                    .map_err(|e| format!("the stored trace is unreadable: {e}"))?;
                Ok(print_trace(&trace, *format))
            })();
            out.unwrap_or_else(|e| {
                eprintln!("error: {e}");
                EXIT_USAGE
            })
        }
        TraceCommand::List { limit, format, db } => {
            let out = (|| -> Result<u8, String> {
                let store = open(db.db.as_ref(), false)?;
                let runs = tokio()?
                    .block_on(store.list_runs(*limit))
                    .map_err(|e| e.to_string())?;
                match format {
                    Format::Json => println!("{}", json!(runs)),
                    Format::Human => {
                        if runs.is_empty() && *limit > 0 {
                            println!("no runs in `{}`", store.path().display());
                        }
                        for r in &runs {
                            println!(
                                "{}  {:<16}  {:<15}  {:>4} step(s)  {}{}",
                                r.run_id,
                                r.program_name,
                                r.status,
                                r.envelopes,
                                r.started_at,
                                r.idempotency_key
                                    .as_deref()
                                    .map(|k| format!("  key {k}"))
                                    .unwrap_or_default()
                            );
                        }
                    }
                }
                Ok(EXIT_OK)
            })();
            out.unwrap_or_else(|e| {
                eprintln!("error: {e}");
                EXIT_USAGE
            })
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the envelope chain of a run (or of every run) and report the first broken
    /// link. Exit 1 when a chain is broken.
    Verify {
        /// The run to verify.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        run_id: Option<String>,
        /// Verify every run.
        #[arg(long)]
        all: bool,
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        #[command(flatten)]
        db: DbArgs,
    },
}

pub fn audit(cmd: &AuditCommand) -> u8 {
    let AuditCommand::Verify {
        run_id,
        all: _,
        format,
        db,
    } = cmd;
    let out = (|| -> Result<u8, String> {
        let store = open(db.db.as_ref(), false)?;
        let started = std::time::Instant::now();
        let verdicts = tokio()?
            .block_on(store.verify(run_id.as_deref()))
            .map_err(|e| e.to_string())?;
        let elapsed = started.elapsed();
        let broken = verdicts.iter().filter(|v| v.broken.is_some()).count();
        let envelopes: u64 = verdicts.iter().map(|v| v.envelopes).sum();
        match format {
            Format::Json => println!(
                "{}",
                json!({
                    "ok": broken == 0,
                    "runs": verdicts.len(),
                    "envelopes": envelopes,
                    "broken": verdicts.iter().filter(|v| v.broken.is_some()).collect::<Vec<_>>(),
                })
            ),
            Format::Human => {
                for v in verdicts.iter().filter(|v| v.broken.is_some()) {
                    if let Some(b) = &v.broken {
                        println!("run {}: BROKEN: {b}", v.run_id);
                    }
                }
                println!(
                    "{}: {} run(s), {envelopes} envelope(s) checked in {:.1} ms; {}",
                    store.path().display(),
                    verdicts.len(),
                    elapsed.as_secs_f64() * 1000.0,
                    if broken == 0 {
                        "every chain is intact".to_owned()
                    } else {
                        format!("{broken} broken chain(s)")
                    }
                );
            }
        }
        Ok(if broken == 0 { EXIT_OK } else { EXIT_INVALID })
    })();
    out.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        EXIT_USAGE
    })
}

/// `nanovm erase REF`.
pub fn erase(reference: &str, db: &DbArgs) -> u8 {
    let out = (|| -> Result<u8, String> {
        let store = open(db.db.as_ref(), false)?;
        let done = tokio()?
            .block_on(store.erase(reference))
            .map_err(|e| e.to_string())?;
        match done {
            Erasure::Erased => println!(
                "erased {reference}: its value is gone; traces show [REDACTED_TOMBSTONE] in its place"
            ),
            Erasure::AlreadyErased => println!("{reference} was already erased"),
        }
        Ok(EXIT_OK)
    })();
    out.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        EXIT_USAGE
    })
}

/// Who resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceArg {
    Webhook,
    Operator,
    Timer,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The suspended run.
    run_id: String,
    /// A JSON file: the payload, data key `__webhook__` of the resumed run (default null).
    #[arg(long)]
    payload: Option<PathBuf>,
    /// Who resumes: data key `__webhook_source__`.
    #[arg(long, value_enum, default_value_t = SourceArg::Webhook)]
    source: SourceArg,
    #[command(flatten)]
    adapters: AdapterArgs,
    #[command(flatten)]
    db: DbArgs,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Colour for diagnostics.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
}

pub fn resume(args: &ResumeArgs) -> u8 {
    let out = (|| -> Result<u8, String> {
        let setup = setup(&args.adapters)?;
        let store = open(args.db.db.as_ref(), false)?;
        let rt = tokio()?;
        let stored = rt
            .block_on(store.program_of_run(&args.run_id))
            .map_err(|e| e.to_string())?;
        let report = check_source(&stored.source, &check_options(&setup));
        let Some(program) = report.checked.filter(|_| !has_errors(&report.diagnostics)) else {
            let source = SourceFile::new(
                format!("program {} of run {}", stored.name, args.run_id),
                stored.source.clone(),
            );
            let color = args.color.enabled_for_stderr();
            eprint!(
                "{}",
                render(&report.diagnostics, &source, TextOptions { color })
            );
            eprintln!(
                "the run's program does not pass `nanovm check` with this configuration; nothing ran"
            );
            return Ok(EXIT_INVALID);
        };
        let payload = match &args.payload {
            None => Value::Null,
            Some(p) => super::run::read_json(p, "payload")?,
        };
        let runtime = runtime_for(setup, args.format, &args.adapters);
        let runnable = Runnable::new(program);
        let source = match args.source {
            SourceArg::Webhook => Source::Webhook,
            SourceArg::Operator => Source::Operator,
            SourceArg::Timer => Source::Timer,
        };
        let done = rt.block_on(async {
            tokio::select! {
                out = store.resume(&runtime, &runnable, &args.run_id, payload, source) => Some(out),
                _ = tokio::signal::ctrl_c() => None,
            }
        });
        let Some(done) = done else {
            eprintln!("interrupted: the run was stopped (tool processes were killed)");
            return Ok(130);
        };
        let persisted = done.map_err(|e| e.to_string())?;
        Ok(print_trace(&persisted.trace, args.format))
    })();
    out.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        EXIT_USAGE
    })
}
