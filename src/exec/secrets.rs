//! Secrets (capability refs). A context value `{"$secret": VALUE}` (optionally with `"id"`) is
//! taken out of the context before the run ([`extract`]) and replaced by the token
//! `vault://secret/<id>`: state, prompts, traces and audit envelopes only ever hold the token.
//! [`SecretTools`] wraps a tool registry: at call time, tokens in the arguments become the real
//! values, and the real values in a tool's answer (or error) become tokens again.
//!
//! Where the values are kept (the store's vault) is not this module's business: it gets them
//! as a map, `None` for a secret that was erased.

use super::adapter::{BoxFuture, CallError, Tools};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// What a secret looks like in state: this prefix and the secret's id.
pub const TOKEN_PREFIX: &str = "vault://secret/";

/// What a projection shows in place of an erased secret's token.
pub const TOMBSTONE: &str = "[REDACTED_TOMBSTONE]";

/// The longest secret id.
pub const MAX_ID_LEN: usize = 128;

/// A secret taken out of a context.
#[derive(Clone, PartialEq)]
pub struct Secret {
    pub id: String,
    pub value: Value,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("id", &self.id)
            .field("value", &"<redacted>")
            .finish()
    }
}

impl Secret {
    pub fn token(&self) -> String {
        token(&self.id)
    }
}

/// The token of a secret id.
pub fn token(id: &str) -> String {
    format!("{TOKEN_PREFIX}{id}")
}

/// A malformed `{"$secret": …}` object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("{pointer}: a secret object has only `$secret` and an optional `id`; found `{key}`")]
    ExtraKey { pointer: String, key: String },
    #[error(
        "{pointer}: a secret id is 1 to {MAX_ID_LEN} characters of A-Z a-z 0-9 . _ -, not {id}"
    )]
    BadId { pointer: String, id: String },
    #[error("{pointer}: the secret id `{id}` is given twice")]
    Duplicate { pointer: String, id: String },
}

/// Whether a secret id is well-formed.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Take every `{"$secret": VALUE, "id"?: ID}` out of a context, replacing it with its token.
/// Secrets without an id get a random one.
pub fn extract(context: &mut Map<String, Value>) -> Result<Vec<Secret>, SecretError> {
    let mut found = Vec::new();
    for (k, v) in context.iter_mut() {
        // Most contexts hold no secret: look before building the pointer errors would need.
        if holds_secret(v) {
            walk(v, &mut format!("/{}", escape(k)), &mut found)?;
        }
    }
    Ok(found)
}

/// Whether a `{"$secret": …}` object is anywhere in `v`.
fn holds_secret(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.contains_key("$secret") || m.values().any(holds_secret),
        Value::Array(a) => a.iter().any(holds_secret),
        _ => false,
    }
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn walk(v: &mut Value, pointer: &mut String, found: &mut Vec<Secret>) -> Result<(), SecretError> {
    match v {
        Value::Object(m) if m.contains_key("$secret") => {
            if let Some(key) = m.keys().find(|k| *k != "$secret" && *k != "id") {
                return Err(SecretError::ExtraKey {
                    pointer: pointer.clone(),
                    key: key.clone(),
                });
            }
            let id = match m.get("id") {
                None => uuid::Uuid::new_v4().simple().to_string(),
                Some(Value::String(s)) if valid_id(s) => s.clone(),
                Some(other) => {
                    return Err(SecretError::BadId {
                        pointer: pointer.clone(),
                        id: other.to_string(),
                    });
                }
            };
            if found.iter().any(|s: &Secret| s.id == id) {
                return Err(SecretError::Duplicate {
                    pointer: pointer.clone(),
                    id,
                });
            }
            let value = m.remove("$secret").unwrap_or(Value::Null);
            let secret = Secret { id, value };
            *v = Value::String(secret.token());
            found.push(secret);
        }
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&escape(k));
                walk(child, pointer, found)?;
                pointer.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                let len = pointer.len();
                pointer.push_str(&format!("/{i}"));
                walk(child, pointer, found)?;
                pointer.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

/// The ids of the secret tokens in a value (each once, in order of appearance).
pub fn tokens_in(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    visit_strings(v, &mut |s| ids_in_text(s, &mut out));
    out
}

/// Add the ids of the tokens in a text to `out` (each once).
fn ids_in_text(text: &str, out: &mut Vec<String>) {
    let mut rest = text;
    while let Some(at) = find_token(rest) {
        let after = rest.get(at + TOKEN_PREFIX.len()..).unwrap_or_default();
        let end = after
            .bytes()
            .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')))
            .unwrap_or(after.len());
        let id = after.get(..end).unwrap_or_default();
        if !id.is_empty() && !out.iter().any(|o| o == id) {
            out.push(id.to_owned());
        }
        rest = after.get(end..).unwrap_or_default();
    }
}

/// Where the first token starts in a text. One searcher for every text: `str::find` builds a
/// new one per call, which showed in profiles of reading traces back.
fn find_token(text: &str) -> Option<usize> {
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(TOKEN_PREFIX));
    FINDER.find(text.as_bytes())
}

fn visit_strings(v: &Value, f: &mut impl FnMut(&str)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().for_each(|i| visit_strings(i, f)),
        Value::Object(m) => m.values().for_each(|i| visit_strings(i, f)),
        _ => {}
    }
}

fn map_strings(v: &mut Value, f: &mut impl FnMut(&mut Value)) {
    match v {
        Value::String(_) => f(v),
        Value::Array(items) => items.iter_mut().for_each(|i| map_strings(i, f)),
        Value::Object(m) => m.values_mut().for_each(|i| map_strings(i, f)),
        _ => {}
    }
}

/// Replace the tokens of erased secrets by [`TOMBSTONE`] (what a projection of a trace shows).
pub fn tombstone(v: &mut Value, erased: &[String]) {
    if erased.is_empty() {
        return;
    }
    map_strings(v, &mut |s| {
        if let Value::String(text) = s {
            for id in erased {
                let t = token(id);
                if text.contains(&t) {
                    *text = text.replace(&t, TOMBSTONE);
                }
            }
        }
    });
}

/// A tool registry that hands tools the real values of secret tokens, and hides them again
/// in what the tools answer.
pub struct SecretTools {
    inner: Arc<dyn Tools>,
    /// id → value; `None` once erased.
    secrets: HashMap<String, Option<Value>>,
}

impl fmt::Debug for SecretTools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretTools")
            .field("inner", &self.inner)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Secret string values shorter than this are not searched for inside longer strings of a
/// tool's answer (a whole string equal to the value is still replaced).
const MIN_SCRUB_LEN: usize = 4;

impl SecretTools {
    pub fn new(inner: Arc<dyn Tools>, secrets: HashMap<String, Option<Value>>) -> Self {
        Self { inner, secrets }
    }

    /// Replace tokens by values.
    fn reveal(&self, v: &mut Value) -> Result<(), CallError> {
        let mut err = None;
        map_strings(v, &mut |s| {
            if err.is_some() {
                return;
            }
            let Value::String(text) = s else { return };
            if find_token(text).is_none() {
                return;
            }
            let mut ids = Vec::new();
            ids_in_text(text, &mut ids);
            for id in ids {
                let t = token(&id);
                let value = match self.secrets.get(&id) {
                    Some(Some(v)) => v,
                    Some(None) => {
                        err = Some(CallError::Failed(format!(
                            "the secret `{t}` was erased; a tool cannot receive it"
                        )));
                        return;
                    }
                    None => {
                        err = Some(CallError::Failed(format!(
                            "the secret `{t}` is not in the vault"
                        )));
                        return;
                    }
                };
                if *text == t {
                    *s = value.clone();
                    return;
                }
                let plain = match value {
                    Value::String(v) => v.clone(),
                    other => other.to_string(),
                };
                *text = text.replace(&t, &plain);
            }
        });
        err.map_or(Ok(()), Err)
    }

    /// Replace values by tokens.
    fn hide_value(&self, v: &mut Value) {
        for (id, value) in &self.secrets {
            let Some(value) = value else { continue };
            if !value.is_string() && !value.is_null() && *v == *value {
                *v = Value::String(token(id));
                return;
            }
        }
        map_strings(v, &mut |s| {
            if let Value::String(text) = s {
                let hidden = self.hide_text(text);
                *text = hidden;
            }
        });
    }

    fn hide_text(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (id, value) in &self.secrets {
            if let Some(Value::String(secret)) = value
                && !secret.is_empty()
                && (out == *secret || (secret.len() >= MIN_SCRUB_LEN && out.contains(secret)))
            {
                out = out.replace(secret.as_str(), &token(id));
            }
        }
        out
    }

    fn hide_error(&self, e: CallError) -> CallError {
        match e {
            CallError::Failed(m) => CallError::Failed(self.hide_text(&m)),
            CallError::Http { status, excerpt } => CallError::Http {
                status,
                excerpt: self.hide_text(&excerpt),
            },
            other => other,
        }
    }
}

impl Tools for SecretTools {
    fn contains(&self, name: &str) -> bool {
        self.inner.contains(name)
    }

    fn call<'a>(
        &'a self,
        name: &'a str,
        mut args: Value,
    ) -> BoxFuture<'a, Result<Value, CallError>> {
        Box::pin(async move {
            self.reveal(&mut args)?;
            match self.inner.call(name, args).await {
                Ok(mut out) => {
                    self.hide_value(&mut out);
                    Ok(out)
                }
                Err(e) => Err(self.hide_error(e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::exec::native::NativeTools;
    use serde_json::json;

    #[test]
    fn secrets_are_taken_out_of_the_context() {
        let mut ctx = json!({
            "card": {"$secret": "4242424242424242", "id": "card-4242"},
            "nested": [{"key": {"$secret": {"user": "u", "pass": "p"}}}],
            "plain": "x",
        });
        let found = extract(ctx.as_object_mut().unwrap()).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(ctx["card"], json!("vault://secret/card-4242"));
        assert_eq!(found[0].value, json!("4242424242424242"));
        let t = ctx["nested"][0]["key"].as_str().unwrap();
        assert_eq!(t, found[1].token());
        assert_eq!(found[1].id.len(), 32);
        assert_eq!(
            format!("{:?}", found[0]),
            "Secret { id: \"card-4242\", value: \"<redacted>\" }"
        );
        assert_eq!(
            tokens_in(&ctx),
            vec!["card-4242".to_owned(), found[1].id.clone()]
        );
    }

    #[test]
    fn malformed_secrets_are_errors() {
        let err = |v: Value| {
            extract(v.as_object().cloned().as_mut().unwrap())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(json!({"a": {"$secret": 1, "note": 2}})),
            "/a: a secret object has only `$secret` and an optional `id`; found `note`"
        );
        assert_eq!(
            err(json!({"a": [{"$secret": 1, "id": "x/y"}]})),
            "/a/0: a secret id is 1 to 128 characters of A-Z a-z 0-9 . _ -, not \"x/y\""
        );
        assert_eq!(
            err(json!({"a": {"$secret": 1, "id": "k"}, "b": {"$secret": 2, "id": "k"}})),
            "/b: the secret id `k` is given twice"
        );
    }

    #[test]
    fn tools_get_values_and_answers_get_tokens() {
        let echo = NativeTools::new().register("echo", Ok);
        let secrets = HashMap::from([
            ("card".to_owned(), Some(json!("4242424242424242"))),
            ("gone".to_owned(), None),
        ]);
        let tools = SecretTools::new(Arc::new(echo), secrets);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let out = rt
            .block_on(tools.call(
                "echo",
                json!({"n": "vault://secret/card", "h": "Bearer vault://secret/card!"}),
            ))
            .unwrap();
        // The tool saw the values (the echo proves it) and the answer is tokens again.
        assert_eq!(
            out,
            json!({"n": "vault://secret/card", "h": "Bearer vault://secret/card!"})
        );
        let seen = NativeTools::new().register("seen", |args| {
            Ok(json!({"real": args["n"] == json!("4242424242424242"), "got": args["n"]}))
        });
        let tools2 = SecretTools::new(
            Arc::new(seen),
            HashMap::from([("card".to_owned(), Some(json!("4242424242424242")))]),
        );
        let out = rt
            .block_on(tools2.call("seen", json!({"n": "vault://secret/card"})))
            .unwrap();
        assert_eq!(out, json!({"real": true, "got": "vault://secret/card"}));
        let err = rt
            .block_on(tools.call("echo", json!({"n": "vault://secret/gone"})))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the secret `vault://secret/gone` was erased; a tool cannot receive it"
        );
        let err = rt
            .block_on(tools.call("echo", json!({"n": "vault://secret/nope"})))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the secret `vault://secret/nope` is not in the vault"
        );
    }

    #[test]
    fn erased_tokens_project_as_tombstones() {
        let mut v = json!({"a": "vault://secret/x", "b": ["pay vault://secret/y now"]});
        tombstone(&mut v, &["x".to_owned()]);
        assert_eq!(
            v,
            json!({"a": "[REDACTED_TOMBSTONE]", "b": ["pay vault://secret/y now"]})
        );
    }
}
