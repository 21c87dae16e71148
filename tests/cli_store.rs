//! The store through the command line, end to end on the real binary: `run` storing runs
//! (`--db`, `$NANOVM_DB`, `$NANO_VM_MCP_DB`, `./nanovm.db`, `--no-db`, idempotency keys),
//! `trace list|show`, `audit verify` before and after tampering with the SQLite file, secrets
//! and `erase`, `resume` of a suspended run, and the store's environment variables. Every test
//! works in its own temporary directory (which is also the child's current directory).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use rusqlite::Connection;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// One test's directory.
struct Dir {
    path: PathBuf,
}

impl Dir {
    fn new(test: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("nanovm-cli-store-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self { path }
    }

    fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// A path in the directory, as a string argument.
    fn arg(&self, name: &str) -> String {
        self.join(name).to_str().unwrap().to_owned()
    }

    /// Write a file; its path.
    fn file(&self, name: &str, text: &str) -> String {
        std::fs::write(self.join(name), text).unwrap();
        self.arg(name)
    }

    /// The database most tests use.
    fn db(&self) -> String {
        self.arg("runs.db")
    }

    /// `nanovm ARGS` run in this directory, with none of the store's variables set.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_nanovm"));
        c.args(args)
            .current_dir(&self.path)
            .env("NO_COLOR", "1")
            .env_remove("NANOVM_CONFIG")
            .env_remove("NANOVM_DB")
            .env_remove("NANO_VM_MCP_DB")
            .env_remove("NANOVM_DB_SYNC")
            .env_remove("NANOVM_LEASE_MS");
        c
    }

    fn nanovm(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn nanovm_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = self.command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
        .to_str()
        .unwrap()
        .to_owned()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Both streams, for assertion messages.
fn both(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", out(o), err(o))
}

#[track_caller]
fn code(o: &Output, want: i32) {
    assert_eq!(o.status.code(), Some(want), "{}", both(o));
}

#[track_caller]
fn json_out(o: &Output) -> Value {
    serde_json::from_str(&out(o)).unwrap_or_else(|e| panic!("not JSON ({e}): {}", both(o)))
}

/// The run id in `run <id> stored in <db>` on stderr.
#[track_caller]
fn stored_id(o: &Output) -> String {
    let text = err(o);
    let line = text
        .lines()
        .find(|l| l.starts_with("run ") && l.contains(" stored in "))
        .unwrap_or_else(|| panic!("no `stored in` line: {}", both(o)));
    line["run ".len()..line.find(" stored in ").unwrap()].to_owned()
}

/// The refund example's arguments (program, context, mocks, fast retries).
fn refund() -> Vec<String> {
    vec![
        example("refund.json"),
        "--context".into(),
        example("refund.context.json"),
        "--mocks".into(),
        example("refund.mocks.json"),
        "--retry-backoff-ms".into(),
        "1".into(),
    ]
}

/// `nanovm run <refund example> EXTRA...`.
fn run_refund(d: &Dir, extra: &[&str]) -> Output {
    let mut args: Vec<String> = vec!["run".into()];
    args.extend(refund());
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    d.nanovm(&args)
}

fn query_strings(db: &str, sql: &str) -> Vec<String> {
    let c = Connection::open(db).unwrap();
    let mut st = c.prepare(sql).unwrap();
    st.query_map([], |r| r.get::<_, Option<String>>(0))
        .unwrap()
        .map(|r| r.unwrap().unwrap_or_default())
        .collect()
}

fn count(db: &str, sql: &str) -> i64 {
    Connection::open(db)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

const APPROVE: &str = r#"{"name": "approve", "steps": [
  {"id": "ask", "type": "tool", "tool": "approval"},
  {"id": "notify", "type": "tool", "tool": "notify",
   "args": {"by": "$__webhook__.by", "src": "$__webhook_source__"}},
  {"id": "gate", "type": "condition",
   "condition": "$__webhook__.by == 'ops' and $__webhook_source__ == 'OPERATOR'",
   "then": "done", "otherwise": "wrong"},
  {"id": "done", "type": "tool", "tool": "notify", "args": {"ok": true}, "is_terminal": true},
  {"id": "wrong", "type": "tool", "tool": "notify", "args": {"ok": false}, "is_terminal": true}
]}"#;

const APPROVE_MOCKS: &str = r#"{"tools": {"approval": "PENDING", "notify": {"sent": true}}}"#;

// ---------------------------------------------------------------------------------------------
// run: where runs are stored
// ---------------------------------------------------------------------------------------------

#[test]
fn run_stores_the_run_and_trace_show_gives_it_back() {
    let d = Dir::new("run-stores");
    let db = d.db();
    let o = run_refund(&d, &["--db", &db, "--format", "json"]);
    code(&o, 0);
    let trace = json_out(&o);
    assert_eq!(trace["status"], "success");
    let id = trace["trace_id"].as_str().unwrap().to_owned();
    assert!(d.join("runs.db").exists());
    assert_eq!(count(&db, "SELECT count(*) FROM runs"), 1, "one run row");
    assert_eq!(
        query_strings(&db, "SELECT run_id FROM runs"),
        vec![id.as_str()]
    );
    // One envelope per executed step, in order.
    assert_eq!(
        query_strings(&db, "SELECT step_id FROM envelopes ORDER BY idx"),
        ["lookup", "classify", "route", "issue_refund"]
    );

    // The stored trace, as JSON, is the trace `run` printed.
    let o = d.nanovm(&["trace", "show", &id, "--format", "json", "--db", &db]);
    code(&o, 0);
    assert_eq!(json_out(&o), trace);

    // As a table.
    let o = d.nanovm(&["trace", "show", &id, "--db", &db]);
    code(&o, 0);
    let text = out(&o);
    for want in [
        "lookup",
        "classify",
        "(after 1 retry)",
        "issue_refund",
        "refund_triage: success",
        "final output: {\"refund_id\":\"R-A-1001\",\"status\":\"processed\"}",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }

    // Human `run` says where the run went.
    let o = run_refund(&d, &["--db", &db]);
    code(&o, 0);
    let id2 = stored_id(&o);
    assert_ne!(id2, id);
    assert!(
        err(&o).contains(&format!("run {id2} stored in {db}")),
        "{}",
        both(&o)
    );
    assert!(out(&o).contains("refund_triage: success"), "{}", both(&o));
    assert_eq!(count(&db, "SELECT count(*) FROM runs"), 2);
}

#[test]
fn a_failed_run_is_stored_and_trace_show_exits_1() {
    let d = Dir::new("failed");
    let db = d.db();
    let prog = d.file(
        "fail.json",
        r#"{"name": "p", "steps": [{"id": "a", "type": "tool", "tool": "boom"}]}"#,
    );
    let mocks = d.file("m.json", r#"{"tools": {"boom": {"error": "disk full"}}}"#);
    let o = d.nanovm(&["run", &prog, "--mocks", &mocks, "--db", &db]);
    code(&o, 1);
    let id = stored_id(&o);
    let o = d.nanovm(&["trace", "show", &id, "--db", &db]);
    code(&o, 1);
    assert!(
        out(&o).contains("error: Step 'a' failed: disk full"),
        "{}",
        both(&o)
    );
    let o = d.nanovm(&["trace", "list", "--format", "json", "--db", &db]);
    code(&o, 0);
    let runs = json_out(&o);
    assert_eq!(runs[0]["run_id"], id.as_str());
    assert_eq!(runs[0]["status"], "failed");
}

#[test]
fn no_db_stores_nothing_and_refuses_an_idempotency_key() {
    let d = Dir::new("no-db");
    let db = d.db();
    let o = run_refund(&d, &["--no-db", "--db", &db]);
    code(&o, 0);
    assert!(out(&o).contains("refund_triage: success"), "{}", both(&o));
    assert!(!err(&o).contains("stored in"), "{}", both(&o));
    assert!(!d.join("runs.db").exists());
    assert!(!d.join("nanovm.db").exists());

    // Not even the default database, nor the one in $NANOVM_DB.
    let mut args: Vec<String> = vec!["run".into()];
    args.extend(refund());
    args.push("--no-db".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = d.nanovm_env(&args, &[("NANOVM_DB", &db)]);
    code(&o, 0);
    assert!(!d.join("runs.db").exists());
    assert!(!d.join("nanovm.db").exists());

    let o = run_refund(&d, &["--no-db", "--idempotency-key", "k"]);
    code(&o, 2);
    assert!(err(&o).contains("--no-db"), "{}", both(&o));
    assert!(err(&o).contains("--idempotency-key"), "{}", both(&o));
    assert!(!d.join("nanovm.db").exists());
}

#[test]
fn the_default_database_is_env_then_the_current_directory() {
    let d = Dir::new("default-db");
    let mut args: Vec<String> = vec!["run".into()];
    args.extend(refund());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // Nothing set: ./nanovm.db in the current directory.
    let o = d.nanovm(&args);
    code(&o, 0);
    let id = stored_id(&o);
    assert!(err(&o).contains("stored in nanovm.db"), "{}", both(&o));
    let local = d.arg("nanovm.db");
    assert!(d.join("nanovm.db").exists());
    assert_eq!(
        query_strings(&local, "SELECT run_id FROM runs"),
        [id.as_str()]
    );
    // The other commands find it too.
    let o = d.nanovm(&["trace", "list", "--format", "json"]);
    code(&o, 0);
    assert_eq!(json_out(&o)[0]["run_id"], id.as_str());

    // $NANOVM_DB.
    let env_db = d.arg("env.db");
    let o = d.nanovm_env(&args, &[("NANOVM_DB", &env_db)]);
    code(&o, 0);
    let id_env = stored_id(&o);
    assert!(
        err(&o).contains(&format!("stored in {env_db}")),
        "{}",
        both(&o)
    );
    assert_eq!(
        query_strings(&env_db, "SELECT run_id FROM runs"),
        [id_env.as_str()]
    );
    let o = d.nanovm_env(&["trace", "show", &id_env], &[("NANOVM_DB", &env_db)]);
    code(&o, 0);

    // $NANO_VM_MCP_DB, the reference's name, as an alias.
    let alias_db = d.arg("alias.db");
    let o = d.nanovm_env(&args, &[("NANO_VM_MCP_DB", &alias_db)]);
    code(&o, 0);
    let id_alias = stored_id(&o);
    assert_eq!(
        query_strings(&alias_db, "SELECT run_id FROM runs"),
        [id_alias.as_str()]
    );
    let o = d.nanovm_env(
        &["audit", "verify", &id_alias],
        &[("NANO_VM_MCP_DB", &alias_db)],
    );
    code(&o, 0);

    // $NANOVM_DB wins over the alias, and --db over both.
    let o = d.nanovm_env(
        &args,
        &[("NANOVM_DB", &env_db), ("NANO_VM_MCP_DB", &alias_db)],
    );
    code(&o, 0);
    assert_eq!(count(&env_db, "SELECT count(*) FROM runs"), 2);
    assert_eq!(count(&alias_db, "SELECT count(*) FROM runs"), 1);
    let flag_db = d.arg("flag.db");
    let mut with_flag = args.clone();
    with_flag.extend(["--db", flag_db.as_str()]);
    let o = d.nanovm_env(
        &with_flag,
        &[("NANOVM_DB", &env_db), ("NANO_VM_MCP_DB", &alias_db)],
    );
    code(&o, 0);
    assert_eq!(count(&flag_db, "SELECT count(*) FROM runs"), 1);
    assert_eq!(count(&env_db, "SELECT count(*) FROM runs"), 2);
    assert_eq!(count(&alias_db, "SELECT count(*) FROM runs"), 1);
    // The local default was left alone by all of these.
    assert_eq!(count(&local, "SELECT count(*) FROM runs"), 1);
}

// ---------------------------------------------------------------------------------------------
// Idempotency keys
// ---------------------------------------------------------------------------------------------

#[test]
fn an_idempotency_key_runs_once() {
    let d = Dir::new("idempotency");
    let db = d.db();
    let o = run_refund(&d, &["--db", &db, "--idempotency-key", "order-A-1001"]);
    code(&o, 0);
    let id = stored_id(&o);
    assert!(!err(&o).contains("nothing ran"), "{}", both(&o));

    // The same key again: the stored result, nothing ran.
    let o = run_refund(&d, &["--db", &db, "--idempotency-key", "order-A-1001"]);
    code(&o, 0);
    assert!(
        err(&o).contains(&format!(
            "idempotency key `order-A-1001`: the stored result of run {id}; nothing ran"
        )),
        "{}",
        both(&o)
    );
    assert_eq!(stored_id(&o), id);
    assert!(out(&o).contains("refund_triage: success"), "{}", both(&o));

    // As JSON: the same trace id (and the same trace).
    let o = run_refund(
        &d,
        &[
            "--db",
            &db,
            "--idempotency-key",
            "order-A-1001",
            "--format",
            "json",
        ],
    );
    code(&o, 0);
    let replayed = json_out(&o);
    assert_eq!(replayed["trace_id"], id.as_str());
    let shown = d.nanovm(&["trace", "show", &id, "--format", "json", "--db", &db]);
    code(&shown, 0);
    assert_eq!(json_out(&shown), replayed);

    // One run, one chain.
    assert_eq!(count(&db, "SELECT count(*) FROM runs"), 1);
    assert_eq!(count(&db, "SELECT count(*) FROM envelopes"), 4);
    let o = d.nanovm(&["trace", "list", "--db", &db]);
    code(&o, 0);
    let text = out(&o);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains(&id) && text.contains("key order-A-1001"),
        "{text}"
    );

    // Another key runs again.
    let o = run_refund(&d, &["--db", &db, "--idempotency-key", "order-A-1002"]);
    code(&o, 0);
    assert_ne!(stored_id(&o), id);
    assert_eq!(count(&db, "SELECT count(*) FROM runs"), 2);

    // The key of another program is refused.
    let other = d.file(
        "other.json",
        r#"{"name": "other", "steps": [{"id": "a", "type": "tool", "tool": "lookup_order"}]}"#,
    );
    let o = d.nanovm(&[
        "run",
        &other,
        "--mocks",
        &example("refund.mocks.json"),
        "--db",
        &db,
        "--idempotency-key",
        "order-A-1001",
    ]);
    code(&o, 2);
    assert!(
        err(&o).contains("belongs to a run of another program"),
        "{}",
        both(&o)
    );
    assert_eq!(count(&db, "SELECT count(*) FROM runs"), 2);
}

// ---------------------------------------------------------------------------------------------
// trace list / show
// ---------------------------------------------------------------------------------------------

#[test]
fn trace_list_shows_the_newest_first_as_a_table_or_json() {
    let d = Dir::new("trace-list");
    let db = d.db();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let o = run_refund(&d, &["--db", &db]);
        code(&o, 0);
        ids.push(stored_id(&o));
        // started_at has millisecond resolution.
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    ids.reverse();

    let o = d.nanovm(&["trace", "list", "--format", "json", "--db", &db]);
    code(&o, 0);
    let runs = json_out(&o);
    let listed: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids);
    for r in runs.as_array().unwrap() {
        assert_eq!(r["program_name"], "refund_triage");
        assert_eq!(r["status"], "success");
        assert_eq!(r["envelopes"], 4);
        assert_eq!(r["idempotency_key"], Value::Null);
        assert_eq!(r["program_hash"].as_str().unwrap().len(), 64);
        assert!(r["finished_at"].is_string());
    }
    // Every run of the same program has the same program hash.
    assert_eq!(runs[0]["program_hash"], runs[2]["program_hash"]);

    let o = d.nanovm(&[
        "trace", "list", "--limit", "2", "--format", "json", "--db", &db,
    ]);
    code(&o, 0);
    let runs = json_out(&o);
    assert_eq!(runs.as_array().unwrap().len(), 2);
    assert_eq!(runs[0]["run_id"], ids[0].as_str());
    assert_eq!(runs[1]["run_id"], ids[1].as_str());

    let o = d.nanovm(&["trace", "list", "--db", &db]);
    code(&o, 0);
    let text = out(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for (line, id) in lines.iter().zip(&ids) {
        assert!(line.starts_with(id.as_str()), "{line}");
        assert!(line.contains("refund_triage"), "{line}");
        assert!(line.contains("success"), "{line}");
        assert!(line.contains("4 step(s)"), "{line}");
    }
    let o = d.nanovm(&["trace", "list", "--limit", "1", "--db", &db]);
    code(&o, 0);
    assert_eq!(out(&o).lines().count(), 1, "{}", both(&o));

    // An empty database.
    let empty = d.arg("empty.db");
    Connection::open(&empty).unwrap();
    let o = d.nanovm(&["trace", "list", "--db", &empty]);
    code(&o, 0);
    assert!(out(&o).contains("no runs in"), "{}", both(&o));
    let o = d.nanovm(&["trace", "list", "--format", "json", "--db", &empty]);
    code(&o, 0);
    assert_eq!(json_out(&o), json!([]));
}

#[test]
fn unknown_runs_and_missing_databases_are_usage_errors() {
    let d = Dir::new("unknown");
    let db = d.db();
    let o = run_refund(&d, &["--db", &db]);
    code(&o, 0);

    let o = d.nanovm(&["trace", "show", "no-such-run", "--db", &db]);
    code(&o, 2);
    assert!(err(&o).contains("no run `no-such-run`"), "{}", both(&o));
    assert!(out(&o).is_empty(), "{}", both(&o));
    let o = d.nanovm(&[
        "trace",
        "show",
        "no-such-run",
        "--format",
        "json",
        "--db",
        &db,
    ]);
    code(&o, 2);
    assert!(out(&o).is_empty(), "{}", both(&o));
    let o = d.nanovm(&["audit", "verify", "no-such-run", "--db", &db]);
    code(&o, 2);
    assert!(err(&o).contains("no run `no-such-run`"), "{}", both(&o));
    let o = d.nanovm(&[
        "resume",
        "no-such-run",
        "--mocks",
        &example("refund.mocks.json"),
        "--db",
        &db,
    ]);
    code(&o, 2);
    assert!(err(&o).contains("no run `no-such-run`"), "{}", both(&o));

    // A database that does not exist is reported, and not created, by every reader.
    let missing = d.arg("missing.db");
    let mocks = example("refund.mocks.json");
    let commands: [&[&str]; 6] = [
        &["trace", "list", "--db", &missing],
        &["trace", "show", "some-run", "--db", &missing],
        &["audit", "verify", "--all", "--db", &missing],
        &["audit", "verify", "some-run", "--db", &missing],
        &["erase", "vault://secret/x", "--db", &missing],
        &["resume", "some-run", "--mocks", &mocks, "--db", &missing],
    ];
    for args in commands {
        let o = d.nanovm(args);
        code(&o, 2);
        assert!(
            err(&o).contains(&format!("there is no database at `{missing}`")),
            "{args:?}: {}",
            both(&o)
        );
        assert!(!d.join("missing.db").exists(), "{args:?} created it");
    }
    // Nor the default one.
    let o = d.nanovm(&["trace", "list"]);
    code(&o, 2);
    assert!(
        err(&o).contains("there is no database at `nanovm.db`"),
        "{}",
        both(&o)
    );
    assert!(!d.join("nanovm.db").exists());

    // `audit verify` needs a run id or --all, not both.
    let o = d.nanovm(&["audit", "verify", "--db", &db]);
    code(&o, 2);
    let o = d.nanovm(&["audit", "verify", "x", "--all", "--db", &db]);
    code(&o, 2);
}

// ---------------------------------------------------------------------------------------------
// audit verify
// ---------------------------------------------------------------------------------------------

/// Drop the append-only triggers and run one statement on the file.
fn tamper(db: &str, sql: &str, run_id: &str) {
    let c = Connection::open(db).unwrap();
    c.execute_batch(
        "DROP TRIGGER IF EXISTS envelopes_no_update;
         DROP TRIGGER IF EXISTS envelopes_no_delete;",
    )
    .unwrap();
    let changed = c.execute(sql, [run_id]).unwrap();
    assert_eq!(changed, 1, "{sql}");
}

#[test]
fn audit_verify_finds_a_tampered_envelope() {
    let d = Dir::new("audit");
    let db = d.db();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let o = run_refund(&d, &["--db", &db]);
        code(&o, 0);
        ids.push(stored_id(&o));
    }
    let (victim, cut, intact) = (&ids[0], &ids[1], &ids[2]);

    let o = d.nanovm(&["audit", "verify", victim, "--db", &db]);
    code(&o, 0);
    assert!(
        out(&o).contains("1 run(s), 4 envelope(s) checked"),
        "{}",
        both(&o)
    );
    assert!(out(&o).contains("every chain is intact"), "{}", both(&o));
    let o = d.nanovm(&["audit", "verify", "--all", "--format", "json", "--db", &db]);
    code(&o, 0);
    let v = json_out(&o);
    assert_eq!(v["ok"], true);
    assert_eq!(v["runs"], 3);
    assert_eq!(v["envelopes"], 12);
    assert_eq!(v["broken"], json!([]));

    // Envelopes are append-only while the triggers are there.
    let c = Connection::open(&db).unwrap();
    let refused = c.execute(
        "UPDATE envelopes SET payload = '{}' WHERE run_id = ?1 AND idx = 0",
        [victim],
    );
    assert!(refused.unwrap_err().to_string().contains("append-only"),);
    drop(c);

    // A changed payload: the lookup's amount 250 becomes 25.
    tamper(
        &db,
        "UPDATE envelopes SET payload = replace(payload, '250', '25') WHERE run_id = ?1 AND idx = 0",
        victim,
    );
    let o = d.nanovm(&["audit", "verify", victim, "--format", "json", "--db", &db]);
    code(&o, 1);
    let v = json_out(&o);
    assert_eq!(v["ok"], false);
    assert_eq!(v["runs"], 1);
    assert_eq!(v["broken"].as_array().unwrap().len(), 1);
    assert_eq!(v["broken"][0]["run_id"], victim.as_str());
    assert_eq!(v["broken"][0]["break"]["kind"], "hash_mismatch");
    assert_eq!(v["broken"][0]["break"]["index"], 0);
    let o = d.nanovm(&["audit", "verify", victim, "--db", &db]);
    code(&o, 1);
    let text = out(&o);
    assert!(
        text.contains(&format!("run {victim}: BROKEN: envelope 0:")),
        "{text}"
    );
    assert!(text.contains("1 broken chain(s)"), "{text}");
    // The other runs are still intact.
    let o = d.nanovm(&["audit", "verify", intact, "--db", &db]);
    code(&o, 0);

    // The last envelope of another run deleted.
    tamper(
        &db,
        "DELETE FROM envelopes WHERE run_id = ?1 AND idx = 3",
        cut,
    );
    let o = d.nanovm(&["audit", "verify", "--all", "--format", "json", "--db", &db]);
    code(&o, 1);
    let v = json_out(&o);
    assert_eq!(v["ok"], false);
    assert_eq!(v["runs"], 3);
    let broken = v["broken"].as_array().unwrap();
    assert_eq!(broken.len(), 2, "{v}");
    let of = |id: &str| {
        broken
            .iter()
            .find(|b| b["run_id"] == id)
            .unwrap_or_else(|| panic!("{id} not reported: {v}"))["break"]
            .clone()
    };
    assert_eq!(of(victim), json!({"kind": "hash_mismatch", "index": 0}));
    assert_eq!(
        of(cut),
        json!({"kind": "count_mismatch", "recorded": 4, "found": 3})
    );
    assert!(!broken.iter().any(|b| b["run_id"] == intact.as_str()));
    let o = d.nanovm(&["audit", "verify", "--all", "--db", &db]);
    code(&o, 1);
    assert!(out(&o).contains("2 broken chain(s)"), "{}", both(&o));
}

// ---------------------------------------------------------------------------------------------
// Secrets and erasure
// ---------------------------------------------------------------------------------------------

const CARD: &str = "4242424242424242";

#[test]
fn secrets_stay_in_the_vault_and_erasure_keeps_the_chains_valid() {
    let d = Dir::new("secrets");
    let db = d.db();
    // The tool gets the card and answers with it; the LLM prompt mentions it.
    let prog = d.file(
        "pay.json",
        r#"{"name": "pay", "steps": [
  {"id": "charge", "type": "tool", "tool": "charge", "args": {"card": "$card", "amount": 5}},
  {"id": "say", "type": "llm", "prompt": "Charged $card"}
]}"#,
    );
    let context = d.file(
        "ctx.json",
        &format!(r#"{{"card": {{"$secret": "{CARD}", "id": "card-4242"}}}}"#),
    );
    let mocks = d.file(
        "m.json",
        &format!(
            r#"{{"tools": {{"charge": {{"charged": "{CARD}", "ok": true}}}},
                 "llm": {{"Charged vault://secret/card-4242": "done", "*": {{"error": "the prompt held something else"}}}}}}"#
        ),
    );
    let o = d.nanovm(&[
        "run",
        &prog,
        "--context",
        &context,
        "--mocks",
        &mocks,
        "--db",
        &db,
        "--format",
        "json",
    ]);
    code(&o, 0);
    assert!(!out(&o).contains(CARD), "{}", both(&o));
    let trace = json_out(&o);
    let id = trace["trace_id"].as_str().unwrap().to_owned();
    assert_eq!(trace["status"], "success");
    // The tool's answer holds the token, not the value; the LLM saw the token.
    assert_eq!(
        trace["steps"][0]["output"],
        json!({"charged": "vault://secret/card-4242", "ok": true})
    );
    assert_eq!(trace["final_output"], "done");

    // A failing tool whose error names the card: the error is scrubbed too.
    let failing = d.file(
        "fail.json",
        &format!(
            r#"{{"tools": {{"charge": {{"error": "card {CARD} declined"}}}}, "llm": {{"*": "x"}}}}"#
        ),
    );
    let o = d.nanovm(&[
        "run",
        &prog,
        "--context",
        &context,
        "--mocks",
        &failing,
        "--db",
        &db,
        "--format",
        "json",
    ]);
    code(&o, 1);
    assert!(!out(&o).contains(CARD), "{}", both(&o));
    let failed = json_out(&o);
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("card vault://secret/card-4242 declined"),
        "{failed}"
    );
    let failed_id = failed["trace_id"].as_str().unwrap().to_owned();

    // Nothing stored outside the vault holds the value.
    for sql in [
        "SELECT payload FROM envelopes",
        "SELECT trace FROM runs",
        "SELECT context FROM runs",
        "SELECT source FROM programs",
    ] {
        let rows = query_strings(&db, sql);
        assert!(!rows.is_empty(), "{sql}");
        for row in rows {
            assert!(!row.contains(CARD), "{sql}: {row}");
        }
    }
    assert!(
        query_strings(&db, "SELECT payload FROM envelopes")
            .iter()
            .any(|p| p.contains("vault://secret/card-4242")),
        "the token is in the envelopes"
    );
    assert_eq!(
        query_strings(&db, "SELECT value FROM vault WHERE id = 'card-4242'"),
        [format!("\"{CARD}\"")]
    );

    // Erase: once, then it is already erased (by token or by id).
    let o = d.nanovm(&["erase", "vault://secret/card-4242", "--db", &db]);
    code(&o, 0);
    assert!(
        out(&o).contains("erased vault://secret/card-4242"),
        "{}",
        both(&o)
    );
    assert!(out(&o).contains("[REDACTED_TOMBSTONE]"), "{}", both(&o));
    let o = d.nanovm(&["erase", "vault://secret/card-4242", "--db", &db]);
    code(&o, 0);
    assert!(out(&o).contains("already erased"), "{}", both(&o));
    let o = d.nanovm(&["erase", "card-4242", "--db", &db]);
    code(&o, 0);
    assert!(out(&o).contains("already erased"), "{}", both(&o));
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM vault WHERE id = 'card-4242' AND value IS NULL AND erased_at IS NOT NULL"
        ),
        1
    );
    // An unknown secret.
    let o = d.nanovm(&["erase", "vault://secret/nope", "--db", &db]);
    code(&o, 2);
    assert!(
        err(&o).contains("no secret `vault://secret/nope` in the vault"),
        "{}",
        both(&o)
    );

    // The traces show a tombstone where the token was.
    let o = d.nanovm(&["trace", "show", &id, "--format", "json", "--db", &db]);
    code(&o, 0);
    let shown = json_out(&o);
    assert_eq!(
        shown["steps"][0]["output"],
        json!({"charged": "[REDACTED_TOMBSTONE]", "ok": true})
    );
    assert!(
        !out(&o).contains("vault://secret/card-4242"),
        "{}",
        both(&o)
    );
    let o = d.nanovm(&["trace", "show", &id, "--db", &db]);
    code(&o, 0);
    assert!(out(&o).contains("[REDACTED_TOMBSTONE]"), "{}", both(&o));
    assert!(!out(&o).contains("vault://"), "{}", both(&o));
    let o = d.nanovm(&["trace", "show", &failed_id, "--format", "json", "--db", &db]);
    code(&o, 1);
    assert!(
        json_out(&o)["error"]
            .as_str()
            .unwrap()
            .contains("card [REDACTED_TOMBSTONE] declined"),
        "{}",
        both(&o)
    );

    // The envelopes were not touched: every chain still verifies.
    let o = d.nanovm(&["audit", "verify", "--all", "--db", &db]);
    code(&o, 0);
    assert!(out(&o).contains("every chain is intact"), "{}", both(&o));
    let o = d.nanovm(&["audit", "verify", "--all", "--format", "json", "--db", &db]);
    code(&o, 0);
    assert_eq!(json_out(&o)["ok"], true);

    // The erased id cannot be reused.
    let o = d.nanovm(&[
        "run",
        &prog,
        "--context",
        &context,
        "--mocks",
        &mocks,
        "--db",
        &db,
    ]);
    code(&o, 2);
    assert!(err(&o).contains("card-4242"), "{}", both(&o));
    assert_eq!(count(&db, "SELECT count(*) FROM runs"), 2);
}

// ---------------------------------------------------------------------------------------------
// resume
// ---------------------------------------------------------------------------------------------

#[test]
fn a_suspended_run_resumes_with_a_payload() {
    let d = Dir::new("resume");
    let db = d.db();
    let prog = d.file("approve.json", APPROVE);
    let mocks = d.file("m.json", APPROVE_MOCKS);
    let o = d.nanovm(&[
        "run", &prog, "--mocks", &mocks, "--db", &db, "--format", "json",
    ]);
    code(&o, 0);
    let t = json_out(&o);
    assert_eq!(t["status"], "suspended");
    assert_eq!(t["suspended_step_id"], "ask");
    let id = t["trace_id"].as_str().unwrap().to_owned();
    let o = d.nanovm(&["trace", "list", "--format", "json", "--db", &db]);
    code(&o, 0);
    assert_eq!(json_out(&o)[0]["status"], "suspended");
    assert_eq!(json_out(&o)[0]["envelopes"], 1);
    let o = d.nanovm(&["trace", "show", &id, "--db", &db]);
    code(&o, 0);
    assert!(out(&o).contains("suspended at step 'ask'"), "{}", both(&o));
    assert_eq!(count(&db, "SELECT count(*) FROM cursors"), 1);

    // A resume whose configuration lacks a tool of the program is refused; nothing ran.
    let partial = d.file("partial.json", r#"{"tools": {"approval": "PENDING"}}"#);
    let o = d.nanovm(&["resume", &id, "--mocks", &partial, "--db", &db]);
    code(&o, 1);
    assert!(err(&o).contains("nothing ran"), "{}", both(&o));
    let o = d.nanovm(&["trace", "list", "--format", "json", "--db", &db]);
    assert_eq!(json_out(&o)[0]["status"], "suspended");

    // Resume with a payload, as an operator.
    let payload = d.file("payload.json", r#"{"by": "ops"}"#);
    let o = d.nanovm(&[
        "resume",
        &id,
        "--payload",
        &payload,
        "--mocks",
        &mocks,
        "--db",
        &db,
        "--source",
        "operator",
        "--format",
        "json",
    ]);
    code(&o, 0);
    let t = json_out(&o);
    assert_eq!(t["status"], "success", "{t}");
    assert_eq!(t["trace_id"], id.as_str());
    assert_eq!(t["suspended_step_id"], Value::Null);
    let steps: Vec<&str> = t["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step_id"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["ask", "notify", "gate", "done"]);
    // The condition saw the payload and its source.
    assert_eq!(t["steps"][2]["output"], "done");
    assert_eq!(t["final_output"], json!({"sent": true}));

    // Stored: the same run, its chain continued and intact.
    let o = d.nanovm(&["trace", "show", &id, "--format", "json", "--db", &db]);
    code(&o, 0);
    assert_eq!(json_out(&o), t);
    let o = d.nanovm(&["trace", "list", "--format", "json", "--db", &db]);
    let runs = json_out(&o);
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(runs[0]["status"], "success");
    assert_eq!(runs[0]["envelopes"], 4);
    assert_eq!(count(&db, "SELECT count(*) FROM cursors"), 0);
    let o = d.nanovm(&["audit", "verify", &id, "--format", "json", "--db", &db]);
    code(&o, 0);
    assert_eq!(json_out(&o)["envelopes"], 4);

    // Resuming again: not suspended.
    let o = d.nanovm(&[
        "resume",
        &id,
        "--payload",
        &payload,
        "--mocks",
        &mocks,
        "--db",
        &db,
    ]);
    code(&o, 2);
    assert!(err(&o).contains("not suspended"), "{}", both(&o));
    assert!(err(&o).contains("is success"), "{}", both(&o));
}

#[test]
fn a_resumed_tool_gets_its_arguments_from_the_payload() {
    let d = Dir::new("resume-args");
    let db = d.db();
    let prog = d.file("approve.json", APPROVE);
    let mocks = d.file("m.json", APPROVE_MOCKS);
    let o = d.nanovm(&["run", &prog, "--mocks", &mocks, "--db", &db]);
    code(&o, 0);
    let id = stored_id(&o);
    assert!(out(&o).contains("suspended at step 'ask'"), "{}", both(&o));

    // Resume with a config whose `notify` echoes its arguments; the default source, and a
    // payload the condition does not accept.
    let echo = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tools/echo.sh");
    let config = d.file(
        "nanovm.toml",
        &format!(
            r#"
[tools.approval]
kind = "command"
command = ["{0}"]
timeout_seconds = 5

[tools.notify]
kind = "command"
command = ["{0}"]
timeout_seconds = 5
"#,
            echo.display()
        ),
    );
    let payload = d.file("payload.json", r#"{"by": "alice", "note": [1, 2]}"#);
    let o = d.nanovm(&[
        "resume",
        &id,
        "--payload",
        &payload,
        "--config",
        &config,
        "--db",
        &db,
        "--format",
        "json",
    ]);
    code(&o, 0);
    let t = json_out(&o);
    assert_eq!(t["status"], "success", "{t}");
    assert_eq!(
        t["steps"][1]["output"],
        json!({"args": {"by": "alice", "src": "WEBHOOK"}})
    );
    assert_eq!(t["steps"][2]["output"], "wrong");
    assert_eq!(t["final_output"], json!({"args": {"ok": false}}));
    let o = d.nanovm(&["audit", "verify", "--all", "--db", &db]);
    code(&o, 0);
}

#[test]
fn resume_without_a_payload_gives_null() {
    let d = Dir::new("resume-null");
    let db = d.db();
    let prog = d.file(
        "p.json",
        r#"{"name": "wait", "steps": [
  {"id": "ask", "type": "tool", "tool": "approval"},
  {"id": "gate", "type": "condition", "condition": "$__webhook__ == null",
   "then": "yes", "otherwise": "no"},
  {"id": "yes", "type": "tool", "tool": "notify", "is_terminal": true},
  {"id": "no", "type": "tool", "tool": "notify", "is_terminal": true}
]}"#,
    );
    let mocks = d.file("m.json", APPROVE_MOCKS);
    let o = d.nanovm(&["run", &prog, "--mocks", &mocks, "--db", &db]);
    code(&o, 0);
    let id = stored_id(&o);
    let o = d.nanovm(&["resume", &id, "--mocks", &mocks, "--db", &db]);
    code(&o, 0);
    let text = out(&o);
    assert!(text.contains("wait: success in"), "{text}");
    assert!(text.contains("final output: {\"sent\":true}"), "{text}");
    // No payload: `$__webhook__` is null.
    let o = d.nanovm(&["trace", "show", &id, "--format", "json", "--db", &db]);
    code(&o, 0);
    let t = json_out(&o);
    let steps: Vec<&str> = t["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step_id"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["ask", "gate", "yes"]);
}

// ---------------------------------------------------------------------------------------------
// Interrupted runs (a process that died mid-run, simulated by rewriting the run row)
// ---------------------------------------------------------------------------------------------

/// Make a finished run look like one still running, whose lease ends at `lease_until` (ms).
fn unfinish(db: &str, run_id: &str, lease_until: i64) {
    let c = Connection::open(db).unwrap();
    let changed = c
        .execute(
            "UPDATE runs SET status = 'running', trace = NULL, finished_at = NULL,
                             lease_until = ?2 WHERE run_id = ?1",
            rusqlite::params![run_id, lease_until],
        )
        .unwrap();
    assert_eq!(changed, 1);
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

#[test]
fn an_interrupted_run_has_no_trace_and_its_key_runs_again() {
    let d = Dir::new("interrupted");
    let db = d.db();
    let o = run_refund(&d, &["--db", &db, "--idempotency-key", "k1"]);
    code(&o, 0);
    let old = stored_id(&o);
    unfinish(&db, &old, 0);

    let o = d.nanovm(&["trace", "list", "--format", "json", "--db", &db]);
    code(&o, 0);
    assert_eq!(json_out(&o)[0]["status"], "interrupted");
    let o = d.nanovm(&["trace", "show", &old, "--db", &db]);
    code(&o, 1);
    assert!(
        err(&o).contains(&format!(
            "run `{old}` is interrupted (4 step envelope(s) so far); it has no trace yet"
        )),
        "{}",
        both(&o)
    );
    assert!(out(&o).is_empty(), "{}", both(&o));

    // The key's run died: the same key runs again.
    let o = run_refund(&d, &["--db", &db, "--idempotency-key", "k1"]);
    code(&o, 0);
    let new = stored_id(&o);
    assert_ne!(new, old);
    assert!(
        err(&o).contains(&format!(
            "idempotency key `k1`: run {old} was interrupted (its process died); ran again"
        )),
        "{}",
        both(&o)
    );
    assert!(!err(&o).contains("nothing ran"), "{}", both(&o));
    assert_eq!(
        query_strings(
            &db,
            &format!("SELECT status FROM runs WHERE run_id = '{old}'")
        ),
        ["interrupted"]
    );
    // From now on the key gives the new run.
    let o = run_refund(&d, &["--db", &db, "--idempotency-key", "k1"]);
    code(&o, 0);
    assert!(
        err(&o).contains(&format!("the stored result of run {new}; nothing ran")),
        "{}",
        both(&o)
    );
    assert_eq!(count(&db, "SELECT count(*) FROM runs"), 2);
}

#[test]
fn a_key_whose_run_holds_its_lease_waits_for_it() {
    let d = Dir::new("lease-wait");
    let db = d.db();
    let o = run_refund(&d, &["--db", &db, "--idempotency-key", "k2"]);
    code(&o, 0);
    let old = stored_id(&o);
    // Still running, in another process, for 600 ms more; that process then dies.
    let deadline = now_ms() + 600;
    unfinish(&db, &old, deadline);
    let o = run_refund(
        &d,
        &["--db", &db, "--idempotency-key", "k2", "--format", "json"],
    );
    code(&o, 0);
    let new = json_out(&o)["trace_id"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    // The new run started only once the old one's lease had lapsed.
    let started: i64 = Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT CAST(round((julianday(started_at) - 2440587.5) * 86400000) AS INTEGER)
             FROM runs WHERE run_id = ?1",
            [&new],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        started >= deadline,
        "started {started}, lease until {deadline}"
    );
}

// ---------------------------------------------------------------------------------------------
// The store's environment
// ---------------------------------------------------------------------------------------------

#[test]
fn store_environment_variables_are_checked() {
    let d = Dir::new("env");
    let db = d.db();
    let mut args: Vec<String> = vec!["run".into()];
    args.extend(refund());
    args.extend(["--db".to_owned(), db.clone()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    for bad in ["abc", "10", "-5", "99999999999"] {
        let o = d.nanovm_env(&args, &[("NANOVM_LEASE_MS", bad)]);
        code(&o, 2);
        assert!(
            err(&o).contains(&format!(
                "NANOVM_LEASE_MS is `{bad}`; it is milliseconds from 50 to 3600000"
            )),
            "{}",
            both(&o)
        );
        assert!(out(&o).is_empty(), "nothing ran: {}", both(&o));
        assert!(!d.join("runs.db").exists());
    }
    let o = d.nanovm_env(&args, &[("NANOVM_DB_SYNC", "sometimes")]);
    code(&o, 2);
    assert!(
        err(&o).contains("NANOVM_DB_SYNC is `sometimes`; it can be `normal` or `full`"),
        "{}",
        both(&o)
    );
    assert!(!d.join("runs.db").exists());

    let o = d.nanovm_env(&args, &[("NANOVM_DB_SYNC", "full")]);
    code(&o, 0);
    let id = stored_id(&o);
    let o = d.nanovm_env(
        &args,
        &[("NANOVM_DB_SYNC", "FULL"), ("NANOVM_LEASE_MS", "500")],
    );
    code(&o, 0);
    let o = d.nanovm_env(
        &args,
        &[("NANOVM_DB_SYNC", "normal"), ("NANOVM_LEASE_MS", "50")],
    );
    code(&o, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM runs"), 3);
    let o = d.nanovm_env(
        &["audit", "verify", "--all", "--db", &db],
        &[("NANOVM_DB_SYNC", "full")],
    );
    code(&o, 0);
    assert!(out(&o).contains("3 run(s)"), "{}", both(&o));

    // The readers check them too.
    let o = d.nanovm_env(
        &["trace", "show", &id, "--db", &db],
        &[("NANOVM_LEASE_MS", "abc")],
    );
    code(&o, 2);
    assert!(err(&o).contains("NANOVM_LEASE_MS"), "{}", both(&o));
}
