//! What the checker knows about the tools a run can call (from `nanovm.toml` or a mocks
//! file): which names exist, whether the policy allows each, and the type of each tool's
//! output (from its output JSON Schema). Without a catalog, tool names are not checked and
//! tool outputs are `any`.

use crate::expr::types::Type;
use std::collections::BTreeMap;

/// One tool as the checker sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolInfo {
    /// `Err(reason)` when the policy denies the tool (the reason names the rule).
    pub allowed: Result<(), String>,
    /// The type of the tool's output (`any` without an output schema).
    pub output: Type,
}

impl Default for ToolInfo {
    fn default() -> Self {
        Self {
            allowed: Ok(()),
            output: Type::Any,
        }
    }
}

/// The tools a run can call, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    tools: BTreeMap<String, ToolInfo>,
}

impl Catalog {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: impl Into<String>, info: ToolInfo) {
        self.tools.insert(name.into(), info);
    }

    pub fn get(&self, name: &str) -> Option<&ToolInfo> {
        self.tools.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tools.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.tools.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }
}

/// The type a JSON Schema describes, as far as the condition types can say it: `string`
/// (with `enum`: the enum), `integer`, `number` (float), `boolean`, `null`, `array` (of its
/// `items`) and `object` with `properties` (a record: a field the schema lacks is a check
/// error; a property that is not `required` is `any`, as it may be absent). Anything else
/// (several types, `anyOf`, `$ref`, no `type`) is `any`.
pub fn type_from_schema(schema: &serde_json::Value) -> Type {
    type_at(schema, 0)
}

fn type_at(schema: &serde_json::Value, depth: usize) -> Type {
    use serde_json::Value;
    const MAX_DEPTH: usize = 32;
    let Value::Object(s) = schema else {
        return Type::Any;
    };
    if depth > MAX_DEPTH {
        return Type::Any;
    }
    match s.get("type").and_then(Value::as_str) {
        Some("string") => match s.get("enum").and_then(Value::as_array) {
            Some(vs) if !vs.is_empty() && vs.iter().all(Value::is_string) => {
                Type::Enum(std::sync::Arc::new(
                    vs.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect(),
                ))
            }
            _ => Type::Str,
        },
        Some("integer") => Type::Int,
        Some("number") => Type::Float,
        Some("boolean") => Type::Bool,
        Some("null") => Type::Null,
        Some("array") => Type::List(Box::new(
            s.get("items")
                .map_or(Type::Any, |items| type_at(items, depth + 1)),
        )),
        Some("object") => {
            let Some(props) = s.get("properties").and_then(Value::as_object) else {
                return Type::Any;
            };
            let required: Vec<&str> = s
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            Type::Record(
                props
                    .iter()
                    .map(|(k, v)| {
                        let t = if required.contains(&k.as_str()) {
                            type_at(v, depth + 1)
                        } else {
                            Type::Any
                        };
                        (k.clone(), t)
                    })
                    .collect(),
            )
        }
        _ => Type::Any,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schema_types() {
        let t = type_from_schema(&json!({
            "type": "object", "required": ["amount", "tags", "state"],
            "properties": {
                "amount": {"type": "integer"},
                "note": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "state": {"type": "string", "enum": ["open", "closed"]}
            }
        }));
        assert_eq!(
            t.to_string(),
            r#"{amount: int, note: any, state: "closed" | "open", tags: list<str>}"#
        );
        assert_eq!(
            type_from_schema(&json!({"type": ["string", "null"]})),
            Type::Any
        );
        assert_eq!(type_from_schema(&json!({"type": "object"})), Type::Any);
        assert_eq!(type_from_schema(&json!(true)), Type::Any);
    }
}
