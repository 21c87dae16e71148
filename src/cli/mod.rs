//! The command line: thin over the library. Exit codes: 0 success, 1 the input has errors
//! (or the condition failed at run time), 2 usage or I/O error.

mod check;
mod config;
mod eval;
mod run;
mod serve;
mod store;

pub use check::{GraphFormat, render_graph};

use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "nanovm",
    version,
    about = "Check and run LLM agent workflow programs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check program files: schema, step graph, references and conditions.
    Check(check::CheckArgs),
    /// Draw a program's step graph (Mermaid or Graphviz DOT).
    Graph(check::GraphArgs),
    /// Check a program, then run it with the configured (or mocked) LLM and tools.
    Run(run::RunArgs),
    /// Resume a suspended run with a payload.
    Resume(store::ResumeArgs),
    /// Show or list stored runs.
    #[command(subcommand)]
    Trace(store::TraceCommand),
    /// Verify the audit chains of stored runs.
    #[command(subcommand)]
    Audit(store::AuditCommand),
    /// Erase a secret from the vault (`vault://secret/<id>` or the id); chains stay valid.
    Erase {
        reference: String,
        #[command(flatten)]
        db: store::DbArgs,
    },
    /// Serve the MCP tools (check, run, traces, audit) over stdio or Streamable HTTP.
    Serve(serve::ServeArgs),
    /// Evaluate one condition against a context in the sandboxed VM.
    Eval(eval::EvalArgs),
    /// Print the long explanation of a diagnostic code (e.g. NV0110), or list every code.
    Explain {
        /// A code such as NV0110; omit to list all codes.
        code: Option<String>,
    },
}

/// Output formats shared by commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
}

/// Colour choice for human output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    fn enabled_for_stderr(self) -> bool {
        self.enabled(std::io::stderr().is_terminal())
    }

    fn enabled_for_stdout(self) -> bool {
        self.enabled(std::io::stdout().is_terminal())
    }

    fn enabled(self, terminal: bool) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => std::env::var_os("NO_COLOR").is_none() && terminal,
        }
    }
}

pub const EXIT_OK: u8 = 0;
pub const EXIT_INVALID: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    ExitCode::from(match cli.command {
        Command::Check(args) => check::run(&args),
        Command::Graph(args) => check::graph(&args),
        Command::Run(args) => run::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Resume(args) => store::resume(&args),
        Command::Trace(cmd) => store::trace(&cmd),
        Command::Audit(cmd) => store::audit(&cmd),
        Command::Erase { reference, db } => store::erase(&reference, &db),
        Command::Eval(args) => eval::run(&args),
        Command::Explain { code } => explain(code.as_deref()),
    })
}

fn explain(code: Option<&str>) -> u8 {
    use crate::diagnostics::Code;
    match code {
        None => {
            for c in Code::ALL {
                let i = c.info();
                println!(
                    "{}  {:<8} {:<32} {}",
                    i.code,
                    i.severity.as_str(),
                    i.name,
                    i.summary
                );
            }
            EXIT_OK
        }
        Some(text) => match Code::parse(text) {
            Some(c) => {
                let i = c.info();
                println!(
                    "{} ({}, {}): {}\n\n{}",
                    i.code,
                    i.name,
                    i.severity.as_str(),
                    i.summary,
                    i.explanation
                );
                EXIT_OK
            }
            None => {
                eprintln!("error: unknown diagnostic code `{text}`; `nanovm explain` lists them");
                EXIT_USAGE
            }
        },
    }
}
