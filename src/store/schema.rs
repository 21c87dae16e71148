//! The database schema and its migrations. The schema version is `PRAGMA user_version`; each
//! migration moves it up by one inside a transaction. A database from a newer nanovm (a higher
//! version than [`VERSION`]) is refused rather than guessed at.

use super::StoreError;
use rusqlite::{Connection, TransactionBehavior};

/// The schema version this nanovm writes.
pub const VERSION: i64 = 4;

/// Migration `n` (1-based) moves a database from version `n - 1` to `n`.
const MIGRATIONS: &[&str] = &[
    r#"
-- Programs, content-addressed: hash = sha256 of the canonical JSON of the program.
CREATE TABLE programs (
    hash        TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    source      TEXT NOT NULL,
    created_at  TEXT NOT NULL
) STRICT;
CREATE INDEX programs_by_name ON programs(name);

-- Policies, content-addressed: hash = sha256 of the canonical JSON of the policy snapshot.
CREATE TABLE policies (
    hash        TEXT PRIMARY KEY,
    policy      TEXT NOT NULL,
    created_at  TEXT NOT NULL
) STRICT;

-- One row per run. `envelopes` and `head_hash` record the envelope chain's length and last
-- hash when the run ends or suspends.
CREATE TABLE runs (
    run_id          TEXT PRIMARY KEY,
    program_hash    TEXT NOT NULL REFERENCES programs(hash),
    policy_hash     TEXT NOT NULL REFERENCES policies(hash),
    program_name    TEXT NOT NULL,
    idempotency_key TEXT,
    status          TEXT NOT NULL,
    started_at      TEXT NOT NULL,
    finished_at     TEXT,
    context         TEXT NOT NULL,
    trace           TEXT,
    envelopes       INTEGER NOT NULL DEFAULT 0,
    head_hash       TEXT NOT NULL,
    -- While a run is `running`, the store instance running it renews its lease; a run whose
    -- lease lapsed was interrupted (its process died).
    owner           TEXT NOT NULL,
    lease_until     INTEGER NOT NULL
) STRICT;
CREATE INDEX runs_by_start ON runs(started_at);

-- The audit chain: one envelope per executed step (sub-steps of a parallel step included).
-- hash = sha256(canonical {index, payload, policy_hash, prev_hash, state_hash, step_id}).
CREATE TABLE envelopes (
    run_id      TEXT NOT NULL REFERENCES runs(run_id),
    idx         INTEGER NOT NULL,
    step_id     TEXT NOT NULL,
    policy_hash TEXT NOT NULL,
    state_hash  TEXT,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    PRIMARY KEY (run_id, idx)
) STRICT, WITHOUT ROWID;
CREATE TRIGGER envelopes_no_update BEFORE UPDATE ON envelopes
BEGIN SELECT RAISE(ABORT, 'envelopes are append-only: UPDATE refused'); END;
CREATE TRIGGER envelopes_no_delete BEFORE DELETE ON envelopes
BEGIN SELECT RAISE(ABORT, 'envelopes are append-only: DELETE refused'); END;

-- The steps of every run, read from the envelopes (their payloads are the step records).
CREATE VIEW steps AS
SELECT run_id, idx, step_id,
       json_extract(payload, '$.status')      AS status,
       json_extract(payload, '$.parent')      AS parent,
       json_extract(payload, '$.error')       AS error,
       json_extract(payload, '$.retries')     AS retries,
       json_extract(payload, '$.duration_ms') AS duration_ms,
       state_hash
FROM envelopes;

-- Idempotency keys: the run that answers for each key (its status says whether it ended).
CREATE TABLE idempotency_keys (
    key           TEXT PRIMARY KEY,
    run_id        TEXT NOT NULL REFERENCES runs(run_id),
    program_hash  TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
) STRICT;

-- The cursors of suspended runs.
CREATE TABLE cursors (
    run_id      TEXT PRIMARY KEY REFERENCES runs(run_id),
    cursor      TEXT NOT NULL,
    created_at  TEXT NOT NULL
) STRICT;

-- Secret values: `value` is JSON, NULL once erased.
CREATE TABLE vault (
    id          TEXT PRIMARY KEY,
    value       TEXT,
    created_at  TEXT NOT NULL,
    erased_at   TEXT
) STRICT;
"#,
    r#"
-- Deleting a program clears its source and sets `deleted_at`; the row stays, since runs (the
-- audit log) reference its hash. Running the program again restores it.
ALTER TABLE programs ADD COLUMN deleted_at TEXT;
CREATE INDEX programs_by_created ON programs(created_at);
-- A program's runs (their count and the latest, for the program list).
CREATE INDEX runs_by_program ON runs(program_hash, started_at);
"#,
    r#"
-- Runs are listed newest first by rowid (insertion order is start order), which needs no
-- index of its own; one fewer index insert per run.
DROP INDEX runs_by_start;
"#,
    r#"
-- Envelope hashes as the 32 bytes of their sha256 instead of 64 hex digits: an envelope row
-- is about a quarter smaller, that much less for SQLite to write and checkpoint. What the
-- chain hashes is unchanged (the hex text). A value that is not lowercase hex of a sha256
-- (a file changed by hand) keeps its bytes, for `audit verify` to report.
DROP VIEW steps;
DROP TRIGGER envelopes_no_update;
DROP TRIGGER envelopes_no_delete;
CREATE TABLE envelopes_v4 (
    run_id      TEXT NOT NULL REFERENCES runs(run_id),
    idx         INTEGER NOT NULL,
    step_id     TEXT NOT NULL,
    policy_hash BLOB NOT NULL,
    state_hash  BLOB,
    prev_hash   BLOB NOT NULL,
    hash        BLOB NOT NULL,
    payload     TEXT NOT NULL,
    PRIMARY KEY (run_id, idx)
) STRICT, WITHOUT ROWID;
INSERT INTO envelopes_v4
SELECT run_id, idx, step_id,
       coalesce(CASE WHEN length(policy_hash) = 64 AND policy_hash = lower(policy_hash)
                     THEN unhex(policy_hash) END, CAST(policy_hash AS BLOB)),
       coalesce(CASE WHEN length(state_hash) = 64 AND state_hash = lower(state_hash)
                     THEN unhex(state_hash) END, CAST(state_hash AS BLOB)),
       coalesce(CASE WHEN length(prev_hash) = 64 AND prev_hash = lower(prev_hash)
                     THEN unhex(prev_hash) END, CAST(prev_hash AS BLOB)),
       coalesce(CASE WHEN length(hash) = 64 AND hash = lower(hash)
                     THEN unhex(hash) END, CAST(hash AS BLOB)),
       payload
FROM envelopes;
DROP TABLE envelopes;
ALTER TABLE envelopes_v4 RENAME TO envelopes;
CREATE TRIGGER envelopes_no_update BEFORE UPDATE ON envelopes
BEGIN SELECT RAISE(ABORT, 'envelopes are append-only: UPDATE refused'); END;
CREATE TRIGGER envelopes_no_delete BEFORE DELETE ON envelopes
BEGIN SELECT RAISE(ABORT, 'envelopes are append-only: DELETE refused'); END;
-- As before, with the state hash in hex.
CREATE VIEW steps AS
SELECT run_id, idx, step_id,
       json_extract(payload, '$.status')      AS status,
       json_extract(payload, '$.parent')      AS parent,
       json_extract(payload, '$.error')       AS error,
       json_extract(payload, '$.retries')     AS retries,
       json_extract(payload, '$.duration_ms') AS duration_ms,
       CASE WHEN state_hash IS NOT NULL THEN lower(hex(state_hash)) END AS state_hash
FROM envelopes;
"#,
];

/// Refuse a database that has tables but no schema version: another application's.
pub fn ensure_ours(conn: &Connection) -> Result<(), StoreError> {
    // One statement, one snapshot: another process may be creating the schema right now.
    let (version, tables): (i64, i64) = conn.query_row(
        "SELECT (SELECT user_version FROM pragma_user_version),
                (SELECT count(*) FROM sqlite_master WHERE type = 'table')",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if version == 0 && tables > 0 {
        return Err(StoreError::NotNanovm(String::new()));
    }
    Ok(())
}

/// Bring a database to [`VERSION`], or refuse it. Each step runs in an immediate (write-
/// locked) transaction that reads the version itself, so processes opening a new file at the
/// same time do not both create the tables.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    migrate_to(conn, VERSION)
}

/// Bring a database to version `target` (at most [`VERSION`]): [`migrate`] stops there. Only
/// tests want an older version, to check that it upgrades.
pub fn migrate_to(conn: &mut Connection, target: i64) -> Result<(), StoreError> {
    let target = target.min(VERSION);
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if !(0..=VERSION).contains(&found) {
            return Err(StoreError::FutureSchema {
                found,
                supported: VERSION,
            });
        }
        ensure_ours(&tx)?;
        if found >= target {
            return Ok(());
        }
        let Some(sql) = usize::try_from(found).ok().and_then(|n| MIGRATIONS.get(n)) else {
            return Ok(());
        };
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", found + 1)?;
        tx.commit()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_reach_the_version_and_are_idempotent() -> Result<(), StoreError> {
        let mut conn = Connection::open_in_memory()?;
        migrate(&mut conn)?;
        migrate(&mut conn)?;
        let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        assert_eq!(v, VERSION);
        assert_eq!(MIGRATIONS.len() as i64, VERSION);
        Ok(())
    }

    #[test]
    fn a_version_1_database_upgrades_and_keeps_its_rows() -> Result<(), StoreError> {
        let mut conn = Connection::open_in_memory()?;
        migrate_to(&mut conn, 1)?;
        let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        assert_eq!(v, 1);
        conn.execute(
            "INSERT INTO programs (hash, name, source, created_at) VALUES ('h', 'n', '{}', 't')",
            [],
        )?;
        migrate(&mut conn)?;
        let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        assert_eq!(v, VERSION);
        let row: (String, String, Option<String>) = conn.query_row(
            "SELECT name, source, deleted_at FROM programs WHERE hash = 'h'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        assert_eq!(row, ("n".to_owned(), "{}".to_owned(), None));
        Ok(())
    }

    #[test]
    fn another_applications_database_is_refused() -> Result<(), StoreError> {
        let mut conn = Connection::open_in_memory()?;
        conn.execute_batch("CREATE TABLE x (a)")?;
        assert_eq!(
            migrate(&mut conn),
            Err(StoreError::NotNanovm(String::new()))
        );
        Ok(())
    }

    #[test]
    fn a_future_schema_is_refused() -> Result<(), StoreError> {
        let mut conn = Connection::open_in_memory()?;
        conn.pragma_update(None, "user_version", VERSION + 1)?;
        let err = migrate(&mut conn).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "the database has schema version 5, newer than this nanovm supports (4): use a newer nanovm, or another --db file"
            )
        );
        Ok(())
    }
}
