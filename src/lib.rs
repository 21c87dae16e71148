//! nanovm: check and run LLM agent workflow programs.
#![forbid(unsafe_code)]

pub mod check;
pub mod cli;
pub mod diagnostics;
pub mod exec;
pub mod expr;
pub mod json;
pub mod mcp;
pub mod program;
pub mod source;
pub mod store;
