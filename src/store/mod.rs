//! The store (DESIGN §6): one SQLite file in WAL mode holding programs, policies, runs, the
//! hash-chained audit envelopes, idempotency keys, the cursors of suspended runs and the vault.
//!
//! ```text
//! Store::open ─► migrate (PRAGMA user_version) ─► writer thread (group commits) + read pool
//! Store::run    ─► begin (idempotency, vault, run row) ─► exec::Runtime ─► envelopes ─► finish
//! Store::verify ─► recompute every chain
//! Store::delete_program ─► source cleared, row kept (runs reference it) ─► a new run restores it
//! ```
//!
//! All writes go through one writer thread; reads use a small pool of connections on tokio's
//! blocking threads. Nothing here decides policy: the store records the policy snapshot it is
//! given and hands the runtime the secret values of a run.

pub mod chain;
mod schema;
mod session;
mod writer;

pub use chain::Break;
pub use schema::VERSION as SCHEMA_VERSION;
pub use session::{Persisted, RunRequest};

use crate::exec::StepRecord;
use crate::exec::canon;
use crate::exec::secrets::{self, TOKEN_PREFIX};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use writer::{Job, Writer, atomically};

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the database has schema version {found}, newer than this nanovm supports ({supported}): use a newer nanovm, or another --db file"
    )]
    FutureSchema { found: i64, supported: i64 },
    #[error("cannot open the database `{path}`: {message}")]
    Open { path: String, message: String },
    #[error("database error: {0}")]
    Database(String),
    #[error("the store is closed")]
    Closed,
    #[error("cannot start the store's writer thread: {0}")]
    Thread(String),
    #[error("no run `{0}` in the store")]
    NoRun(String),
    #[error(
        "the idempotency key `{key}` belongs to a run of another program (sha256 {found}); this program is {given}: use a new key"
    )]
    KeyConflict {
        key: String,
        found: String,
        given: String,
    },
    #[error(
        "the secret `{0}` is already in the vault with another value (or was erased): use a new id"
    )]
    SecretConflict(String),
    #[error("{0}")]
    Secret(#[from] secrets::SecretError),
    #[error("an idempotency key is 1 to {max} bytes, not {0}", max = session::MAX_KEY_LEN)]
    BadKey(usize),
    #[error("no secret `{0}` in the vault")]
    NoSecret(String),
    #[error(
        "`{0}` is an SQLite database of something else (it has tables and no nanovm schema version): pass another --db file"
    )]
    NotNanovm(String),
    #[error("run `{run_id}` is {status}, not suspended: only a suspended run can be resumed")]
    NotSuspended { run_id: String, status: String },
    #[error("cannot resume run `{run_id}`: {message}")]
    Resume { run_id: String, message: String },
    #[error("a program name is 1 to {max} bytes, not {0}", max = session::MAX_NAME_LEN)]
    BadName(usize),
    #[error(
        "the program of run `{run_id}` (sha256 {program_id}) was deleted, so its source is gone: run the same program again to restore it"
    )]
    ProgramDeleted { run_id: String, program_id: String },
    #[error("a stored record is unreadable: {0}")]
    Corrupt(String),
    #[error("the audit trail of run `{run_id}` could not be written: {message}")]
    Audit { run_id: String, message: String },
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

/// `PRAGMA synchronous` for the write connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// WAL's usual setting: a commit survives a crash of the process; the last commits can be
    /// lost on power failure.
    #[default]
    Normal,
    /// Every commit is fsynced.
    Full,
}

/// Store settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub synchronous: Synchronous,
    /// Read connections kept open.
    pub readers: usize,
    /// How long a running run's claim holds without renewal (renewed every third of it); an
    /// idempotency key whose run's lease lapsed (its process died) is run again.
    pub lease: Duration,
    /// How long to wait for another process's write lock.
    pub busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Normal,
            readers: 4,
            lease: Duration::from_secs(10),
            busy_timeout: Duration::from_secs(10),
        }
    }
}

/// A handle on one database file (cheap to clone; the last clone closes it, after every queued
/// write is committed).
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    opts: StoreOptions,
    /// This instance's id, the `owner` of the runs it runs.
    owner: String,
    /// Declared before the writer: fields drop in order, and the write connection must close
    /// last so that SQLite checkpoints the WAL into the main file and removes it.
    readers: Mutex<Vec<Connection>>,
    /// Bounds concurrent reads to the pool's size, so connections are reused, not reopened.
    reading: tokio::sync::Semaphore,
    /// Program and policy hashes known to be stored (written on the writer thread, cleared
    /// when a commit fails).
    known: Known,
    writer: Writer,
}

/// One run, as `trace list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub program_name: String,
    pub program_hash: String,
    /// A trace status, `running`, or `interrupted` (running, but its lease lapsed).
    pub status: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub envelopes: u64,
    /// The hash of the last envelope, recorded when the run ends or suspends: keep a copy
    /// elsewhere to detect a chain rewritten as a whole.
    pub head_hash: String,
    pub idempotency_key: Option<String>,
}

/// A program as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredProgram {
    /// The program id: the sha256 (hex) of its canonical JSON.
    pub hash: String,
    pub name: String,
    /// Canonical JSON.
    pub source: String,
    /// When the program was first stored.
    pub created_at: String,
}

/// One stored program, as `list_programs` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgramSummary {
    /// The sha256 (hex) of the program's canonical JSON.
    pub program_id: String,
    /// The name given by `save_as`, or else the program's own name when first stored.
    pub name: String,
    pub created_at: String,
    /// Runs of the program (those from before it was deleted and restored included).
    pub runs: u64,
    /// When its latest run started.
    pub last_run_at: Option<String>,
}

/// What `delete_program` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum Deletion {
    /// The source is gone; the program's runs, which the audit log needs, are kept.
    Deleted { runs_kept: u64 },
    /// No such program, or it was already deleted.
    NotFound,
}

/// The store's state, for a health check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    /// The database file.
    pub path: String,
    /// `PRAGMA user_version` of the file.
    pub schema_version: i64,
    pub runs: u64,
    /// Stored programs, deleted ones not counted.
    pub programs: u64,
}

/// The verdict on one run's chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub run_id: String,
    pub envelopes: u64,
    /// `None`: the chain is intact.
    #[serde(rename = "break")]
    pub broken: Option<Break>,
}

/// What `erase` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Erasure {
    Erased,
    AlreadyErased,
}

/// Wait for the writer's answer: poll (yielding to other tasks) for up to
/// [`writer::SPIN`] before sleeping, since a commit usually takes less than waking up does.
async fn wait<T>(
    mut rx: tokio::sync::oneshot::Receiver<T>,
) -> Result<T, tokio::sync::oneshot::error::RecvError> {
    let start = std::time::Instant::now();
    while start.elapsed() < writer::SPIN {
        match rx.try_recv() {
            Ok(v) => return Ok(v),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => tokio::task::yield_now().await,
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => break,
        }
    }
    rx.await
}

/// Content hashes known to be in the database.
type Known = Arc<Mutex<std::collections::HashSet<String>>>;

/// After a failed commit, nothing is known for sure.
fn forget_known(known: &Known) {
    match known.lock() {
        Ok(mut g) => g.clear(),
        Err(p) => p.into_inner().clear(),
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn now_text() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

impl Store {
    /// Open (or create) a database file and bring its schema up to date.
    pub fn open(path: impl AsRef<Path>, opts: StoreOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut conn = connect(&path, &opts, true)?;
        schema::migrate(&mut conn)?;
        let writer = Writer::start(conn, connect(&path, &opts, true)?)?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                owner: uuid::Uuid::new_v4().simple().to_string(),
                reading: tokio::sync::Semaphore::new(opts.readers.max(1)),
                known: Known::default(),
                opts,
                readers: Mutex::new(Vec::new()),
                writer,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn options(&self) -> &StoreOptions {
        &self.inner.opts
    }

    /// Finish the queued writes and stop the writer (later writes fail with `Closed`); the
    /// read connections are closed first, so the writer's close checkpoints the WAL.
    pub fn close(&self) {
        match self.inner.readers.lock() {
            Ok(mut g) => g.clear(),
            Err(p) => p.into_inner().clear(),
        }
        self.inner.writer.close();
    }

    /// Run writes on the writer thread, atomically, and wait for their commit.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.write_with(f, true).await
    }

    /// [`Store::write`] without the savepoint: `f` is one write statement (atomic by
    /// itself), or makes its writes atomic itself.
    async fn write_raw<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.write_with(f, false).await
    }

    async fn write_with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        atomic: bool,
    ) -> Result<T, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let known = self.inner.known.clone();
        let job: Job = Box::new(move |conn| {
            let res = match conn {
                Ok(c) if atomic => atomically(c, f),
                Ok(c) => f(c),
                Err(e) => Err(e.clone()),
            };
            Box::new(move |commit| {
                let out = match (res, commit) {
                    (Ok(v), Ok(())) => Ok(v),
                    (Ok(_), Err(e)) => {
                        forget_known(&known);
                        Err(e.clone())
                    }
                    (Err(e), _) => Err(e),
                };
                let _ = tx.send(out);
            })
        });
        self.inner
            .writer
            .send(job, true)
            .map_err(|_| StoreError::Closed)?;
        wait(rx).await.unwrap_or(Err(StoreError::Closed))
    }

    /// Queue writes without waiting; a failure is put in `slot` (the first one stays): the
    /// job's own as soon as it has run, a failed commit right after the commit, so a later
    /// job finds the failures of the jobs queued before it.
    /// `single`: the job is one statement, atomic by itself (no savepoint needed).
    fn write_detached(
        &self,
        f: impl FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static,
        slot: Arc<Mutex<Option<StoreError>>>,
        single: bool,
    ) {
        fn keep(slot: &Mutex<Option<StoreError>>, e: StoreError) {
            let mut g = match slot.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            g.get_or_insert(e);
        }
        let job_slot = slot.clone();
        let known = self.inner.known.clone();
        let job: Job = Box::new(move |conn| {
            let res = match conn {
                Ok(c) if single => f(c),
                Ok(c) => atomically(c, f),
                Err(e) => Err(e.clone()),
            };
            // A failed job is in the slot at once, before the commit: later jobs of the same
            // run (its finish) see it.
            let failed = res.is_err();
            if let Err(e) = res {
                keep(&job_slot, e);
            }
            Box::new(move |commit| {
                if let (false, Err(e)) = (failed, commit) {
                    forget_known(&known);
                    keep(&job_slot, e.clone());
                }
            })
        });
        if self.inner.writer.send(job, false).is_err() {
            keep(&slot, StoreError::Closed);
        }
    }

    /// Run a read on a pooled connection, on the calling thread.
    fn read_blocking<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = match self.inner.readers.lock() {
            Ok(mut g) => g.pop(),
            Err(p) => p.into_inner().pop(),
        };
        let conn = match pooled {
            Some(c) => c,
            None => connect(&self.inner.path, &self.inner.opts, false)?,
        };
        let out = f(&conn);
        let mut pool = match self.inner.readers.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if pool.len() < self.inner.opts.readers {
            pool.push(conn);
        }
        out
    }

    /// Run a read on tokio's blocking threads.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let _permit = self
            .inner
            .reading
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let store = self.clone();
        let task = tokio::task::spawn_blocking(move || store.read_blocking(f));
        // As for writes: a short read is usually done before a sleeping thread would wake.
        let start = std::time::Instant::now();
        while !task.is_finished() && start.elapsed() < writer::SPIN {
            tokio::task::yield_now().await;
        }
        task.await
            .map_err(|e| StoreError::Database(format!("a read task failed: {e}")))?
    }

    /// A run's trace as stored, with the tokens of erased secrets shown as
    /// `[REDACTED_TOMBSTONE]`. A run still going has no trace yet (`Ok(None)` with the run
    /// known is given as a summary by [`Store::run_summary`]).
    pub async fn get_trace(&self, run_id: &str) -> Result<Option<Value>, StoreError> {
        let run_id = run_id.to_owned();
        self.read(move |c| load_trace(c, &run_id)).await
    }

    /// [`Store::get_trace`] on the calling thread, for callers outside an async runtime (the
    /// CLI): no hand-off to a blocking thread.
    pub fn get_trace_blocking(&self, run_id: &str) -> Result<Option<Value>, StoreError> {
        self.read_blocking(|c| load_trace(c, run_id))
    }

    /// One run's summary.
    pub async fn run_summary(&self, run_id: &str) -> Result<Option<RunSummary>, StoreError> {
        let run_id = run_id.to_owned();
        self.read(move |c| {
            let mut rows = summaries(c, Some(&run_id), 1)?;
            Ok(rows.pop())
        })
        .await
    }

    /// The newest runs first.
    pub async fn list_runs(&self, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
        self.read(move |c| summaries(c, None, limit)).await
    }

    /// The program a run ran; [`StoreError::ProgramDeleted`] when it was deleted since.
    pub async fn program_of_run(&self, run_id: &str) -> Result<StoredProgram, StoreError> {
        let run_id = run_id.to_owned();
        self.read(move |c| {
            let row = c
                .query_row(
                    "SELECT p.hash, p.name, p.source, p.created_at, p.deleted_at IS NOT NULL
                     FROM runs r JOIN programs p ON p.hash = r.program_hash WHERE r.run_id = ?1",
                    [&run_id],
                    |r| Ok((stored_program(r)?, r.get::<_, bool>(4)?)),
                )
                .optional()?;
            match row {
                None => Err(StoreError::NoRun(run_id)),
                Some((p, true)) => Err(StoreError::ProgramDeleted {
                    run_id,
                    program_id: p.hash,
                }),
                Some((p, false)) => Ok(p),
            }
        })
        .await
    }

    /// The stored programs, deleted ones left out, the newest first.
    pub async fn list_programs(&self, limit: usize) -> Result<Vec<ProgramSummary>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT p.hash, p.name, p.created_at,
                        (SELECT count(*) FROM runs r WHERE r.program_hash = p.hash),
                        (SELECT max(r.started_at) FROM runs r WHERE r.program_hash = p.hash)
                 FROM programs p WHERE p.deleted_at IS NULL
                 ORDER BY p.created_at DESC, p.rowid DESC LIMIT ?1",
            )?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = st.query_map([limit], |r| {
                Ok(ProgramSummary {
                    program_id: r.get(0)?,
                    name: r.get(1)?,
                    created_at: r.get(2)?,
                    runs: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                    last_run_at: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// A program by its id (the sha256 of its canonical JSON, exactly); `None` when there is
    /// no such program or it was deleted.
    pub async fn get_program(&self, id: &str) -> Result<Option<StoredProgram>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT hash, name, source, created_at FROM programs
                 WHERE hash = ?1 AND deleted_at IS NULL",
            )?
            .query_row([&id], stored_program)
            .optional()?)
        })
        .await
    }

    /// Delete a program: its source is cleared and the row marked deleted, but kept, because
    /// its runs (the audit log) reference its hash: their traces and chains are untouched, and
    /// they can no longer be resumed. Running the same program again restores it.
    pub async fn delete_program(&self, id: &str) -> Result<Deletion, StoreError> {
        let id = id.to_owned();
        let known = self.inner.known.clone();
        self.write(move |c| {
            let live: Option<bool> = c
                .query_row(
                    "SELECT deleted_at IS NULL FROM programs WHERE hash = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .optional()?;
            if live != Some(true) {
                return Ok(Deletion::NotFound);
            }
            c.execute(
                "UPDATE programs SET source = '', deleted_at = ?2 WHERE hash = ?1",
                params![id, now_text()],
            )?;
            let runs: i64 = c.query_row(
                "SELECT count(*) FROM runs WHERE program_hash = ?1",
                [&id],
                |r| r.get(0),
            )?;
            // The next run of this program must write its source again.
            match known.lock() {
                Ok(mut g) => g.remove(&id),
                Err(p) => p.into_inner().remove(&id),
            };
            Ok(Deletion::Deleted {
                runs_kept: u64::try_from(runs).unwrap_or(0),
            })
        })
        .await
    }

    /// The database file, its schema version and how many runs and (live) programs it holds.
    pub async fn health(&self) -> Result<Health, StoreError> {
        let path = self.inner.path.display().to_string();
        self.read(move |c| {
            let (schema_version, runs, programs): (i64, i64, i64) = c.query_row(
                "SELECT (SELECT user_version FROM pragma_user_version),
                        (SELECT count(*) FROM runs),
                        (SELECT count(*) FROM programs WHERE deleted_at IS NULL)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            Ok(Health {
                path,
                schema_version,
                runs: u64::try_from(runs).unwrap_or(0),
                programs: u64::try_from(programs).unwrap_or(0),
            })
        })
        .await
    }

    /// Recompute the chain of one run, or of every run (`None`).
    pub async fn verify(&self, run_id: Option<&str>) -> Result<Vec<Verdict>, StoreError> {
        let run_id = run_id.map(str::to_owned);
        self.read(move |c| verify(c, run_id.as_deref())).await
    }

    /// Erase a secret's value (`id` or `vault://secret/<id>`). The envelopes, which only hold
    /// the token, are untouched, so every chain still verifies.
    pub async fn erase(&self, reference: &str) -> Result<Erasure, StoreError> {
        let id = reference
            .strip_prefix(TOKEN_PREFIX)
            .unwrap_or(reference)
            .to_owned();
        self.write(move |c| {
            let value: Option<Option<String>> = c
                .query_row("SELECT value FROM vault WHERE id = ?1", [&id], |r| r.get(0))
                .optional()?;
            match value {
                None => Err(StoreError::NoSecret(secrets::token(&id))),
                Some(None) => Ok(Erasure::AlreadyErased),
                Some(Some(_)) => {
                    c.execute(
                        "UPDATE vault SET value = NULL, erased_at = ?2 WHERE id = ?1",
                        params![id, now_text()],
                    )?;
                    Ok(Erasure::Erased)
                }
            }
        })
        .await
    }

    /// `PRAGMA integrity_check` and `PRAGMA foreign_key_check`: `"ok"` when the file is sound
    /// and every reference between rows resolves, else one line per problem.
    pub async fn integrity_check(&self) -> Result<String, StoreError> {
        self.read(|c| {
            let mut st = c.prepare("PRAGMA integrity_check")?;
            let mut rows: Vec<String> =
                st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
            let mut st = c.prepare("PRAGMA foreign_key_check")?;
            let dangling = st.query_map([], |r| {
                Ok(format!(
                    "{} row {} refers to a missing {} row",
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<i64>>(1)?
                        .map_or_else(|| "(without rowid)".to_owned(), |n| n.to_string()),
                    r.get::<_, String>(2)?
                ))
            })?;
            let dangling: Vec<String> = dangling.collect::<Result<_, _>>()?;
            if !dangling.is_empty() {
                rows.retain(|r| r != "ok");
                rows.extend(dangling);
            }
            Ok(rows.join("\n"))
        })
        .await
    }
}

fn connect(path: &Path, opts: &StoreOptions, writer: bool) -> Result<Connection, StoreError> {
    let flags = if writer {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI
    } else {
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI
    };
    let open_err = |e: rusqlite::Error| StoreError::Open {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
    conn.busy_timeout(opts.busy_timeout).map_err(open_err)?;
    if writer {
        // Before anything is written to it.
        schema::ensure_ours(&conn).map_err(|e| match e {
            StoreError::NotNanovm(_) => StoreError::NotNanovm(path.display().to_string()),
            other => other,
        })?;
        // A new file's pages (an existing file keeps its own): see [`PAGE_SIZE`].
        conn.pragma_update(None, "page_size", PAGE_SIZE)
            .map_err(open_err)?;
        // Switching a new file to WAL needs an exclusive lock, and SQLite does not always wait
        // for it (another process may be opening the same new file): retry within the timeout.
        let start = std::time::Instant::now();
        let mode: String = loop {
            match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)) {
                Ok(m) => break m,
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy
                        && start.elapsed() < opts.busy_timeout =>
                {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(open_err(e)),
            }
        };
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Open {
                path: path.display().to_string(),
                message: format!("the database cannot use WAL mode (journal_mode is {mode})"),
            });
        }
        let sync = match opts.synchronous {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        };
        conn.pragma_update(None, "synchronous", sync)
            .map_err(open_err)?;
        // 16 MiB of page cache (the default is 2 MiB): the indices' hot pages stay in memory.
        conn.pragma_update(None, "cache_size", -16384)
            .map_err(open_err)?;
    }
    // The schema's references are not enforced on every write (each would be a lookup and a
    // statement journal per insert): nanovm writes a row's parents first, in the same job
    // or an earlier one, and `integrity_check` runs `PRAGMA foreign_key_check`.
    conn.pragma_update(None, "foreign_keys", "OFF")
        .map_err(open_err)?;
    Ok(conn)
}

/// The page size of a new database file, in bytes (SQLite's default is 4,096). A run writes
/// about 3 KiB (its row and its envelopes) and each commit also rewrites the last, partly
/// filled page of every table and index it appends to, one WAL frame (a pair of system
/// calls) per page. Measured with `NANOVM_STORE_LOAD` (see `benches/store.rs`): about 30%
/// fewer writes than 4 KiB pages, CPU per persisted run the same within the machine's noise;
/// 16 KiB pages were no better than 8, and 2 KiB pages (rows spilling into overflow pages)
/// took twice the CPU.
pub const PAGE_SIZE: i64 = 8192;

/// A `StoredProgram` from the columns hash, name, source, created_at.
fn stored_program(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredProgram> {
    Ok(StoredProgram {
        hash: r.get(0)?,
        name: r.get(1)?,
        source: r.get(2)?,
        created_at: r.get(3)?,
    })
}

/// Create a database at an older schema version (`version` ≤ [`SCHEMA_VERSION`]), for tests
/// that check it upgrades when [`Store::open`] opens it. Not for anything else.
#[doc(hidden)]
pub fn create_at_schema_version(path: impl AsRef<Path>, version: i64) -> Result<(), StoreError> {
    let mut conn = connect(path.as_ref(), &StoreOptions::default(), true)?;
    schema::migrate_to(&mut conn, version)
}

/// A run's stored trace. A trace is stored without its step records (`"steps": []`) when
/// they are the payloads of the run's envelopes, its first `envelopes` ones (a resumed run
/// that is still going has more); they are read back from there, each in the field order of
/// the trace format (its `output` is canonical JSON, object keys sorted, as the audit chain
/// hashed it). A trace stored with its steps (older files, or a run whose envelope writes
/// failed) is read as it is.
fn load_trace(c: &Connection, run_id: &str) -> Result<Option<Value>, StoreError> {
    // One snapshot for the run's row and its envelopes (and one WAL read lock, not one per
    // statement); nothing is written, so it ends with the function, committed or not.
    let tx = c.unchecked_transaction()?;
    let row: Option<(Option<String>, i64)> = tx
        .prepare_cached("SELECT trace, envelopes FROM runs WHERE run_id = ?1")?
        .query_row([run_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((Some(text), envelopes)) = row else {
        return Ok(None);
    };
    let mut trace: Value = serde_json::from_str(&text).map_err(corrupt)?;
    // Stored as `null`, the state snapshots are the step records' state hashes (see
    // `session::Skeleton`).
    let snapshots_elided = trace.get("state_snapshots").is_some_and(Value::is_null);
    let mut snapshots = Vec::new();
    if let Some(Value::Array(steps)) = trace.get_mut("steps")
        && steps.is_empty()
        && envelopes > 0
    {
        let mut st = tx.prepare_cached(
            "SELECT payload FROM envelopes WHERE run_id = ?1 AND idx < ?2 ORDER BY idx",
        )?;
        let mut rows = st.query(params![run_id, envelopes])?;
        while let Some(r) = rows.next()? {
            let payload = r.get_ref(0)?.as_str().map_err(corrupt)?;
            let Members(mut members) = serde_json::from_str(payload).map_err(|e| {
                corrupt(format!(
                    "run `{run_id}` has an envelope whose payload is not a JSON object: {e}"
                ))
            })?;
            // The payload's keys are sorted (canonical JSON); a trace lists them in its order,
            // and anything else after them.
            let mut record = serde_json::Map::with_capacity(members.len());
            for key in StepRecord::FIELDS {
                let member = members
                    .iter_mut()
                    .find(|m| m.as_ref().is_some_and(|(k, _)| k == key));
                if let Some((k, v)) = member.and_then(Option::take) {
                    record.insert(k, v);
                }
            }
            record.extend(members.into_iter().flatten());
            steps.push(Value::Object(record));
        }
        if i64::try_from(steps.len()).ok() != Some(envelopes) {
            return Err(corrupt(format!(
                "run `{run_id}` has {} of its {envelopes} envelopes",
                steps.len()
            )));
        }
        if snapshots_elided {
            let hashes = steps
                .iter()
                .map(|r| r.get("state_hash").and_then(Value::as_str));
            snapshots = session::snapshots_of(hashes)
                .map(|(i, h)| Value::Array(vec![i.into(), h.into()]))
                .collect();
        }
    }
    if snapshots_elided && let Some(slot) = trace.get_mut("state_snapshots") {
        *slot = Value::Array(snapshots);
    }
    project(&tx, &mut trace)?;
    Ok(Some(trace))
}

/// A JSON object's members in their order, read without building a map (each would be built
/// twice: once as read, once in the trace's field order).
struct Members(Vec<Option<(String, Value)>>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Members, A::Error> {
                let mut out = Vec::with_capacity(StepRecord::FIELDS.len());
                while let Some(member) = m.next_entry::<String, Value>()? {
                    out.push(Some(member));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// Show erased secrets' tokens as tombstones.
fn project(c: &Connection, v: &mut Value) -> Result<(), StoreError> {
    let ids = secrets::tokens_in(v);
    if ids.is_empty() {
        return Ok(());
    }
    let mut st = c.prepare_cached("SELECT value IS NULL FROM vault WHERE id = ?1")?;
    let mut erased = Vec::new();
    for id in ids {
        let gone: Option<bool> = st.query_row([&id], |r| r.get(0)).optional()?;
        if gone == Some(true) {
            erased.push(id);
        }
    }
    secrets::tombstone(v, &erased);
    Ok(())
}

fn summaries(
    c: &Connection,
    run_id: Option<&str>,
    limit: usize,
) -> Result<Vec<RunSummary>, StoreError> {
    let now = now_ms();
    // Two statements: `?1 IS NULL OR run_id = ?1` would scan every run to find one.
    let mut st = match run_id {
        Some(_) => c.prepare_cached(
            "SELECT run_id, program_name, program_hash, status, started_at, finished_at, envelopes,
                    idempotency_key, lease_until, head_hash
             FROM runs WHERE run_id = ?1 LIMIT ?2",
        )?,
        // Newest first: rows are inserted when runs start.
        None => c.prepare_cached(
            "SELECT run_id, program_name, program_hash, status, started_at, finished_at, envelopes,
                    idempotency_key, lease_until, head_hash
             FROM runs WHERE ?1 IS NULL ORDER BY rowid DESC LIMIT ?2",
        )?,
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = st.query_map(params![run_id, limit], |r| {
        let status: String = r.get(3)?;
        let lease: i64 = r.get(8)?;
        Ok(RunSummary {
            run_id: r.get(0)?,
            program_name: r.get(1)?,
            program_hash: r.get(2)?,
            status: if status == "running" && lease < now {
                "interrupted".to_owned()
            } else {
                status
            },
            started_at: r.get(4)?,
            finished_at: r.get(5)?,
            envelopes: r.get::<_, i64>(6)?.max(0) as u64,
            head_hash: r.get(9)?,
            idempotency_key: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn verify(c: &Connection, run_id: Option<&str>) -> Result<Vec<Verdict>, StoreError> {
    let mut runs = match run_id {
        Some(_) => c.prepare_cached(
            "SELECT run_id, envelopes, head_hash, status IN ('running', 'interrupted') FROM runs
             WHERE run_id = ?1",
        )?,
        None => c.prepare_cached(
            "SELECT run_id, envelopes, head_hash, status IN ('running', 'interrupted') FROM runs
             WHERE ?1 IS NULL ORDER BY run_id",
        )?,
    };
    let heads: Vec<(String, i64, String, bool)> = runs
        .query_map([run_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<Result<_, _>>()?;
    if let Some(id) = run_id
        && heads.is_empty()
    {
        return Err(StoreError::NoRun(id.to_owned()));
    }
    let mut envs = c.prepare_cached(
        "SELECT idx, step_id, policy_hash, state_hash, prev_hash, hash, payload
         FROM envelopes WHERE run_id = ?1 ORDER BY idx",
    )?;
    let mut out = Vec::with_capacity(heads.len());
    // The hashes are stored as bytes and hashed as hex (see `chain::Stored`): each is written
    // as hex into a buffer of its own, reused from envelope to envelope.
    let [mut policy_hash, mut state_hash, mut prev_hash, mut hash] =
        std::array::from_fn::<String, 4, _>(|_| String::with_capacity(64));
    for (id, recorded, head, running) in heads {
        let mut v = chain::Verifier::new(&id);
        let mut rows = envs.query([&id])?;
        while let Some(r) = rows.next()? {
            let index: i64 = r.get(0)?;
            let step_id = r.get_ref(1)?.as_str().map_err(corrupt)?;
            chain::unstore_into(r.get_ref(2)?.as_blob().map_err(corrupt)?, &mut policy_hash);
            let state = r.get_ref(3)?.as_blob_or_null().map_err(corrupt)?;
            if let Some(s) = state {
                chain::unstore_into(s, &mut state_hash);
            }
            chain::unstore_into(r.get_ref(4)?.as_blob().map_err(corrupt)?, &mut prev_hash);
            chain::unstore_into(r.get_ref(5)?.as_blob().map_err(corrupt)?, &mut hash);
            let payload = r.get_ref(6)?.as_str().map_err(corrupt)?;
            let link = chain::Link {
                index: u64::try_from(index).unwrap_or(u64::MAX),
                step_id,
                policy_hash: &policy_hash,
                state_hash: state.map(|_| state_hash.as_str()),
                prev_hash: &prev_hash,
                payload,
            };
            v.push(&link, &hash);
        }
        let recorded = u64::try_from(recorded).unwrap_or(u64::MAX);
        // A run still going (or interrupted) records its head only when it ends: its chain
        // is checked link by link, and must extend what was recorded when it last suspended.
        let verdict = if running {
            v.finish_open(recorded)
        } else {
            v.finish(recorded, &head)
        };
        let (envelopes, broken) = match verdict {
            Ok(n) => (n, None),
            Err(b) => (recorded, Some(b)),
        };
        out.push(Verdict {
            run_id: id,
            envelopes,
            broken,
        });
    }
    Ok(out)
}

/// The sha256 (hex) of a value's canonical JSON, with the canonical text.
pub fn content_hash(v: &Value) -> (String, String) {
    let text = canon::to_string(v);
    let mut h = canon::Hasher::new();
    h.bytes(text.as_bytes());
    (h.finish_hex(), text)
}

/// A program or policy as the store keeps it: its canonical JSON and that text's sha256
/// (the program id, the policy hash), computed once. Clones share both, so a caller that
/// runs one program many times (the MCP server caches them) does not canonicalise and hash
/// it again for every run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content(Arc<(String, String)>);

impl Content {
    pub fn of(v: &Value) -> Self {
        Self(Arc::new(content_hash(v)))
    }

    /// The sha256 of the canonical text, in hex.
    pub fn hash(&self) -> &str {
        &self.0.0
    }

    /// The canonical JSON text.
    pub fn text(&self) -> &str {
        &self.0.1
    }
}
