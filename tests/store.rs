//! Store integration tests: persisted runs against real SQLite files in a temporary directory
//! (chains, tampering through a raw connection, idempotency, the vault and erasure, suspend and
//! resume, schema versions, concurrency), and a crash test that kills `nanovm run` with
//! SIGKILL at random points.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::tempdir;
use nanovm::check::catalog::{Catalog, ToolInfo};
use nanovm::check::{Options, check_source};
use nanovm::exec::mock::Mocks;
use nanovm::exec::{RunOptions, Runnable, Runtime, Source, Status};
use nanovm::store::{
    Break, Content, Erasure, Persisted, RunRequest, SCHEMA_VERSION, Store, StoreError, StoreOptions,
};
use rusqlite::Connection;
use serde_json::{Value, json};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn block<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn open(dir: &Path) -> Store {
    Store::open(dir.join("nanovm.db"), StoreOptions::default()).unwrap()
}

fn prepare<'a>(program: &Value, tools: impl IntoIterator<Item = &'a str>) -> Runnable {
    let mut catalog = Catalog::new();
    for name in tools {
        catalog.insert(name, ToolInfo::default());
    }
    let opts = Options {
        catalog: Some(Arc::new(catalog)),
        ..Options::default()
    };
    let report = check_source(&program.to_string(), &opts);
    Runnable::new(report.checked.expect("the program passes the checker"))
}

fn mocked(program: &Value, mocks: Value) -> (Runnable, Mocks, Runtime) {
    let mocks = Mocks::from_value(mocks).unwrap();
    let prog = prepare(program, mocks.tools.names());
    let rt = Runtime::new(mocks.llm.clone(), mocks.tools.clone());
    (prog, mocks, rt)
}

fn request(program: &Value, context: Value, key: Option<&str>) -> RunRequest {
    let Value::Object(context) = context else {
        panic!("context must be an object")
    };
    RunRequest {
        program: Content::of(program),
        context,
        policy: Content::of(&json!({"tools": {"lookup_order": {"allowed": true}}})),
        idempotency_key: key.map(str::to_owned),
        save_as: None,
    }
}

fn example(name: &str) -> Value {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn refund() -> (Value, Value, Value) {
    (
        example("examples/refund.json"),
        example("examples/refund.context.json"),
        example("examples/refund.mocks.json"),
    )
}

fn raw(dir: &Path) -> Connection {
    Connection::open(dir.join("nanovm.db")).unwrap()
}

fn count(c: &Connection, sql: &str) -> i64 {
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Make the database refuse inserts into `table` (those `when` selects), as a failing disk
/// would: a trigger that aborts the statement.
fn refuse_inserts(dir: &Path, table: &str, when: &str) {
    raw(dir)
        .execute_batch(&format!(
            "CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} {when}
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;"
        ))
        .unwrap();
}

/// The run's error is the audit failure of a write `refuse_inserts` refused.
fn assert_refused(err: &StoreError) {
    assert!(matches!(err, StoreError::Audit { .. }), "{err}");
    assert!(err.to_string().contains("refused by the test"), "{err}");
}

fn verify_one(store: &Store, run_id: &str) -> Option<Break> {
    let v = block(store.verify(Some(run_id))).unwrap();
    assert_eq!(v.len(), 1);
    v.into_iter().next().unwrap().broken
}

fn run_refund(store: &Store) -> Persisted {
    let (program, context, mocks) = refund();
    let (prog, _mocks, rt) = mocked(&program, mocks);
    block(store.run(&rt, &prog, request(&program, context, None))).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Runs, envelopes, chains
// ---------------------------------------------------------------------------------------------

#[test]
fn a_persisted_run_writes_one_envelope_per_step_and_its_chain_verifies() {
    let dir = tempdir("basic");
    let store = open(&dir);
    let p = run_refund(&store);
    assert_eq!(p.trace.status, Status::Success);
    assert!(!p.replayed);
    assert_eq!(p.run_id, p.trace.trace_id);
    let c = raw(&dir);
    let n = count(&c, "SELECT count(*) FROM envelopes");
    assert_eq!(n as usize, p.trace.steps.len());
    // The envelopes' payloads are the step records, in trace order, with the state hashes.
    let mut st = c
        .prepare(
            "SELECT e.step_id, s.state_hash, e.payload FROM envelopes e
             JOIN steps s USING (run_id, idx) ORDER BY idx",
        )
        .unwrap();
    let rows: Vec<(String, Option<String>, String)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (row, step) in rows.iter().zip(&p.trace.steps) {
        assert_eq!(row.0, step.step_id);
        assert_eq!(row.1, step.state_hash);
        let payload: Value = serde_json::from_str(&row.2).unwrap();
        assert_eq!(payload, serde_json::to_value(step).unwrap());
    }
    assert_eq!(verify_one(&store, &p.run_id), None);
    // The run row holds the trace without what the envelopes give back: the step records
    // and the state snapshots (their state hashes).
    let (steps, snapshots): (String, String) = c
        .query_row(
            "SELECT json_extract(trace, '$.steps'), json_type(trace, '$.state_snapshots') FROM runs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((steps.as_str(), snapshots.as_str()), ("[]", "null"));
    assert_eq!(p.trace.state_snapshots.len(), p.trace.steps.len());
    // The stored trace is the run's trace; the steps view reads the envelopes.
    let stored = block(store.get_trace(&p.run_id)).unwrap().unwrap();
    assert_eq!(stored, serde_json::to_value(&p.trace).unwrap());
    assert_eq!(
        count(&c, "SELECT count(*) FROM steps WHERE status = 'success'"),
        n
    );
    let runs = block(store.list_runs(10)).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, "success");
    assert_eq!(runs[0].envelopes, n as u64);
    assert_eq!(runs[0].program_name, "refund_triage");
    let head: String = c
        .query_row(
            "SELECT lower(hex(hash)) FROM envelopes ORDER BY idx DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(runs[0].head_hash, head);
    assert_eq!(block(store.integrity_check()).unwrap(), "ok");
    // The program is stored once, content-addressed.
    run_refund(&store);
    assert_eq!(count(&c, "SELECT count(*) FROM programs"), 1);
    assert_eq!(count(&c, "SELECT count(*) FROM runs"), 2);
    let all = block(store.verify(None)).unwrap();
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|v| v.broken.is_none()));
}

#[test]
fn envelopes_are_append_only() {
    let dir = tempdir("append-only");
    let store = open(&dir);
    run_refund(&store);
    let c = raw(&dir);
    let err = c
        .execute("UPDATE envelopes SET payload = '{}' WHERE idx = 0", [])
        .unwrap_err();
    assert!(
        err.to_string().contains("append-only: UPDATE refused"),
        "{err}"
    );
    let err = c.execute("DELETE FROM envelopes", []).unwrap_err();
    assert!(
        err.to_string().contains("append-only: DELETE refused"),
        "{err}"
    );
}

/// Tamper through a raw connection that drops the triggers first.
fn tamper(dir: &Path, sql: &str) {
    let c = raw(dir);
    c.execute_batch(&format!(
        "DROP TRIGGER envelopes_no_update; DROP TRIGGER envelopes_no_delete; {sql}"
    ))
    .unwrap();
}

#[test]
fn verification_finds_a_changed_payload() {
    let dir = tempdir("changed");
    let store = open(&dir);
    let p = run_refund(&store);
    tamper(
        &dir,
        "UPDATE envelopes SET payload = replace(payload, '250', '2500') WHERE idx = 0",
    );
    let c = raw(&dir);
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM envelopes WHERE payload LIKE '%2500%'"
        ),
        1
    );
    assert_eq!(
        verify_one(&store, &p.run_id),
        Some(Break::HashMismatch { index: 0 })
    );
}

#[test]
fn verification_finds_a_deleted_row() {
    let dir = tempdir("deleted");
    let store = open(&dir);
    let p = run_refund(&store);
    tamper(&dir, "DELETE FROM envelopes WHERE idx = 1");
    assert_eq!(
        verify_one(&store, &p.run_id),
        Some(Break::IndexGap { index: 1, found: 2 })
    );
    // The last row deleted and the run row's count lowered to match: the head gives it away.
    let dir = tempdir("deleted-tail");
    let store = open(&dir);
    let p = run_refund(&store);
    tamper(
        &dir,
        "DELETE FROM envelopes WHERE idx = (SELECT max(idx) FROM envelopes);
         UPDATE runs SET envelopes = envelopes - 1",
    );
    assert_eq!(verify_one(&store, &p.run_id), Some(Break::HeadMismatch));
}

#[test]
fn verification_finds_a_reordered_index() {
    let dir = tempdir("reordered");
    let store = open(&dir);
    let p = run_refund(&store);
    tamper(
        &dir,
        "UPDATE envelopes SET idx = -1 WHERE idx = 1;
         UPDATE envelopes SET idx = 1 WHERE idx = 2;
         UPDATE envelopes SET idx = 2 WHERE idx = -1;",
    );
    assert_eq!(
        verify_one(&store, &p.run_id),
        Some(Break::PrevMismatch { index: 1 })
    );
    let v = block(store.verify(None)).unwrap();
    assert_eq!(v[0].broken.as_ref().and_then(Break::index), Some(1));
}

#[test]
fn a_database_from_a_future_schema_version_is_refused() {
    let dir = tempdir("future");
    drop(open(&dir));
    raw(&dir)
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    let err = Store::open(dir.join("nanovm.db"), StoreOptions::default()).unwrap_err();
    assert_eq!(
        err,
        StoreError::FutureSchema {
            found: SCHEMA_VERSION + 1,
            supported: SCHEMA_VERSION
        }
    );
    assert!(err.to_string().contains("use a newer nanovm"));
    // A file that is not a database is a clear error too.
    std::fs::write(dir.join("junk.db"), b"this is not sqlite, just text").unwrap();
    let err = Store::open(dir.join("junk.db"), StoreOptions::default()).unwrap_err();
    assert!(err.to_string().contains("not a database"), "{err}");
}

#[test]
fn integrity_check_reports_a_reference_to_a_missing_row() {
    let dir = tempdir("dangling");
    let store = open(&dir);
    run_refund(&store);
    assert_eq!(block(store.integrity_check()).unwrap(), "ok");
    // Written behind nanovm's back: an envelope of a run that does not exist.
    let c = raw(&dir);
    c.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
    c.execute(
            "INSERT INTO envelopes (run_id, idx, step_id, policy_hash, state_hash, prev_hash, hash, payload)
             VALUES ('no-such-run', 0, 's', X'70', NULL, X'78', X'79', '{}')",
            [],
        )
        .unwrap();
    let report = block(store.integrity_check()).unwrap();
    assert_eq!(
        report,
        "envelopes row (without rowid) refers to a missing runs row"
    );
}

#[test]
fn the_database_is_in_wal_mode() {
    let dir = tempdir("wal");
    let _store = open(&dir);
    let c = raw(&dir);
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let v: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
}

#[test]
fn a_new_file_has_8_kib_pages_and_an_existing_file_keeps_its_own() {
    let page_size = |c: &Connection| count(c, "PRAGMA page_size");
    let dir = tempdir("pages-new");
    let store = open(&dir);
    run_refund(&store);
    drop(store);
    assert_eq!(page_size(&raw(&dir)), nanovm::store::PAGE_SIZE);
    assert_eq!(nanovm::store::PAGE_SIZE, 8192);

    // A file made with SQLite's default pages (as nanovm made them before): it upgrades,
    // stores runs, verifies and keeps 4 KiB pages.
    let dir = tempdir("pages-old");
    let c = raw(&dir);
    c.execute_batch("PRAGMA page_size = 4096; CREATE TABLE t (a); DROP TABLE t;")
        .unwrap();
    drop(c);
    nanovm::store::create_at_schema_version(dir.join("nanovm.db"), 1).unwrap();
    let store = open(&dir);
    let p = run_refund(&store);
    assert_eq!(verify_one(&store, &p.run_id), None);
    drop(store);
    assert_eq!(page_size(&raw(&dir)), 4096);
}

/// Insert a run at schema 3 by hand, its envelopes' hashes in hex as version 3 stored them:
/// a chain of `payloads.len()` links, the one at `tamper` (if any) with its stored hash
/// replaced by `tampered`.
fn insert_v3_run(c: &Connection, run_id: &str, payloads: &[&str], tamper: Option<(usize, &str)>) {
    use nanovm::store::chain::{Link, genesis};
    let policy = "ab".repeat(32);
    let mut prev = genesis(run_id);
    for (i, payload) in payloads.iter().enumerate() {
        let state = format!("{i:064x}");
        let link = Link {
            index: i as u64,
            step_id: "s",
            policy_hash: &policy,
            state_hash: (i != 1).then_some(state.as_str()),
            prev_hash: &prev,
            payload,
        };
        let hash = link.hash();
        let stored = match tamper {
            Some((at, text)) if at == i => text.to_owned(),
            _ => hash.clone(),
        };
        c.execute(
            "INSERT INTO envelopes (run_id, idx, step_id, policy_hash, state_hash, prev_hash, hash, payload)
             VALUES (?1, ?2, 's', ?3, ?4, ?5, ?6, ?7)",
            rusqlite::params![run_id, i as i64, policy, link.state_hash, prev, stored, payload],
        )
        .unwrap();
        prev = hash;
    }
    c.execute(
        "INSERT INTO runs (run_id, program_hash, policy_hash, program_name, status, started_at,
                           context, envelopes, head_hash, owner, lease_until)
         VALUES (?1, 'prog', 'pol', 'old', 'success', '2020-01-01T00:00:00.000Z', '{}', ?2, ?3,
                 'o', 0)",
        rusqlite::params![run_id, payloads.len() as i64, prev],
    )
    .unwrap();
}

#[test]
fn a_schema_3_file_upgrades_to_hashes_stored_as_bytes_and_its_chains_verify_as_before() {
    let dir = tempdir("v3-hashes");
    let path = dir.join("nanovm.db");
    nanovm::store::create_at_schema_version(&path, 3).unwrap();
    let payloads = ["{\"n\":0}", "{\"n\":1}", "{\"n\":2}"];
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "PRAGMA foreign_keys = OFF;
             INSERT INTO programs (hash, name, source, created_at) VALUES ('prog', 'old', '{}', 't');
             INSERT INTO policies (hash, policy, created_at) VALUES ('pol', '{}', 't');",
        )
        .unwrap();
        insert_v3_run(&c, "good", &payloads, None);
        // A hash changed by hand into text that is no sha256: kept, and still reported.
        insert_v3_run(&c, "bad", &payloads, Some((1, "not a hash")));
        // A hash in upper case: a digest, but not as nanovm writes it; reported too.
        let upper = {
            let h: String = c
                .query_row(
                    "SELECT hash FROM envelopes WHERE run_id = 'good' AND idx = 2",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            h.to_uppercase()
        };
        insert_v3_run(&c, "upper", &payloads, Some((2, &upper)));
        let text: String = c
            .query_row("SELECT typeof(hash) FROM envelopes LIMIT 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(text, "text");
    }
    let store = open(&dir);
    assert_eq!(block(store.health()).unwrap().schema_version, 4);
    let verdicts = block(store.verify(None)).unwrap();
    let by_id = |id: &str| verdicts.iter().find(|v| v.run_id == id).unwrap();
    assert_eq!((by_id("good").envelopes, &by_id("good").broken), (3, &None));
    assert_eq!(by_id("bad").broken, Some(Break::HashMismatch { index: 1 }));
    assert_eq!(
        by_id("upper").broken,
        Some(Break::HashMismatch { index: 2 })
    );
    let c = raw(&dir);
    // Every digest is its 32 bytes (7 of the 9 envelopes); the two changed by hand kept the
    // bytes of their text.
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM envelopes WHERE length(policy_hash) = 32
               AND length(prev_hash) = 32 AND length(hash) = 32
               AND (state_hash IS NULL OR length(state_hash) = 32)
               AND typeof(hash) = 'blob'"
        ),
        7
    );
    let kept: Vec<u8> = c
        .query_row(
            "SELECT hash FROM envelopes WHERE run_id = 'bad' AND idx = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kept, b"not a hash");
    // The steps view shows state hashes in hex (NULL stays NULL), as version 3 did.
    let states: Vec<Option<String>> = c
        .prepare("SELECT state_hash FROM steps WHERE run_id = 'good' ORDER BY idx")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        states,
        vec![
            Some(format!("{:064x}", 0)),
            None,
            Some(format!("{:064x}", 2))
        ]
    );
    // The append-only triggers are back.
    assert!(
        c.execute("DELETE FROM envelopes WHERE run_id = 'good'", [])
            .is_err()
    );
    assert!(
        c.execute("UPDATE envelopes SET idx = 9 WHERE run_id = 'good'", [])
            .is_err()
    );
    // New runs go on the upgraded file and verify.
    let p = run_refund(&store);
    assert_eq!(verify_one(&store, &p.run_id), None);
    assert_eq!(block(store.integrity_check()).unwrap(), "ok");
}

// ---------------------------------------------------------------------------------------------
// Idempotency
// ---------------------------------------------------------------------------------------------

#[test]
fn a_finished_key_returns_the_stored_result_without_running() {
    let dir = tempdir("idem");
    let store = open(&dir);
    let (program, context, mocks) = refund();
    let (prog, mocks, rt) = mocked(&program, mocks);
    let first =
        block(store.run(&rt, &prog, request(&program, context.clone(), Some("k1")))).unwrap();
    let calls = mocks.log.take().len();
    assert!(calls >= 3);
    let again =
        block(store.run(&rt, &prog, request(&program, context.clone(), Some("k1")))).unwrap();
    assert!(again.replayed);
    assert_eq!(again.run_id, first.run_id);
    assert_eq!(again.trace, first.trace);
    assert!(mocks.log.take().is_empty(), "nothing ran the second time");
    // Another program under the same key is refused.
    let mut other = program.clone();
    other["name"] = json!("another");
    let (prog2, _m, rt2) = mocked(&other, refund().2);
    let err = block(store.run(&rt2, &prog2, request(&other, context, Some("k1")))).unwrap_err();
    assert!(matches!(err, StoreError::KeyConflict { .. }), "{err}");
    let c = raw(&dir);
    assert_eq!(count(&c, "SELECT count(*) FROM runs"), 1);
}

#[test]
fn a_failed_run_is_the_keys_result_too() {
    let dir = tempdir("idem-failed");
    let store = open(&dir);
    let program = json!({"name": "f", "steps": [{"id": "a", "type": "tool", "tool": "t"}]});
    let (prog, mocks, rt) = mocked(&program, json!({"tools": {"t": {"error": "down"}}}));
    let first = block(store.run(&rt, &prog, request(&program, json!({}), Some("kf")))).unwrap();
    assert_eq!(first.trace.status, Status::Failed);
    let again = block(store.run(&rt, &prog, request(&program, json!({}), Some("kf")))).unwrap();
    assert!(again.replayed);
    assert_eq!(again.trace.status, Status::Failed);
    assert_eq!(mocks.log.take().len(), 1);
}

#[test]
fn concurrent_requests_with_one_key_run_the_program_once() {
    let dir = tempdir("idem-concurrent");
    let store = open(&dir);
    let program = json!({"name": "slow", "steps": [
        {"id": "think", "type": "llm", "prompt": "go"},
        {"id": "act", "type": "tool", "tool": "t", "args": {"x": "$think"}}
    ]});
    let (prog, mocks, rt) = mocked(
        &program,
        json!({"tools": {"t": {"ok": true}}, "llm": {"*": {"reply": "yes", "delay_s": 0.2}}}),
    );
    let results = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let mut tasks = Vec::new();
            for _ in 0..4 {
                let (store, rt, prog, req) = (
                    store.clone(),
                    rt.clone(),
                    prog.clone(),
                    request(&program, json!({}), Some("same")),
                );
                tasks.push(tokio::spawn(
                    async move { store.run(&rt, &prog, req).await },
                ));
            }
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap().unwrap());
            }
            out
        });
    let ran: Vec<_> = results.iter().filter(|p| !p.replayed).collect();
    assert_eq!(ran.len(), 1, "exactly one request ran the program");
    assert!(results.iter().all(|p| p.run_id == ran[0].run_id));
    assert!(results.iter().all(|p| p.trace.status == Status::Success));
    let calls = mocks.log.take();
    assert_eq!(calls.len(), 2, "{calls:#?}");
}

#[test]
fn a_key_whose_run_was_interrupted_runs_again() {
    let dir = tempdir("idem-interrupted");
    let opts = StoreOptions {
        lease: Duration::from_millis(100),
        ..StoreOptions::default()
    };
    let program = json!({"name": "slow", "steps": [
        {"id": "think", "type": "llm", "prompt": "go"},
        {"id": "act", "type": "tool", "tool": "t"}
    ]});
    let (prog, mocks, rt) = mocked(
        &program,
        json!({"tools": {"t": {"ok": true}}, "llm": {"*": {"reply": "yes", "delay_s": 5}}}),
    );
    // The first run is dropped mid-way (its process "dies": the lease is no longer renewed).
    let store = Store::open(dir.join("nanovm.db"), opts.clone()).unwrap();
    block(async {
        let run = store.run(&rt, &prog, request(&program, json!({}), Some("k")));
        let _ = tokio::time::timeout(Duration::from_millis(50), run).await;
    });
    let runs = block(store.list_runs(10)).unwrap();
    assert_eq!(runs.len(), 1);
    let first = runs[0].run_id.clone();
    drop(store);
    std::thread::sleep(Duration::from_millis(150));
    let runs = {
        let s = Store::open(dir.join("nanovm.db"), opts.clone()).unwrap();
        block(s.list_runs(10)).unwrap()
    };
    assert_eq!(runs[0].status, "interrupted");
    let (prog, mocks2, rt) = mocked(
        &program,
        json!({"tools": {"t": {"ok": true}}, "llm": {"*": "yes"}}),
    );
    let store = Store::open(dir.join("nanovm.db"), opts).unwrap();
    let p = block(store.run(&rt, &prog, request(&program, json!({}), Some("k")))).unwrap();
    assert!(!p.replayed);
    assert_eq!(p.took_over.as_deref(), Some(first.as_str()));
    assert_eq!(p.trace.status, Status::Success);
    assert_eq!(mocks2.log.take().len(), 2);
    drop(mocks);
    let again = block(store.run(&rt, &prog, request(&program, json!({}), Some("k")))).unwrap();
    assert!(again.replayed);
    assert_eq!(again.run_id, p.run_id);
    let statuses: Vec<String> = block(store.list_runs(10))
        .unwrap()
        .into_iter()
        .map(|r| r.status)
        .collect();
    let mut sorted = statuses.clone();
    sorted.sort();
    assert_eq!(sorted, vec!["interrupted", "success"]);
    assert!(
        block(store.verify(None))
            .unwrap()
            .iter()
            .all(|v| v.broken.is_none())
    );
}

// ---------------------------------------------------------------------------------------------
// The vault
// ---------------------------------------------------------------------------------------------

#[test]
fn secrets_reach_tools_only_and_erasure_keeps_chains_valid() {
    let dir = tempdir("vault");
    let store = open(&dir);
    let program = json!({"name": "pay", "steps": [
        {"id": "note", "type": "llm", "prompt": "Charge card $card for $amount"},
        {"id": "charge", "type": "tool", "tool": "charge", "args": {"card": "$card", "auth": "Bearer $card"}},
        {"id": "echo", "type": "tool", "tool": "echo", "args": {"card": "$card"}}
    ]});
    let mocks = Mocks::from_value(json!({"llm": {"*": "ok"}})).unwrap();
    let log = mocks.log.clone();
    // `charge` answers with the card it got; `echo` too: both answers must be hidden again.
    let tools = nanovm::exec::native::NativeTools::new()
        .register("charge", |args| {
            Ok(json!({"charged": args["card"], "ok": true}))
        })
        .register("echo", Ok);
    let prog = prepare(&program, ["charge", "echo"]);
    let rt = Runtime::new(mocks.llm.clone(), Arc::new(tools));
    let secret = "4242424242424242";
    let context = json!({"card": {"$secret": secret, "id": "card-4242"}, "amount": 5});
    let p = block(store.run(&rt, &prog, request(&program, context, None))).unwrap();
    assert_eq!(p.trace.status, Status::Success);
    // The prompt got the token.
    let calls = log.take();
    assert_eq!(
        calls[0]["llm"]["prompt"],
        json!("Charge card vault://secret/card-4242 for 5")
    );
    // Tools got the value (their answers echo it, and those were turned back into tokens).
    let charge = p
        .trace
        .steps
        .iter()
        .find(|s| s.step_id == "charge")
        .unwrap();
    assert_eq!(
        charge.output,
        json!({"charged": "vault://secret/card-4242", "ok": true})
    );
    let echo = p.trace.steps.iter().find(|s| s.step_id == "echo").unwrap();
    assert_eq!(echo.output, json!({"card": "vault://secret/card-4242"}));
    // Nothing but the vault holds the value.
    let c = raw(&dir);
    for sql in [
        "SELECT count(*) FROM envelopes WHERE payload LIKE '%4242424242424242%'",
        "SELECT count(*) FROM runs WHERE trace LIKE '%4242424242424242%' OR context LIKE '%4242424242424242%'",
    ] {
        assert_eq!(count(&c, sql), 0, "{sql}");
    }
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM vault WHERE value = '\"4242424242424242\"'"
        ),
        1
    );
    assert_eq!(verify_one(&store, &p.run_id), None);
    // Erase: the value is gone, projections show the tombstone, the chain still verifies.
    assert_eq!(
        block(store.erase("vault://secret/card-4242")).unwrap(),
        Erasure::Erased
    );
    assert_eq!(
        block(store.erase("card-4242")).unwrap(),
        Erasure::AlreadyErased
    );
    assert!(block(store.erase("nope")).is_err());
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM vault WHERE value IS NULL AND erased_at IS NOT NULL"
        ),
        1
    );
    let shown = block(store.get_trace(&p.run_id)).unwrap().unwrap();
    let text = shown.to_string();
    assert!(!text.contains("vault://secret/card-4242"), "{text}");
    assert!(text.contains("[REDACTED_TOMBSTONE]"));
    assert_eq!(verify_one(&store, &p.run_id), None);
    // The same id with another value is refused; with the erased id too.
    let context = json!({"card": {"$secret": "1111", "id": "card-4242"}});
    let err = block(store.run(&rt, &prog, request(&program, context, None))).unwrap_err();
    assert!(matches!(err, StoreError::SecretConflict(_)), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Suspend and resume
// ---------------------------------------------------------------------------------------------

#[test]
fn a_suspended_run_resumes_from_the_store_and_its_chain_continues() {
    let dir = tempdir("resume");
    let store = open(&dir);
    let program = json!({"name": "approve", "steps": [
        {"id": "ask", "type": "tool", "tool": "approval"},
        {"id": "done", "type": "tool", "tool": "notify", "args": {"by": "$__webhook__.by"}}
    ]});
    let (prog, mocks, rt) = mocked(
        &program,
        json!({"tools": {"approval": "PENDING", "notify": {"sent": true}}}),
    );
    let p = block(store.run(&rt, &prog, request(&program, json!({}), None))).unwrap();
    assert_eq!(p.trace.status, Status::Suspended);
    let summary = block(store.run_summary(&p.run_id)).unwrap().unwrap();
    assert_eq!(summary.status, "suspended");
    assert_eq!(summary.envelopes, 1);
    let stored = block(store.program_of_run(&p.run_id)).unwrap();
    assert_eq!(stored.name, "approve");
    let r = block(store.resume(
        &rt,
        &prog,
        &p.run_id,
        json!({"by": "ops"}),
        Source::Operator,
    ))
    .unwrap();
    assert_eq!(r.trace.status, Status::Success);
    assert_eq!(r.run_id, p.run_id);
    let calls = mocks.log.take();
    assert_eq!(calls.last().unwrap()["args"], json!({"by": "ops"}));
    let summary = block(store.run_summary(&p.run_id)).unwrap().unwrap();
    assert_eq!(summary.status, "success");
    assert_eq!(summary.envelopes, 2);
    assert_eq!(verify_one(&store, &p.run_id), None);
    // Resuming again is an error, and so is an unknown run.
    let err = block(store.resume(&rt, &prog, &p.run_id, Value::Null, Source::Webhook)).unwrap_err();
    assert!(matches!(err, StoreError::NotSuspended { .. }), "{err}");
    let err = block(store.resume(&rt, &prog, "nope", Value::Null, Source::Webhook)).unwrap_err();
    assert_eq!(err, StoreError::NoRun("nope".into()));
}

#[test]
fn a_resume_with_the_wrong_program_leaves_the_run_suspended() {
    let dir = tempdir("resume-wrong");
    let store = open(&dir);
    let program =
        json!({"name": "approve", "steps": [{"id": "ask", "type": "tool", "tool": "approval"}]});
    let (prog, _m, rt) = mocked(&program, json!({"tools": {"approval": "PENDING"}}));
    let p = block(store.run(&rt, &prog, request(&program, json!({}), None))).unwrap();
    let other =
        json!({"name": "other", "steps": [{"id": "ask", "type": "tool", "tool": "approval"}]});
    let prog2 = prepare(&other, ["approval"]);
    let err =
        block(store.resume(&rt, &prog2, &p.run_id, Value::Null, Source::Webhook)).unwrap_err();
    assert!(matches!(err, StoreError::Resume { .. }), "{err}");
    let summary = block(store.run_summary(&p.run_id)).unwrap().unwrap();
    assert_eq!(summary.status, "suspended");
    let r = block(store.resume(&rt, &prog, &p.run_id, Value::Null, Source::Webhook)).unwrap();
    assert_eq!(r.trace.status, Status::Success);
}

// ---------------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------------

#[test]
fn eight_tasks_of_500_runs_lose_and_duplicate_nothing() {
    let dir = tempdir("concurrency");
    let program = json!({"name": "small", "steps": [
        {"id": "a", "type": "tool", "tool": "t", "args": {"n": "$n"}},
        {"id": "b", "type": "condition", "condition": "$a.output.ok == true", "then": "c", "otherwise": "c"},
        {"id": "c", "type": "tool", "tool": "t", "args": {"n": "$n"}, "is_terminal": true}
    ]});
    let (prog, _m, rt) = mocked(&program, json!({"tools": {"t": {"ok": true}}}));
    const TASKS: usize = 8;
    const RUNS: usize = 500;
    let ids = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let mut tasks = Vec::new();
            for t in 0..TASKS {
                // Half the tasks share a store handle, half open their own (another writer).
                let store = Store::open(dir.join("nanovm.db"), StoreOptions::default()).unwrap();
                let (rt, prog, program) = (rt.clone(), prog.clone(), program.clone());
                tasks.push(tokio::spawn(async move {
                    let mut ids = Vec::new();
                    for i in 0..RUNS {
                        let key = (i % 3 == 0).then(|| format!("t{t}-r{i}"));
                        let req = request(&program, json!({"n": i}), key.as_deref());
                        let p = store.run(&rt, &prog, req).await.unwrap();
                        assert_eq!(p.trace.status, Status::Success);
                        ids.push(p.run_id);
                    }
                    ids
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            all
        });
    assert_eq!(ids.len(), TASKS * RUNS);
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), TASKS * RUNS);
    let c = raw(&dir);
    assert_eq!(
        count(&c, "SELECT count(*) FROM runs") as usize,
        TASKS * RUNS
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM runs WHERE status = 'success'") as usize,
        TASKS * RUNS
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM envelopes") as usize,
        TASKS * RUNS * 3
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM idempotency_keys") as usize,
        TASKS * RUNS.div_ceil(3)
    );
    let store = open(&dir);
    let verdicts = block(store.verify(None)).unwrap();
    assert_eq!(verdicts.len(), TASKS * RUNS);
    assert!(
        verdicts
            .iter()
            .all(|v| v.broken.is_none() && v.envelopes == 3)
    );
}

// ---------------------------------------------------------------------------------------------
// Crash test: SIGKILL at random points
// ---------------------------------------------------------------------------------------------

/// A small deterministic generator (no dependency needed for kill delays).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

#[cfg(unix)]
#[test]
fn a_run_killed_at_random_points_leaves_a_sound_database_and_runs_once() {
    use std::process::{Command, Stdio};
    let dir = tempdir("crash");
    // 40 llm steps of 2 ms each: a run takes ~100 ms, so kills land before, during and after.
    let steps: Vec<Value> = (0..40)
        .map(|i| json!({"id": format!("s{i}"), "type": "llm", "prompt": format!("step {i} $n")}))
        .collect();
    let program = json!({"name": "long", "steps": steps});
    let mocks = json!({"llm": {"*": {"reply": "ok", "delay_s": 0.002}}});
    std::fs::write(dir.join("long.json"), program.to_string()).unwrap();
    std::fs::write(dir.join("mocks.json"), mocks.to_string()).unwrap();
    std::fs::write(dir.join("ctx.json"), "{\"n\": 1}").unwrap();
    let db = dir.join("crash.db");
    let nanovm = |key: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_nanovm"));
        c.args([
            "run",
            "long.json",
            "--mocks",
            "mocks.json",
            "--context",
            "ctx.json",
        ])
        .args(["--format", "json", "--idempotency-key", key])
        .arg("--db")
        .arg(&db)
        .current_dir(&dir)
        .env("NANOVM_LEASE_MS", "60")
        .env_remove("NANOVM_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        c
    };
    let mut rng = Lcg(0x5eed);
    const ITERATIONS: usize = 50;
    let mut killed_mid_run = 0;
    for i in 0..ITERATIONS {
        let key = format!("crash-{i}");
        let mut child = nanovm(&key).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(rng.next() % 160));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        {
            let c = Connection::open(&db).unwrap();
            let ok: String = c
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .unwrap();
            assert_eq!(ok, "ok", "iteration {i}");
            let running = c
                .query_row(
                    "SELECT count(*) FROM runs WHERE idempotency_key = ?1 AND status = 'running'",
                    [&key],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap_or(0);
            killed_mid_run += running as usize;
        }
        let audit = Command::new(env!("CARGO_BIN_EXE_nanovm"))
            .args(["audit", "verify", "--all", "--db"])
            .arg(&db)
            .output()
            .unwrap();
        // The schema may not exist yet when the first child was killed before creating it.
        if db.exists() && audit.status.code() != Some(2) {
            assert_eq!(
                audit.status.code(),
                Some(0),
                "iteration {i}: {}",
                String::from_utf8_lossy(&audit.stdout)
            );
        }
        // Re-running with the key completes, and then it is done: once.
        let out = nanovm(&key).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "iteration {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let trace: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(trace["status"], "success", "iteration {i}");
        let again = nanovm(&key).output().unwrap();
        let trace2: Value = serde_json::from_slice(&again.stdout).unwrap();
        assert_eq!(
            trace2["trace_id"], trace["trace_id"],
            "iteration {i}: ran twice"
        );
        let c = Connection::open(&db).unwrap();
        let successes: i64 = c
            .query_row(
                "SELECT count(*) FROM runs WHERE idempotency_key = ?1 AND status = 'success'",
                [&key],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(successes, 1, "iteration {i}");
    }
    // Most kills should land mid-run; if none did, the test would prove little.
    assert!(
        killed_mid_run >= 5,
        "only {killed_mid_run} kills landed mid-run"
    );
    let c = Connection::open(&db).unwrap();
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let audit = Command::new(env!("CARGO_BIN_EXE_nanovm"))
        .args(["audit", "verify", "--all", "--format", "json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&audit.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(
        count(&c, "SELECT count(*) FROM runs WHERE status = 'success'") as usize,
        ITERATIONS
    );
}

#[test]
fn closing_the_store_checkpoints_the_wal_into_the_file() {
    let dir = tempdir("checkpoint");
    let store = open(&dir);
    let p = run_refund(&store);
    // A read leaves a pooled read connection open; it must not keep the WAL alive.
    block(store.get_trace(&p.run_id)).unwrap().unwrap();
    drop(store);
    assert!(!dir.join("nanovm.db-wal").exists());
    // A copy of the main file alone holds everything.
    std::fs::copy(dir.join("nanovm.db"), dir.join("copy.db")).unwrap();
    let c = Connection::open(dir.join("copy.db")).unwrap();
    assert_eq!(count(&c, "SELECT count(*) FROM runs"), 1);
}

#[test]
fn another_applications_database_is_refused_and_left_alone() {
    let dir = tempdir("foreign");
    let path = dir.join("other.db");
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE x (a); INSERT INTO x VALUES (1);")
            .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = Store::open(&path, StoreOptions::default()).unwrap_err();
    assert_eq!(err, StoreError::NotNanovm(path.display().to_string()));
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(!dir.join("other.db-wal").exists());
}

#[test]
fn a_run_that_waits_keeps_renewing_its_lease() {
    let dir = tempdir("lease-renewed");
    let opts = StoreOptions {
        lease: Duration::from_millis(100),
        ..StoreOptions::default()
    };
    let program = json!({"name": "slow", "steps": [
        {"id": "think", "type": "llm", "prompt": "go"}
    ]});
    let (prog, _mocks, rt) = mocked(
        &program,
        json!({"llm": {"*": {"reply": "yes", "delay_s": 0.5}}}),
    );
    let store = Store::open(dir.join("nanovm.db"), opts).unwrap();
    let lease_after = |ms: u64| {
        let path = dir.join("nanovm.db");
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(ms));
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            let lease: i64 = Connection::open(path)
                .unwrap()
                .query_row("SELECT lease_until FROM runs", [], |r| r.get(0))
                .unwrap();
            lease - now
        })
    };
    // Read while the llm step waits, well after the first lease (100 ms) ran out.
    let reader = lease_after(350);
    let p = block(store.run(&rt, &prog, request(&program, json!({}), None))).unwrap();
    assert_eq!(p.trace.status, Status::Success);
    let left = reader.join().unwrap();
    assert!(
        left > 0,
        "the lease was not renewed: it ran out {}ms ago",
        -left
    );
}

#[test]
fn a_resume_whose_process_died_can_be_resumed_again() {
    let dir = tempdir("resume-interrupted");
    let opts = StoreOptions {
        lease: Duration::from_millis(100),
        ..StoreOptions::default()
    };
    let program = json!({"name": "approve", "steps": [
        {"id": "ask", "type": "tool", "tool": "approval"},
        {"id": "note", "type": "tool", "tool": "notify"},
        {"id": "think", "type": "llm", "prompt": "done?"}
    ]});
    let slow = json!({"tools": {"approval": "PENDING", "notify": {"sent": true}},
                      "llm": {"*": {"reply": "yes", "delay_s": 5}}});
    let (prog, _m, rt) = mocked(&program, slow);
    let store = Store::open(dir.join("nanovm.db"), opts.clone()).unwrap();
    let p = block(store.run(&rt, &prog, request(&program, json!({}), None))).unwrap();
    assert_eq!(p.trace.status, Status::Suspended);
    // The resume runs `note`, then dies in the slow llm step.
    block(async {
        let r = store.resume(&rt, &prog, &p.run_id, json!(1), Source::Webhook);
        let _ = tokio::time::timeout(Duration::from_millis(100), r).await;
    });
    drop(store);
    let c = raw(&dir);
    assert_eq!(count(&c, "SELECT count(*) FROM envelopes"), 2);
    std::thread::sleep(Duration::from_millis(150));
    let (prog, mocks, rt) = mocked(
        &program,
        json!({"tools": {"approval": "PENDING", "notify": {"sent": true}}, "llm": {"*": "yes"}}),
    );
    let store = Store::open(dir.join("nanovm.db"), opts).unwrap();
    let err = block(store.resume(&rt, &prog, "nope", json!(2), Source::Webhook)).unwrap_err();
    assert_eq!(err, StoreError::NoRun("nope".into()));
    let r = block(store.resume(&rt, &prog, &p.run_id, json!(2), Source::Webhook)).unwrap();
    assert_eq!(r.trace.status, Status::Success);
    assert_eq!(mocks.log.take().len(), 2, "note and think ran again");
    // The chain holds the interrupted attempt's envelope too, and verifies.
    assert_eq!(count(&c, "SELECT count(*) FROM envelopes"), 4);
    assert_eq!(verify_one(&store, &p.run_id), None);
    assert_eq!(count(&c, "SELECT count(*) FROM cursors"), 0);
}

#[test]
fn stores_opened_at_once_on_a_new_file_all_succeed() {
    for round in 0..5 {
        let dir = tempdir(&format!("open-race-{round}"));
        let path = dir.join("nanovm.db");
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || Store::open(path, StoreOptions::default()).map(drop))
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), Ok(()));
        }
        let v: i64 = raw(&dir)
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
    }
}

#[test]
fn a_resumed_run_hands_its_secrets_to_tools_again() {
    let dir = tempdir("resume-secret");
    let store = open(&dir);
    let program = json!({"name": "pay", "steps": [
        {"id": "ask", "type": "tool", "tool": "approval"},
        {"id": "charge", "type": "tool", "tool": "charge", "args": {"card": "$card"}}
    ]});
    let asked = Arc::new(AtomicUsize::new(0));
    let asked2 = asked.clone();
    let tools = nanovm::exec::native::NativeTools::new()
        .register("approval", move |_| {
            Ok(match asked2.fetch_add(1, Ordering::SeqCst) {
                0 => json!("PENDING"),
                _ => json!("ok"),
            })
        })
        .register("charge", |args| {
            Ok(json!({"real": args["card"] == json!("4242424242424242")}))
        });
    let prog = prepare(&program, ["approval", "charge"]);
    let mocks = Mocks::from_value(json!({})).unwrap();
    let rt = Runtime::new(mocks.llm.clone(), Arc::new(tools));
    let context = json!({"card": {"$secret": "4242424242424242", "id": "c"}});
    let p = block(store.run(&rt, &prog, request(&program, context, None))).unwrap();
    assert_eq!(p.trace.status, Status::Suspended);
    let r = block(store.resume(&rt, &prog, &p.run_id, Value::Null, Source::Webhook)).unwrap();
    assert_eq!(r.trace.status, Status::Success);
    let charge = r
        .trace
        .steps
        .iter()
        .find(|s| s.step_id == "charge")
        .unwrap();
    assert_eq!(charge.output, json!({"real": true}));
    assert_eq!(asked.load(Ordering::SeqCst), 1);
}

#[test]
fn runs_are_listed_newest_first_and_found_by_id() {
    let dir = tempdir("list-order");
    let store = open(&dir);
    let ids: Vec<String> = (0..3).map(|_| run_refund(&store).run_id).collect();
    let listed: Vec<String> = block(store.list_runs(2))
        .unwrap()
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    assert_eq!(listed, vec![ids[2].clone(), ids[1].clone()]);
    // The oldest, outside the list's limit, is still found by its id.
    let first = block(store.run_summary(&ids[0])).unwrap().unwrap();
    assert_eq!(first.run_id, ids[0]);
    assert!(block(store.run_summary("no-such-run")).unwrap().is_none());
}

/// A stored trace keeps its step records in the envelopes only; reading it back must give the
/// trace the run returned, for every kind of run the conformance corpus has (parallel
/// sub-steps, retries, errors, usage, budgets, suspended and resumed runs).
#[test]
fn every_conformance_runs_stored_trace_reads_back_as_it_ran() {
    let dir = tempdir("conformance-traces");
    let store = open(&dir);
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/cases");
    let mut names: Vec<_> = std::fs::read_dir(&cases)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("run-") && n.ends_with(".json"))
        .collect();
    names.sort();
    let (mut stored, mut resumed) = (0, 0);
    for name in &names {
        let case: Value =
            serde_json::from_str(&std::fs::read_to_string(cases.join(name)).unwrap()).unwrap();
        let mocks = Mocks::from_value(case["mocks"].clone()).unwrap();
        let mut catalog = Catalog::new();
        for tool in mocks.tools.names() {
            catalog.insert(tool, ToolInfo::default());
        }
        let opts = Options {
            catalog: Some(Arc::new(catalog)),
            ..Options::default()
        };
        let Some(checked) = check_source(&case["program"].to_string(), &opts).checked else {
            continue;
        };
        let prog = Runnable::new(checked);
        let rt = Runtime::new(mocks.llm.clone(), mocks.tools.clone()).with_options(RunOptions {
            backoff_base: Duration::from_millis(1),
            backoff_max: Duration::from_millis(1),
            observer: None,
        });
        let context = case.get("context").cloned().unwrap_or(json!({}));
        let p = block(store.run(&rt, &prog, request(&case["program"], context, None))).unwrap();
        let back = block(store.get_trace(&p.run_id)).unwrap().unwrap();
        let ran = serde_json::to_value(&p.trace).unwrap();
        assert_eq!(back, ran, "{name}");
        // Each record's fields in the trace format's order, too.
        let keys = |t: &Value| -> Vec<Vec<String>> {
            t["steps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_object().unwrap().keys().cloned().collect())
                .collect()
        };
        assert_eq!(keys(&back), keys(&ran), "{name}");
        stored += 1;
        if let (Some(r), Status::Suspended) = (case.get("resume"), p.trace.status) {
            let source: Source = serde_json::from_value(r["source"].clone()).unwrap();
            let payload = r["payload"].clone();
            let after = block(store.resume(&rt, &prog, &p.run_id, payload, source)).unwrap();
            let back = block(store.get_trace(&p.run_id)).unwrap().unwrap();
            assert_eq!(back, serde_json::to_value(&after.trace).unwrap(), "{name}");
            resumed += 1;
        }
    }
    assert!(
        stored >= 50 && resumed >= 1,
        "{stored} stored, {resumed} resumed"
    );
    // What the runs table holds is the trace without its steps.
    let c = raw(&dir);
    let full = count(
        &c,
        "SELECT count(*) FROM runs WHERE json_array_length(trace, '$.steps') > 0",
    );
    assert_eq!(full, 0);
}

#[test]
fn a_run_whose_row_could_not_be_written_leaves_no_envelopes() {
    let dir = tempdir("begin-failed");
    let store = open(&dir);
    refuse_inserts(&dir, "runs", "");
    let (program, context, mocks) = refund();
    let (prog, _mocks, rt) = mocked(&program, mocks);
    let err = block(store.run(&rt, &prog, request(&program, context, None))).unwrap_err();
    assert_refused(&err);
    // No run row, so no envelope either: none refers to a missing run.
    let c = raw(&dir);
    assert_eq!(count(&c, "SELECT count(*) FROM runs"), 0);
    assert_eq!(count(&c, "SELECT count(*) FROM envelopes"), 0);
    assert_eq!(block(store.integrity_check()).unwrap(), "ok");
}

#[test]
fn a_run_whose_envelope_write_failed_keeps_its_whole_trace() {
    let dir = tempdir("envelope-failed");
    let store = open(&dir);
    refuse_inserts(&dir, "envelopes", "WHEN NEW.idx = 1");
    let (program, context, mocks) = refund();
    let (prog, _mocks, rt) = mocked(&program, mocks);
    let err = block(store.run(&rt, &prog, request(&program, context, None))).unwrap_err();
    assert_refused(&err);
    let run = block(store.list_runs(1)).unwrap().pop().unwrap();
    assert_eq!(run.envelopes, 4);
    // Three envelopes are stored (the one after the refused one too); the trace has all four
    // step records.
    let stored: Vec<i64> = raw(&dir)
        .prepare("SELECT idx FROM envelopes ORDER BY idx")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(stored, [0, 2, 3]);
    let trace = block(store.get_trace(&run.run_id)).unwrap().unwrap();
    let steps: Vec<&str> = trace["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step_id"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["lookup", "classify", "route", "issue_refund"]);
}

// ---------------------------------------------------------------------------------------------
// A run that ends before the writer reaches its begin job
// ---------------------------------------------------------------------------------------------

/// Releases a write lock held by another connection once the run's last step is recorded.
#[derive(Debug)]
struct ReleaseAfter {
    steps: usize,
    seen: AtomicUsize,
    release: std::sync::Mutex<Option<std::sync::mpsc::Sender<()>>>,
}

impl nanovm::exec::Observer for ReleaseAfter {
    fn step_finished(&self, _record: &nanovm::exec::StepRecord) {
        if self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.steps
            && let Some(tx) = self.release.lock().unwrap().take()
        {
            let _ = tx.send(());
        }
    }
}

/// The rows of `log` (filled by the triggers `with_update_log` makes).
fn updates_of_runs(c: &Connection) -> i64 {
    count(c, "SELECT count(*) FROM log")
}

/// Log every UPDATE of `runs`: a run row written once has none.
fn with_update_log(dir: &Path) {
    raw(dir)
        .execute_batch(
            "CREATE TABLE log (what TEXT);
             CREATE TRIGGER log_updates AFTER UPDATE ON runs
             BEGIN INSERT INTO log VALUES ('update'); END;",
        )
        .unwrap();
}

/// Run `program` with another connection holding the write lock until the run's last step
/// (of `steps`) is recorded, so the run ends before the store's writer can begin it.
fn run_ended_before_its_begin(
    dir: &Path,
    store: &Store,
    program: &Value,
    mocks: Value,
    steps: usize,
) -> Result<Persisted, StoreError> {
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (held, is_held) = std::sync::mpsc::channel::<()>();
    let lock_dir = dir.to_path_buf();
    let holder = std::thread::spawn(move || {
        let c = raw(&lock_dir);
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        held.send(()).unwrap();
        // Until the last step is recorded (then the run's finish follows at once, on the
        // same thread), and a little longer.
        released.recv_timeout(Duration::from_secs(20)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        c.execute_batch("COMMIT").unwrap();
    });
    is_held.recv().unwrap();
    let observer = Arc::new(ReleaseAfter {
        steps,
        seen: AtomicUsize::new(0),
        release: std::sync::Mutex::new(Some(release)),
    });
    let (prog, _mocks, rt) = mocked(program, mocks);
    let rt = rt.with_options(RunOptions {
        observer: Some(observer),
        ..RunOptions::default()
    });
    let out = block(store.run(&rt, &prog, request(program, json!({}), None)));
    holder.join().unwrap();
    out
}

fn two_tools() -> (Value, Value) {
    (
        json!({"name": "quick", "steps": [
            {"id": "a", "type": "tool", "tool": "t"},
            {"id": "b", "type": "tool", "tool": "t", "args": {"x": "$a.output"}, "is_terminal": true}
        ]}),
        json!({"tools": {"t": {"ok": true}}}),
    )
}

#[test]
fn a_run_that_ends_before_its_begin_job_is_written_in_that_job() {
    let dir = tempdir("ended-first");
    let store = open(&dir);
    with_update_log(&dir);
    let (program, mocks) = two_tools();
    let done = run_ended_before_its_begin(&dir, &store, &program, mocks, 2).unwrap();
    assert_eq!(done.trace.status, Status::Success);
    let c = raw(&dir);
    // The run row was written once, as ended, with both envelopes.
    assert_eq!(updates_of_runs(&c), 0);
    let (status, envelopes, lease, started, finished): (String, i64, i64, String, String) = c
        .query_row(
            "SELECT status, envelopes, lease_until, started_at, finished_at FROM runs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!((status.as_str(), envelopes, lease), ("success", 2, 0));
    assert!(started <= finished, "{started} > {finished}");
    assert_eq!(count(&c, "SELECT count(*) FROM envelopes"), 2);
    assert_eq!(verify_one(&store, &done.run_id), None);
    let stored = block(store.get_trace(&done.run_id)).unwrap().unwrap();
    assert_eq!(stored, serde_json::to_value(&done.trace).unwrap());
    assert_eq!(block(store.integrity_check()).unwrap(), "ok");
}

#[test]
fn a_run_whose_begin_job_ran_first_is_finished_by_an_update() {
    let dir = tempdir("begun-first");
    let store = open(&dir);
    with_update_log(&dir);
    // The model answers after 50 ms: the writer has begun the run long before it ends.
    let program = json!({"name": "waits", "steps": [
        {"id": "a", "type": "llm", "prompt": "hi", "is_terminal": true}
    ]});
    let (prog, _mocks, rt) = mocked(
        &program,
        json!({"llm": {"*": {"reply": "yes", "delay_s": 0.05}}}),
    );
    let done = block(store.run(&rt, &prog, request(&program, json!({}), None))).unwrap();
    assert_eq!(done.trace.status, Status::Success);
    let c = raw(&dir);
    assert_eq!(updates_of_runs(&c), 1);
    assert_eq!(verify_one(&store, &done.run_id), None);
    let stored = block(store.get_trace(&done.run_id)).unwrap().unwrap();
    assert_eq!(stored, serde_json::to_value(&done.trace).unwrap());
}

#[test]
fn a_run_that_ended_first_and_lost_an_envelope_keeps_its_whole_trace() {
    let dir = tempdir("ended-first-envelope-failed");
    let store = open(&dir);
    refuse_inserts(&dir, "envelopes", "WHEN NEW.idx = 1");
    let (program, mocks) = two_tools();
    let err = run_ended_before_its_begin(&dir, &store, &program, mocks, 2).unwrap_err();
    assert_refused(&err);
    let c = raw(&dir);
    assert_eq!(count(&c, "SELECT count(*) FROM envelopes"), 1);
    // The trace the finish job wrote instead of the skeleton keeps both step records.
    assert_eq!(
        count(&c, "SELECT json_array_length(trace, '$.steps') FROM runs"),
        2
    );
    let run = block(store.list_runs(1)).unwrap().pop().unwrap();
    assert_eq!(run.envelopes, 2);
    let trace = block(store.get_trace(&run.run_id)).unwrap().unwrap();
    assert_eq!(trace["steps"].as_array().map(Vec::len), Some(2));
}

#[test]
fn a_run_that_ended_first_and_whose_row_was_refused_leaves_nothing() {
    let dir = tempdir("ended-first-begin-failed");
    let store = open(&dir);
    refuse_inserts(&dir, "runs", "");
    let (program, mocks) = two_tools();
    let err = run_ended_before_its_begin(&dir, &store, &program, mocks, 2).unwrap_err();
    assert_refused(&err);
    let c = raw(&dir);
    assert_eq!(count(&c, "SELECT count(*) FROM runs"), 0);
    assert_eq!(count(&c, "SELECT count(*) FROM envelopes"), 0);
    assert_eq!(block(store.integrity_check()).unwrap(), "ok");
}
