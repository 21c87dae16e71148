//! Stored programs: naming with `save_as`, listing, getting, deleting and restoring them, what a
//! deletion keeps (traces, chains) and refuses (resuming), the upgrade of a version 1 database,
//! and the health summary.
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
use nanovm::exec::{Runnable, Runtime, Source, Status};
use nanovm::store::{
    Content, Deletion, Persisted, RunRequest, SCHEMA_VERSION, Store, StoreError, StoreOptions,
    content_hash, create_at_schema_version,
};
use rusqlite::{Connection, params};
use serde_json::{Value, json};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

fn db(dir: &Path) -> PathBuf {
    dir.join("nanovm.db")
}

fn open(dir: &Path) -> Store {
    Store::open(db(dir), StoreOptions::default()).unwrap()
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

fn mocked(program: &Value, mocks: Value) -> (Runnable, Runtime) {
    let mocks = Mocks::from_value(mocks).unwrap();
    let prog = prepare(program, mocks.tools.names());
    let rt = Runtime::new(mocks.llm.clone(), mocks.tools.clone());
    (prog, rt)
}

fn request(program: &Value, save_as: Option<&str>) -> RunRequest {
    RunRequest {
        program: Content::of(program),
        context: serde_json::Map::new(),
        policy: Content::of(&json!({"tools": {}})),
        idempotency_key: None,
        save_as: save_as.map(str::to_owned),
    }
}

/// A one-step program named `name` (`n` makes programs of one name differ).
fn notify(name: &str, n: u64) -> Value {
    json!({"name": name, "steps": [
        {"id": "send", "type": "tool", "tool": "notify", "args": {"n": n}}
    ]})
}

/// Run a program whose only tool is `notify`.
fn run(store: &Store, program: &Value, save_as: Option<&str>) -> Persisted {
    let (prog, rt) = mocked(program, json!({"tools": {"notify": {"sent": true}}}));
    let p = block(store.run(&rt, &prog, request(program, save_as))).unwrap();
    assert_eq!(p.trace.status, Status::Success);
    p
}

fn id_of(program: &Value) -> String {
    content_hash(program).0
}

/// A program that suspends at its first step, and its runtime.
fn approval() -> (Value, Runnable, Runtime) {
    let program = json!({"name": "approve", "steps": [
        {"id": "ask", "type": "tool", "tool": "approval"},
        {"id": "done", "type": "tool", "tool": "notify", "args": {"by": "$__webhook__.by"}}
    ]});
    let (prog, rt) = mocked(
        &program,
        json!({"tools": {"approval": "PENDING", "notify": {"sent": true}}}),
    );
    (program, prog, rt)
}

// ---------------------------------------------------------------------------------------------
// Naming
// ---------------------------------------------------------------------------------------------

#[test]
fn a_program_is_stored_under_its_own_name_and_keeps_the_first() {
    let dir = tempdir("own-name");
    let store = open(&dir);
    let program = notify("first", 1);
    let p = run(&store, &program, None);
    assert_eq!(p.program_id, id_of(&program));
    assert_eq!(p.program_id.len(), 64);
    let summary = block(store.run_summary(&p.run_id)).unwrap().unwrap();
    assert_eq!(summary.program_hash, p.program_id);
    // The same content again, from a new store (nothing cached): the name stays.
    drop(store);
    let store = open(&dir);
    run(&store, &program, None);
    let got = block(store.get_program(&p.program_id)).unwrap().unwrap();
    assert_eq!(got.name, "first");
    assert_eq!(got.hash, p.program_id);
    assert_eq!(got.source, content_hash(&program).1);
    assert!(!got.created_at.is_empty());
}

#[test]
fn save_as_names_a_new_program_and_renames_a_stored_one() {
    let dir = tempdir("save-as");
    let store = open(&dir);
    let program = notify("own", 1);
    let p = run(&store, &program, Some("saved"));
    let got = block(store.get_program(&p.program_id)).unwrap().unwrap();
    assert_eq!(got.name, "saved");
    // The run itself goes by the program's own name.
    let summary = block(store.run_summary(&p.run_id)).unwrap().unwrap();
    assert_eq!(summary.program_name, "own");
    // Renamed; a later run without save_as keeps the new name.
    run(&store, &program, Some("renamed"));
    run(&store, &program, None);
    let got = block(store.get_program(&p.program_id)).unwrap().unwrap();
    assert_eq!(got.name, "renamed");
    let list = block(store.list_programs(10)).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, "renamed");
    assert_eq!(list[0].runs, 3);
}

#[test]
fn save_as_applies_to_a_replayed_idempotency_key() {
    let dir = tempdir("save-as-replay");
    let store = open(&dir);
    let program = notify("own", 1);
    let (prog, rt) = mocked(&program, json!({"tools": {"notify": {"sent": true}}}));
    let mut req = request(&program, None);
    req.idempotency_key = Some("k".into());
    let first = block(store.run(&rt, &prog, req.clone())).unwrap();
    req.save_as = Some("later".into());
    let again = block(store.run(&rt, &prog, req)).unwrap();
    assert!(again.replayed);
    assert_eq!(again.run_id, first.run_id);
    assert_eq!(again.program_id, first.program_id);
    let got = block(store.get_program(&first.program_id))
        .unwrap()
        .unwrap();
    assert_eq!(got.name, "later");
}

#[test]
fn an_empty_or_overlong_name_is_refused_before_anything_runs() {
    let dir = tempdir("bad-name");
    let store = open(&dir);
    let program = notify("own", 1);
    let (prog, rt) = mocked(&program, json!({"tools": {"notify": {"sent": true}}}));
    let err = block(store.run(&rt, &prog, request(&program, Some("")))).unwrap_err();
    assert_eq!(err, StoreError::BadName(0));
    let long = "x".repeat(257);
    let err = block(store.run(&rt, &prog, request(&program, Some(&long)))).unwrap_err();
    assert_eq!(err, StoreError::BadName(257));
    assert!(block(store.list_runs(10)).unwrap().is_empty());
    assert!(block(store.list_programs(10)).unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// List, get, delete, restore
// ---------------------------------------------------------------------------------------------

#[test]
fn programs_are_listed_newest_first_with_their_runs() {
    let dir = tempdir("list");
    let store = open(&dir);
    let a = notify("a", 1);
    let b = notify("b", 2);
    let c = notify("c", 3);
    run(&store, &a, None);
    run(&store, &b, None);
    let last_b = run(&store, &b, None);
    run(&store, &c, Some("cee"));
    let list = block(store.list_programs(10)).unwrap();
    let names: Vec<&str> = list.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["cee", "b", "a"]);
    assert_eq!(list[1].program_id, id_of(&b));
    assert_eq!(list[1].runs, 2);
    let started = block(store.run_summary(&last_b.run_id))
        .unwrap()
        .unwrap()
        .started_at;
    assert_eq!(list[1].last_run_at.as_deref(), Some(started.as_str()));
    assert!(list[0].created_at >= list[1].created_at);
    assert!(list[1].created_at >= list[2].created_at);
    // The limit keeps the newest.
    let two = block(store.list_programs(2)).unwrap();
    assert_eq!(two, list[..2]);
    assert!(block(store.list_programs(0)).unwrap().is_empty());
    // The summary serializes with these field names (the MCP tool's output).
    let v = serde_json::to_value(&list[2]).unwrap();
    assert_eq!(v["program_id"], json!(id_of(&a)));
    assert_eq!(v["runs"], json!(1));
    assert!(v["last_run_at"].is_string());
}

#[test]
fn get_program_needs_the_exact_id() {
    let dir = tempdir("get");
    let store = open(&dir);
    let p = run(&store, &notify("a", 1), None);
    assert!(block(store.get_program(&p.program_id)).unwrap().is_some());
    assert_eq!(block(store.get_program(&p.program_id[..12])).unwrap(), None);
    assert_eq!(
        block(store.get_program(&p.program_id.to_uppercase())).unwrap(),
        None
    );
    assert_eq!(block(store.get_program("")).unwrap(), None);
    assert_eq!(block(store.get_program("' OR 1=1 --")).unwrap(), None);
}

#[test]
fn a_deleted_program_is_gone_from_list_and_get_and_a_new_run_restores_it() {
    let dir = tempdir("delete");
    let store = open(&dir);
    let program = notify("a", 1);
    let other = notify("b", 2);
    let p = run(&store, &program, Some("saved"));
    run(&store, &program, None);
    run(&store, &other, None);
    let created = block(store.get_program(&p.program_id))
        .unwrap()
        .unwrap()
        .created_at;
    assert_eq!(
        block(store.delete_program(&p.program_id)).unwrap(),
        Deletion::Deleted { runs_kept: 2 }
    );
    assert_eq!(block(store.get_program(&p.program_id)).unwrap(), None);
    let list = block(store.list_programs(10)).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].program_id, id_of(&other));
    // The row stays, without its source.
    let c = Connection::open(db(&dir)).unwrap();
    let (source, deleted): (String, Option<String>) = c
        .query_row(
            "SELECT source, deleted_at FROM programs WHERE hash = ?1",
            [&p.program_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(source, "");
    assert!(deleted.is_some());
    // Deleting again, or an unknown id: not found.
    assert_eq!(
        block(store.delete_program(&p.program_id)).unwrap(),
        Deletion::NotFound
    );
    assert_eq!(
        block(store.delete_program("nope")).unwrap(),
        Deletion::NotFound
    );
    // The same store runs it again (its cache must not think it is still stored): restored,
    // with its name and creation time, and its runs counted.
    run(&store, &program, None);
    let got = block(store.get_program(&p.program_id)).unwrap().unwrap();
    assert_eq!(got.source, content_hash(&program).1);
    assert_eq!(got.name, "saved");
    assert_eq!(got.created_at, created);
    let list = block(store.list_programs(10)).unwrap();
    let restored = list.iter().find(|s| s.program_id == p.program_id).unwrap();
    assert_eq!(restored.runs, 3);
    // Deleted and restored under a new name, from another store instance.
    assert!(matches!(
        block(store.delete_program(&p.program_id)).unwrap(),
        Deletion::Deleted { runs_kept: 3 }
    ));
    drop(store);
    let store = open(&dir);
    run(&store, &program, Some("new"));
    let got = block(store.get_program(&p.program_id)).unwrap().unwrap();
    assert_eq!(got.name, "new");
    assert_eq!(got.source, content_hash(&program).1);
}

#[test]
fn deleting_a_program_keeps_its_traces_and_chains() {
    let dir = tempdir("delete-audit");
    let store = open(&dir);
    let program = notify("a", 1);
    let p = run(&store, &program, None);
    let trace = block(store.get_trace(&p.run_id)).unwrap().unwrap();
    let envelopes = block(store.run_summary(&p.run_id))
        .unwrap()
        .unwrap()
        .envelopes;
    assert!(envelopes > 0);
    assert!(matches!(
        block(store.delete_program(&p.program_id)).unwrap(),
        Deletion::Deleted { runs_kept: 1 }
    ));
    assert_eq!(block(store.get_trace(&p.run_id)).unwrap().unwrap(), trace);
    let summary = block(store.run_summary(&p.run_id)).unwrap().unwrap();
    assert_eq!(summary.program_hash, p.program_id);
    assert_eq!(summary.envelopes, envelopes);
    let verdicts = block(store.verify(None)).unwrap();
    assert_eq!(verdicts.len(), 1);
    assert_eq!(verdicts[0].broken, None);
    assert_eq!(verdicts[0].envelopes, envelopes);
    assert_eq!(block(store.integrity_check()).unwrap(), "ok");
}

#[test]
fn a_suspended_run_whose_program_was_deleted_says_why_it_cannot_resume() {
    let dir = tempdir("delete-resume");
    let store = open(&dir);
    let (program, prog, rt) = approval();
    let p = block(store.run(&rt, &prog, request(&program, None))).unwrap();
    assert_eq!(p.trace.status, Status::Suspended);
    assert!(matches!(
        block(store.delete_program(&p.program_id)).unwrap(),
        Deletion::Deleted { runs_kept: 1 }
    ));
    let err = block(store.program_of_run(&p.run_id)).unwrap_err();
    assert_eq!(
        err,
        StoreError::ProgramDeleted {
            run_id: p.run_id.clone(),
            program_id: p.program_id.clone(),
        }
    );
    let message = err.to_string();
    assert!(message.contains("was deleted"), "{message}");
    assert!(message.contains(&p.program_id), "{message}");
    // Resuming with the program in hand is refused too, and the run stays suspended.
    let err = block(store.resume(
        &rt,
        &prog,
        &p.run_id,
        json!({"by": "ops"}),
        Source::Operator,
    ))
    .unwrap_err();
    assert!(matches!(err, StoreError::ProgramDeleted { .. }), "{err}");
    let summary = block(store.run_summary(&p.run_id)).unwrap().unwrap();
    assert_eq!(summary.status, "suspended");
    // Running the program again restores it, and the run resumes.
    let again = block(store.run(&rt, &prog, request(&program, None))).unwrap();
    assert_eq!(again.program_id, p.program_id);
    let stored = block(store.program_of_run(&p.run_id)).unwrap();
    assert_eq!(stored.source, content_hash(&program).1);
    let r = block(store.resume(
        &rt,
        &prog,
        &p.run_id,
        json!({"by": "ops"}),
        Source::Operator,
    ))
    .unwrap();
    assert_eq!(r.trace.status, Status::Success);
    assert_eq!(r.program_id, p.program_id);
    let verdicts = block(store.verify(Some(&p.run_id))).unwrap();
    assert_eq!(verdicts[0].broken, None);
}

#[test]
fn a_begin_that_fails_does_not_leave_its_program_thought_stored() {
    // A secret conflict rolls back the run's start, program row included: the next run of
    // that program must store it again.
    let dir = tempdir("rollback");
    let store = open(&dir);
    let first = notify("a", 1);
    let (prog, rt) = mocked(&first, json!({"tools": {"notify": {"sent": true}}}));
    let mut req = request(&first, None);
    req.context = json!({"card": {"$secret": "4242", "id": "card"}})
        .as_object()
        .cloned()
        .unwrap();
    block(store.run(&rt, &prog, req)).unwrap();
    let second = notify("b", 2);
    let (prog2, rt2) = mocked(&second, json!({"tools": {"notify": {"sent": true}}}));
    let mut req = request(&second, None);
    req.context = json!({"card": {"$secret": "1111", "id": "card"}})
        .as_object()
        .cloned()
        .unwrap();
    let err = block(store.run(&rt2, &prog2, req)).unwrap_err();
    assert!(matches!(err, StoreError::SecretConflict(_)), "{err}");
    assert_eq!(block(store.get_program(&id_of(&second))).unwrap(), None);
    let p = run(&store, &second, None);
    assert!(block(store.get_program(&p.program_id)).unwrap().is_some());
}

// ---------------------------------------------------------------------------------------------
// Schema versions, health
// ---------------------------------------------------------------------------------------------

#[test]
fn a_version_1_database_upgrades_with_its_programs_and_runs() {
    let dir = tempdir("v1");
    create_at_schema_version(db(&dir), 1).unwrap();
    let program = notify("old", 1);
    let (hash, text) = content_hash(&program);
    {
        let c = Connection::open(db(&dir)).unwrap();
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 1);
        let has_deleted_at: i64 = c
            .query_row(
                "SELECT count(*) FROM pragma_table_info('programs') WHERE name = 'deleted_at'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(has_deleted_at, 0);
        let t = "2020-01-01T00:00:00.000Z";
        c.execute(
            "INSERT INTO programs (hash, name, source, created_at) VALUES (?1, 'old', ?2, ?3)",
            params![hash, text, t],
        )
        .unwrap();
        c.execute(
            "INSERT INTO policies (hash, policy, created_at) VALUES ('p', '{}', ?1)",
            [t],
        )
        .unwrap();
        c.execute(
            "INSERT INTO runs (run_id, program_hash, policy_hash, program_name, status,
                               started_at, context, head_hash, owner, lease_until)
             VALUES ('r1', ?1, 'p', 'old', 'success', ?2, '{}', 'h', 'o', 0)",
            params![hash, t],
        )
        .unwrap();
    }
    let store = open(&dir);
    let health = block(store.health()).unwrap();
    assert_eq!(health.schema_version, SCHEMA_VERSION);
    assert_eq!(SCHEMA_VERSION, 4);
    // Version 3 lists runs by rowid: the index on start times is gone.
    let c = Connection::open(db(&dir)).unwrap();
    let index: i64 = c
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'runs_by_start'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(index, 0);
    assert_eq!((health.runs, health.programs), (1, 1));
    let list = block(store.list_programs(10)).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].program_id, hash);
    assert_eq!(list[0].name, "old");
    assert_eq!(list[0].runs, 1);
    assert_eq!(
        list[0].last_run_at.as_deref(),
        Some("2020-01-01T00:00:00.000Z")
    );
    assert_eq!(
        block(store.get_program(&hash)).unwrap().unwrap().source,
        text
    );
    // The old program runs, is deleted and restored like a new one.
    let p = run(&store, &program, None);
    assert_eq!(p.program_id, hash);
    assert!(matches!(
        block(store.delete_program(&hash)).unwrap(),
        Deletion::Deleted { runs_kept: 2 }
    ));
    assert!(matches!(
        block(store.program_of_run("r1")).unwrap_err(),
        StoreError::ProgramDeleted { .. }
    ));
    run(&store, &program, None);
    assert!(block(store.get_program(&hash)).unwrap().is_some());
    drop(store);
    // Opening it again changes nothing.
    let store = open(&dir);
    assert_eq!(
        block(store.health()).unwrap().schema_version,
        SCHEMA_VERSION
    );
}

#[test]
fn a_database_from_a_future_version_is_still_refused() {
    let dir = tempdir("future");
    drop(open(&dir));
    Connection::open(db(&dir))
        .unwrap()
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    let err = Store::open(db(&dir), StoreOptions::default()).unwrap_err();
    assert_eq!(
        err,
        StoreError::FutureSchema {
            found: SCHEMA_VERSION + 1,
            supported: SCHEMA_VERSION
        }
    );
}

#[test]
fn health_counts_runs_and_live_programs() {
    let dir = tempdir("health");
    let store = open(&dir);
    let h = block(store.health()).unwrap();
    assert_eq!(h.path, db(&dir).display().to_string());
    assert_eq!(h.schema_version, SCHEMA_VERSION);
    assert_eq!((h.runs, h.programs), (0, 0));
    let a = run(&store, &notify("a", 1), None);
    run(&store, &notify("a", 1), None);
    run(&store, &notify("b", 2), None);
    let h = block(store.health()).unwrap();
    assert_eq!((h.runs, h.programs), (3, 2));
    block(store.delete_program(&a.program_id)).unwrap();
    let h = block(store.health()).unwrap();
    assert_eq!((h.runs, h.programs), (3, 1));
    let v = serde_json::to_value(&h).unwrap();
    assert_eq!(
        v,
        json!({"path": h.path, "schema_version": SCHEMA_VERSION, "runs": 3, "programs": 1})
    );
}
