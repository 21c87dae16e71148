//! The deterministic runtime (DESIGN §5): runs a [`CheckedProgram`](crate::check::CheckedProgram)
//! with a context, an LLM adapter and a tool registry, and produces a [`Trace`].
//!
//! ```text
//! CheckedProgram ─► Runnable (texts and args prepared) ─► Runtime::run ─► Outcome { Trace, Cursor? }
//! ```
//!
//! Control flow comes only from the checker's step graph; conditions run as verified bytecode;
//! every executed step is recorded with the hash of the state after it.

pub mod adapter;
pub mod canon;
pub mod mock;
pub mod native;
pub mod openai;
mod plan;
mod run;
pub mod secrets;
pub mod setup;
pub mod state;
pub mod tools;
pub mod trace;

pub use plan::Runnable;
pub use run::{Continue, Cursor, Observer, Outcome, ResumeError, RunOptions, Runtime, Source};
pub use state::State;
pub use trace::{ErrorClass, Failure, Status, StepRecord, StepStatus, Trace};
