//! The deterministic runtime (DESIGN §5): runs a [`CheckedProgram`](crate::check::CheckedProgram)
//! with a context, an LLM adapter and a tool registry, and produces a trace.

pub mod adapter;
pub mod mock;
pub mod openai;
pub mod tools;
