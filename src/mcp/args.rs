//! The tools' arguments and structured results, as Rust types: their JSON Schemas (schemars)
//! are the tools' input and output schemas. `program`'s schema is
//! `grammar/program.schema.json` itself.

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::borrow::Cow;

/// The Program format's JSON Schema (the file editors use too).
const PROGRAM_SCHEMA: &str = include_str!("../../grammar/program.schema.json");

/// A Program, as a JSON object. Its schema is `grammar/program.schema.json`: the schema's
/// `$defs` join the tool schema's `$defs` under the same names, so its `$ref`s stay valid.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProgramArg(pub Value);

impl JsonSchema for ProgramArg {
    fn schema_name() -> Cow<'static, str> {
        "Program".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let Ok(Value::Object(mut root)) = serde_json::from_str::<Value>(PROGRAM_SCHEMA) else {
            // The file is compiled in and tested (tests/schema.rs); this is unreachable.
            return Schema::from(true);
        };
        root.remove("$schema");
        root.remove("$id");
        if let Some(Value::Object(defs)) = root.remove("$defs") {
            let target = generator.definitions_mut();
            for (name, def) in defs {
                target.insert(name, def);
            }
        }
        Schema::from(root)
    }
}

/// `check_program`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckArgs {
    /// The program to check.
    pub program: ProgramArg,
}

/// `run_program`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunArgs {
    /// The program to run. It is checked first; a program with errors is rejected and nothing
    /// runs.
    pub program: ProgramArg,
    /// The run's initial data: `$name` in conditions, prompts and args reads `context.name`.
    /// A value written `{"$secret": "..."}` goes to the vault: state, traces and the audit
    /// log hold `vault://secret/<id>` instead, and only tools receive the real value.
    #[serde(default)]
    pub context: Option<Map<String, Value>>,
    /// Save the program under this name (`list_programs` shows it).
    #[serde(default)]
    pub save_as: Option<String>,
    /// Run at most once per key: a key whose run ended returns that run's result without
    /// running again; a key whose run is still going waits for it.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// Arguments naming one run.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TraceArgs {
    /// The run's id (`trace_id` in `run_program`'s result).
    pub trace_id: String,
}

/// `list_programs`' arguments.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// At most this many programs, newest first (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Arguments naming one saved program.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgramIdArgs {
    /// The program's id (`program_id` in `run_program`'s result or `list_programs`).
    pub program_id: String,
}

/// Who resumes a suspended run.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResumeSource {
    #[default]
    Webhook,
    Operator,
    Timer,
}

/// `resume_program`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeArgs {
    /// The suspended run's id.
    pub trace_id: String,
    /// The answer the suspended step was waiting for: the resumed run reads it as
    /// `$__webhook__` (the suspended step's own output stays "PENDING").
    #[serde(default)]
    pub payload: Option<Value>,
    /// Who resumes the run (recorded in the trace).
    #[serde(default)]
    pub source: Option<ResumeSource>,
}

/// `verify_trace`'s arguments.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyArgs {
    /// The run whose audit chain to verify; omit it to verify every run.
    #[serde(default)]
    pub trace_id: Option<String>,
}

/// `erase_secret`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EraseArgs {
    /// The secret's reference, `vault://secret/<id>` (or just the id).
    pub reference: String,
}

/// The values a condition reads.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalContext {
    /// Step outputs by step id (`$classify` reads `step_outputs.classify`).
    #[serde(default)]
    pub step_outputs: Map<String, Value>,
    /// Run data (`$amount` reads `data.amount` when no step is called `amount`).
    #[serde(default)]
    pub data: Map<String, Value>,
}

/// `evaluate_expression`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalArgs {
    /// A condition, e.g. `$classify.output == 'refund' and $amount > 100`.
    pub expression: String,
    /// The values it reads.
    #[serde(default)]
    pub context: Option<EvalContext>,
}

/// `check_program`'s result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CheckResult {
    /// No errors: `run_program` would accept the program.
    pub valid: bool,
    pub errors: usize,
    pub warnings: usize,
    /// Every problem: `code`, `severity`, `message`, the step id, the JSON `pointer` into the
    /// program, line/column in the program as pretty-printed by the server, and `help`.
    pub diagnostics: Vec<Value>,
}

/// `run_program`'s and `resume_program`'s result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RunResult {
    /// The run's id: `get_trace`, `verify_trace` and `resume_program` take it.
    pub trace_id: String,
    /// The program's id (sha256 of its canonical JSON): `get_program` takes it.
    pub program_id: String,
    /// `success`, `failed`, `suspended`, `budget_exceeded` or `stalled`.
    pub status: String,
    /// How many step records the trace has (parallel sub-steps included).
    pub steps: usize,
    /// Cost in USD reported by the LLM, when it reports one.
    pub cost: Option<f64>,
    pub total_tokens: u64,
    pub final_output: Value,
    /// Why the run did not succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The step waiting for `resume_program`, when suspended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspended_step_id: Option<String>,
    /// The idempotency key's stored result was returned: nothing ran.
    pub replayed: bool,
    /// Warnings of the check (the program ran anyway).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Value>,
}

/// `evaluate_expression`'s result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EvalResult {
    pub value: bool,
    /// Fuel the VM used (one unit per instruction executed).
    pub fuel_used: u32,
    /// The expression's static cost bound: the VM never uses more.
    pub fuel_bound: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Value>,
}

/// `verify_trace`'s result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct VerifyResult {
    /// Every chain verified is intact.
    pub ok: bool,
    pub runs: Vec<Value>,
}
