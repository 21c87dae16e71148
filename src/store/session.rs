//! Persisted runs: idempotency, the vault, one envelope per executed step, the final trace
//! and the cursor of a suspended run.
//!
//! A run's writes: `begin` (program, policy, secrets, idempotency key and the run row, all
//! or nothing), then one envelope per step record as the runtime produces it (chained to the
//! one before; the envelopes made while the writer is busy go to it in one job, and the
//! writer group-commits them with other runs' writes), then `finish` (status, trace,
//! cursor). A crash leaves a `running` row whose lease lapses, and a chain that is intact up
//! to its last committed envelope. A run that ends before the writer has reached its `begin`
//! (a quick run while the writer is busy) is written by that job in one go: the run row as
//! ended and all its envelopes.

use super::chain::{Link, Stored, genesis, unstore};
use super::writer::atomically;
use super::{Content, Store, StoreError, corrupt, now_ms, now_text};
use crate::exec::canon;
use crate::exec::secrets::{self, Secret, SecretTools};
use crate::exec::trace::Metrics;
use crate::exec::{
    Cursor, Failure, Observer, Outcome, RunOptions, Runnable, Runtime, Source, Status, StepRecord,
    Trace,
};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The program's canonical JSON and id (stored content-addressed): `Content::of(&json)`,
    /// made once per program by callers that run it repeatedly.
    pub program: Content,
    /// The initial data; `{"$secret": …}` values go to the vault.
    pub context: Map<String, Value>,
    /// The policy snapshot the run is governed by (its hash is in every envelope).
    pub policy: Content,
    pub idempotency_key: Option<String>,
    /// Store the program under this name (renaming it if it is already stored). Without it,
    /// a newly stored program takes its own `name`, and a stored one keeps its name.
    pub save_as: Option<String>,
}

/// A persisted run's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Persisted {
    pub run_id: String,
    /// The program's id: the sha256 (hex) of its canonical JSON.
    pub program_id: String,
    pub trace: Trace,
    /// The idempotency key's stored result: nothing ran.
    pub replayed: bool,
    /// The run this one replaced: the key's earlier run, interrupted (its process died).
    pub took_over: Option<String>,
}

/// The longest idempotency key.
pub const MAX_KEY_LEN: usize = 256;

/// The longest program name given by `save_as`.
pub const MAX_NAME_LEN: usize = 256;

enum Begin {
    Started { took_over: Option<String> },
    Done(String),
    Busy,
}

impl Store {
    /// Run a program and persist everything: with an idempotency key, a key whose run ended
    /// returns that run's trace without running; a key whose run is still going (in this or
    /// another process) waits for it; a key whose run was interrupted runs again.
    pub async fn run(
        &self,
        runtime: &Runtime,
        prog: &Runnable,
        req: RunRequest,
    ) -> Result<Persisted, StoreError> {
        let RunRequest {
            program,
            mut context,
            policy,
            idempotency_key,
            save_as,
        } = req;
        if let Some(k) = &idempotency_key
            && (k.is_empty() || k.len() > MAX_KEY_LEN)
        {
            return Err(StoreError::BadKey(k.len()));
        }
        if let Some(n) = &save_as
            && (n.is_empty() || n.len() > MAX_NAME_LEN)
        {
            return Err(StoreError::BadName(n.len()));
        }
        let found = secrets::extract(&mut context)?;
        let mut context_text = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = canon::write_object(&context, &mut context_text);
        let context_text = String::from_utf8_lossy(&context_text).into_owned();
        // Time-ordered (UUID v7): new rows go at the end of every index keyed by run id,
        // instead of at random pages of an ever larger B-tree.
        let run_id = uuid::Uuid::now_v7().hyphenated().to_string();
        let head = genesis(&run_id);
        let begin = Arc::new(BeginRow {
            run_id: run_id.clone(),
            // Used unless the run waits for its begin job (a key or secrets).
            started_at: now_text(),
            head: head.clone(),
            program_name: prog.name().to_owned(),
            save_as,
            program,
            policy: policy.clone(),
            context_text,
            key: idempotency_key,
            secrets: found
                .iter()
                .map(|s| (s.id.clone(), canon::to_string(&s.value)))
                .collect(),
            owner: self.inner.owner.clone(),
            lease: self.inner.opts.lease,
        });
        let error = Arc::new(Mutex::new(None));
        let chain = Arc::new(Mutex::new(Chain {
            index: 0,
            prev: head,
            ..Chain::default()
        }));
        let mut took_over = None;
        if begin.key.is_some() || !begin.secrets.is_empty() {
            // The answer decides whether to run (idempotency) or fails it (a secret id in use).
            let mut wait = Duration::from_millis(5);
            loop {
                let row = begin.clone();
                let known = self.inner.known.clone();
                match self
                    .write_raw(move |c| row.begin(c, &known, RowAs::Starting))
                    .await?
                {
                    Begin::Started { took_over: t } => {
                        took_over = t;
                        break;
                    }
                    Begin::Done(id) => {
                        let trace = self.stored_trace(&id).await?;
                        return Ok(Persisted {
                            run_id: id,
                            program_id: begin.program.hash().to_owned(),
                            trace,
                            replayed: true,
                            took_over: None,
                        });
                    }
                    Begin::Busy => {
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_millis(200));
                    }
                }
            }
        } else {
            // Nothing to decide: the writes are queued ahead of the run's envelopes, and a
            // failure surfaces when the run finishes. Should the run end first, this job
            // writes it whole (see `BeginRow::begin_detached`).
            lock(&chain).begin = BeginState::Queued;
            let row = begin.clone();
            let known = self.inner.known.clone();
            let run_chain = chain.clone();
            self.write_detached(
                move |c| row.begin_detached(c, &known, &run_chain),
                error.clone(),
                // `begin` makes its writes atomic itself, and each envelope is one statement.
                true,
            );
        }
        let values = found
            .into_iter()
            .map(|Secret { id, value }| (id, Some(value)))
            .collect();
        let (rt, recorder) = self.recording(runtime, &run_id, policy.hash(), chain, values, error);
        let run = rt.run_as(prog, context, run_id.clone());
        let outcome = self.with_lease(&run_id, &recorder.error, run).await;
        let trace = self.finish(&run_id, outcome, &recorder, false).await?;
        Ok(Persisted {
            run_id,
            program_id: begin.program.hash().to_owned(),
            trace,
            replayed: false,
            took_over,
        })
    }

    /// Resume a suspended run with a payload. `prog` must be the run's program (see
    /// [`Store::program_of_run`]), checked again by the caller. A run whose program was
    /// deleted is not resumed ([`StoreError::ProgramDeleted`]; it stays suspended).
    pub async fn resume(
        &self,
        runtime: &Runtime,
        prog: &Runnable,
        run_id: &str,
        payload: Value,
        source: Source,
    ) -> Result<Persisted, StoreError> {
        let id = run_id.to_owned();
        let owner = self.inner.owner.clone();
        let lease = self.inner.opts.lease;
        let claimed = self.write(move |c| claim(c, &id, &owner, lease)).await?;
        let Claimed {
            cursor: cursor_text,
            program_hash,
            policy_hash,
            envelopes,
            head,
        } = claimed;
        let restore = |message: String| {
            let id = run_id.to_owned();
            async move {
                self.write(move |c| {
                    c.execute(
                        "UPDATE runs SET status = 'suspended', lease_until = 0 WHERE run_id = ?1",
                        [&id],
                    )?;
                    Ok(())
                })
                .await?;
                Err(StoreError::Resume {
                    run_id: run_id.to_owned(),
                    message,
                })
            }
        };
        let cursor: Cursor = match serde_json::from_str(&cursor_text) {
            Ok(c) => c,
            Err(e) => return restore(format!("its cursor is unreadable: {e}")).await,
        };
        // The run's secrets: every token its state holds (in data and in step outputs).
        let mut ids: Vec<String> = Vec::new();
        for v in cursor
            .state
            .data
            .values()
            .chain(cursor.state.step_outputs.values())
        {
            for id in secrets::tokens_in(v) {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        let values = self.secret_values(ids).await?;
        let chain = Arc::new(Mutex::new(Chain {
            index: envelopes,
            prev: head,
            ..Chain::default()
        }));
        let error = Arc::new(Mutex::new(None));
        let (rt, recorder) = self.recording(runtime, run_id, &policy_hash, chain, values, error);
        let outcome = {
            let run = rt.resume(prog, cursor, payload, source);
            self.with_lease(run_id, &recorder.error, run).await
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => return restore(e.to_string()).await,
        };
        let trace = self.finish(run_id, outcome, &recorder, true).await?;
        Ok(Persisted {
            run_id: run_id.to_owned(),
            program_id: program_hash,
            trace,
            replayed: false,
            took_over: None,
        })
    }

    /// The runtime a persisted run uses: secrets revealed to tools, steps recorded.
    fn recording(
        &self,
        runtime: &Runtime,
        run_id: &str,
        policy_hash: &str,
        chain: Arc<Mutex<Chain>>,
        secrets: HashMap<String, Option<Value>>,
        error: Arc<Mutex<Option<StoreError>>>,
    ) -> (Runtime, Arc<Recorder>) {
        let recorder = Arc::new(Recorder {
            store: self.clone(),
            run_id: run_id.into(),
            policy_hash: policy_hash.into(),
            chain,
            error,
            next: runtime.options().observer.clone(),
        });
        let mut rt = runtime.clone().with_options(RunOptions {
            observer: Some(recorder.clone()),
            ..runtime.options().clone()
        });
        if !secrets.is_empty() {
            let tools = Arc::new(SecretTools::new(runtime.tools().clone(), secrets));
            rt = rt.with_tools(tools);
        }
        (rt, recorder)
    }

    /// Drive a run, renewing its lease every third of the lease; a renewal that fails is
    /// reported in `slot` (the run's error, given when it ends).
    async fn with_lease<T>(
        &self,
        run_id: &str,
        slot: &Arc<Mutex<Option<StoreError>>>,
        run: impl Future<Output = T>,
    ) -> T {
        tokio::pin!(run);
        // A run that ends without waiting for anything (no call outside the process) needs no
        // renewal, and no timer.
        let first = std::future::poll_fn(|cx| std::task::Poll::Ready(run.as_mut().poll(cx))).await;
        if let std::task::Poll::Ready(out) = first {
            return out;
        }
        let period = (self.inner.opts.lease / 3).max(Duration::from_millis(10));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                out = &mut run => return out,
                _ = tick.tick() => {
                    let id = run_id.to_owned();
                    let lease = self.inner.opts.lease;
                    let slot = slot.clone();
                    self.write_detached(
                        move |c| {
                            c.execute(
                                "UPDATE runs SET lease_until = ?2 WHERE run_id = ?1 AND status = 'running'",
                                params![id, lease_until(lease)],
                            )?;
                            Ok(())
                        },
                        slot,
                        true,
                    );
                }
            }
        }
    }

    /// Record how a run ended and give its trace back; fails when any of the run's writes
    /// failed. `resumed`: the run was suspended before, and its old cursor is removed.
    async fn finish(
        &self,
        run_id: &str,
        outcome: Outcome,
        recorder: &Recorder,
        resumed: bool,
    ) -> Result<Trace, StoreError> {
        let Outcome { trace, cursor } = outcome;
        // The trace is stored without its step records: they are the payloads of the run's
        // envelopes (see `load_trace`), which the audit chain covers.
        let skeleton = Skeleton::of(&trace).map_err(|e| StoreError::Database(e.to_string()))?;
        let cursor_text = match &cursor {
            None => None,
            Some(c) => {
                Some(serde_json::to_string(c).map_err(|e| StoreError::Database(e.to_string()))?)
            }
        };
        let status = trace.status.as_str();
        let id = run_id.to_owned();
        let cursor_text_present = cursor_text.is_some();
        let mut skeleton = Some(skeleton);
        let (envelopes, head, handed_off) = {
            let mut chain = lock(&recorder.chain);
            let envelopes = i64::try_from(chain.index).unwrap_or(i64::MAX);
            let head = chain.prev.clone();
            // The begin job has not run yet: it writes the run as ended, with its envelopes
            // (a run that suspends writes its cursor here, atomically, as before).
            let handed_off = cursor_text.is_none() && matches!(chain.begin, BeginState::Queued);
            if handed_off {
                chain.begin = BeginState::Ended(Ended {
                    status,
                    finished_at: now_text(),
                    trace: skeleton.take().unwrap_or_default(),
                    envelopes,
                    head: head.clone(),
                });
            }
            (envelopes, head, handed_off)
        };
        // The trace goes to the writer and comes back with the commit: should any of the
        // run's envelopes be missing (a write of theirs failed), the writer stores the whole
        // trace instead, so that no step record is lost. A new run's failed writes are in its
        // slot by the time this job runs (the writer runs jobs in order); a resumed run's
        // envelopes from before it suspended are counted.
        let slot = recorder.error.clone();
        let trace = self
            .write_raw(move |c| {
                let complete = if resumed {
                    let stored: i64 = c
                        .prepare_cached("SELECT count(*) FROM envelopes WHERE run_id = ?1")?
                        .query_row([&id], |r| r.get(0))?;
                    stored == envelopes
                } else {
                    match slot.lock() {
                        Ok(g) => g.is_none(),
                        Err(p) => p.into_inner().is_none(),
                    }
                };
                if handed_off && complete {
                    // The begin job wrote the run row as ended, with every envelope.
                    return Ok(trace);
                }
                let trace_text = match skeleton {
                    Some(s) if complete => s,
                    _ => serde_json::to_string(&trace)
                        .map_err(|e| StoreError::Database(e.to_string()))?,
                };
                let write = |c: &Connection| -> Result<(), StoreError> {
                    c.prepare_cached(
                        "UPDATE runs SET status = ?2, finished_at = ?3, trace = ?4, lease_until = 0,
                                     envelopes = ?5, head_hash = ?6
                     WHERE run_id = ?1",
                    )?
                    .execute(params![
                        id,
                        status,
                        now_text(),
                        trace_text,
                        envelopes,
                        head
                    ])?;
                    // A resumed run's old cursor goes; a run that suspends (again) gets its new
                    // one.
                    if resumed {
                        c.prepare_cached("DELETE FROM cursors WHERE run_id = ?1")?
                            .execute([&id])?;
                    }
                    if let Some(text) = cursor_text {
                        c.prepare_cached(
                            "INSERT INTO cursors (run_id, cursor, created_at) VALUES (?1, ?2, ?3)",
                        )?
                        .execute(params![id, text, now_text()])?;
                    }
                    Ok(())
                };
                // One statement (the run row's update) is atomic by itself.
                if resumed || cursor_text_present {
                    atomically(c, write)?;
                } else {
                    write(c)?;
                }
                Ok(trace)
            })
            .await?;
        let failed = match recorder.error.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        match failed {
            None => Ok(trace),
            Some(e) => Err(StoreError::Audit {
                run_id: run_id.to_owned(),
                message: e.to_string(),
            }),
        }
    }

    async fn stored_trace(&self, run_id: &str) -> Result<Trace, StoreError> {
        let v = self
            .get_trace(run_id)
            .await?
            .ok_or_else(|| corrupt(format!("run `{run_id}` ended but has no trace")))?;
        serde_json::from_value(v).map_err(corrupt)
    }

    async fn secret_values(
        &self,
        ids: Vec<String>,
    ) -> Result<HashMap<String, Option<Value>>, StoreError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        self.read(move |c| {
            let mut st = c.prepare_cached("SELECT value FROM vault WHERE id = ?1")?;
            let mut out = HashMap::new();
            for id in ids {
                let v: Option<Option<String>> = st.query_row([&id], |r| r.get(0)).optional()?;
                if let Some(v) = v {
                    let v = match v {
                        Some(text) => Some(serde_json::from_str(&text).map_err(corrupt)?),
                        None => None,
                    };
                    out.insert(id, v);
                }
            }
            Ok(out)
        })
        .await
    }
}

fn lease_until(lease: Duration) -> i64 {
    now_ms().saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
}

/// Everything `begin` writes (no `Debug`: it holds secret values).
struct BeginRow {
    run_id: String,
    /// The chain's head before the first envelope: `genesis(run_id)`.
    head: String,
    started_at: String,
    program_name: String,
    /// The name the program is stored under, replacing a stored one.
    save_as: Option<String>,
    program: Content,
    policy: Content,
    context_text: String,
    key: Option<String>,
    /// id → canonical JSON of the value.
    secrets: Vec<(String, String)>,
    owner: String,
    lease: Duration,
}

impl BeginRow {
    /// The begin job of a run nobody waits for. When the run has ended by the time the
    /// writer gets here (a quick run while the writer is busy), its row is written as ended
    /// and its envelopes with it, in this job: the finish job then has nothing to write
    /// (unless a write failed), and the run row is written once instead of twice.
    fn begin_detached(
        &self,
        c: &Connection,
        known: &super::Known,
        chain: &Mutex<Chain>,
    ) -> Result<(), StoreError> {
        let ended = {
            let mut chain = lock(chain);
            match std::mem::take(&mut chain.begin) {
                BeginState::Ended(e) => Some((e, std::mem::take(&mut chain.pending))),
                // From here on the run's finish finds the row written.
                BeginState::Queued | BeginState::Written => None,
            }
        };
        match ended {
            None => self.begin(c, known, RowAs::Running).map(drop),
            Some((ended, pending)) => {
                self.begin(c, known, RowAs::Ended(&ended))?;
                insert_envelopes(c, &self.run_id, self.policy.hash(), pending)
            }
        }
    }

    /// Run the begin job's writes: atomically, unless the run row is the only one (a
    /// statement is atomic by itself, and a savepoint costs a copy of every page it touches).
    fn begin(
        &self,
        c: &Connection,
        known: &super::Known,
        row: RowAs<'_>,
    ) -> Result<Begin, StoreError> {
        let out = if self.writes_only_the_run(known) {
            self.try_begin(c, known, row)
        } else {
            atomically(c, |c| self.try_begin(c, known, row))
        };
        if out.is_err() {
            // The job's writes are rolled back: the program and policy may not be stored.
            let mut known = match known.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            known.remove(self.program.hash());
            known.remove(self.policy.hash());
        }
        out
    }

    /// No idempotency key, secret or name to write, and the program and policy stored.
    fn writes_only_the_run(&self, known: &super::Known) -> bool {
        if self.key.is_some() || !self.secrets.is_empty() || self.save_as.is_some() {
            return false;
        }
        let known = match known.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        known.contains(self.program.hash()) && known.contains(self.policy.hash())
    }

    /// Store the program: a new one under its `save_as` or own name, a deleted one restored
    /// (its source back), a stored one renamed when `save_as` is given.
    fn store_program(
        &self,
        c: &Connection,
        now: &str,
        known: &super::Known,
    ) -> Result<(), StoreError> {
        let mut known = match known.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        // A known hash is stored and not deleted (deleting it forgets it).
        if self.save_as.is_none() && known.contains(self.program.hash()) {
            return Ok(());
        }
        match &self.save_as {
            Some(name) => c
                .prepare_cached(
                    "INSERT INTO programs (hash, name, source, created_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (hash) DO UPDATE SET name = excluded.name,
                         source = excluded.source, deleted_at = NULL",
                )?
                .execute(params![self.program.hash(), name, self.program.text(), now])?,
            None => c
                .prepare_cached(
                    "INSERT INTO programs (hash, name, source, created_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (hash) DO UPDATE SET source = excluded.source, deleted_at = NULL
                     WHERE programs.deleted_at IS NOT NULL",
                )?
                .execute(params![
                    self.program.hash(),
                    self.program_name,
                    self.program.text(),
                    now
                ])?,
        };
        known.insert(self.program.hash().to_owned());
        Ok(())
    }

    fn try_begin(
        &self,
        c: &Connection,
        known: &super::Known,
        row: RowAs<'_>,
    ) -> Result<Begin, StoreError> {
        let mut took_over = None;
        if let Some(key) = &self.key {
            let held: Option<(String, String, String, i64)> = c
                .prepare_cached(
                    "SELECT k.run_id, k.program_hash, r.status, r.lease_until
                     FROM idempotency_keys k JOIN runs r ON r.run_id = k.run_id WHERE k.key = ?1",
                )?
                .query_row([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .optional()?;
            if let Some((run_id, program_hash, status, lease)) = held {
                if program_hash != self.program.hash() {
                    return Err(StoreError::KeyConflict {
                        key: key.clone(),
                        found: program_hash,
                        given: self.program.hash().to_owned(),
                    });
                }
                if status != "running" {
                    // Nothing runs, but the program is named (or restored) as asked.
                    if self.save_as.is_some() {
                        self.store_program(c, &now_text(), known)?;
                    }
                    return Ok(Begin::Done(run_id));
                }
                if lease >= now_ms() {
                    return Ok(Begin::Busy);
                }
                c.prepare_cached("UPDATE runs SET status = 'interrupted' WHERE run_id = ?1")?
                    .execute([&run_id])?;
                took_over = Some(run_id);
            }
        }
        let now = now_text();
        self.store_program(c, &now, known)?;
        let mut known = match known.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if !known.contains(self.policy.hash()) {
            c.prepare_cached(
                "INSERT OR IGNORE INTO policies (hash, policy, created_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![self.policy.hash(), self.policy.text(), now])?;
            known.insert(self.policy.hash().to_owned());
        }
        drop(known);
        for (id, value) in &self.secrets {
            let stored: Option<Option<String>> = c
                .prepare_cached("SELECT value FROM vault WHERE id = ?1")?
                .query_row([id], |r| r.get(0))
                .optional()?;
            match stored {
                None => {
                    c.prepare_cached(
                        "INSERT INTO vault (id, value, created_at) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![id, value, now])?;
                }
                Some(Some(v)) if v == *value => {}
                Some(_) => return Err(StoreError::SecretConflict(secrets::token(id))),
            }
        }
        let started_at = match row {
            RowAs::Starting => &now,
            RowAs::Running | RowAs::Ended(_) => &self.started_at,
        };
        match row {
            RowAs::Starting | RowAs::Running => c
                .prepare_cached(
                    "INSERT INTO runs (run_id, program_hash, policy_hash, program_name,
                                       idempotency_key, status, started_at, context, envelopes,
                                       head_hash, owner, lease_until)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?7, 0, ?8, ?9, ?10)",
                )?
                .execute(params![
                    self.run_id,
                    self.program.hash(),
                    self.policy.hash(),
                    self.program_name,
                    self.key,
                    started_at,
                    self.context_text,
                    self.head,
                    self.owner,
                    lease_until(self.lease),
                ])?,
            RowAs::Ended(e) => c
                .prepare_cached(
                    "INSERT INTO runs (run_id, program_hash, policy_hash, program_name,
                                       idempotency_key, status, started_at, finished_at,
                                       context, trace, envelopes, head_hash, owner, lease_until)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 0)",
                )?
                .execute(params![
                    self.run_id,
                    self.program.hash(),
                    self.policy.hash(),
                    self.program_name,
                    self.key,
                    e.status,
                    started_at,
                    e.finished_at,
                    self.context_text,
                    e.trace,
                    e.envelopes,
                    e.head,
                    self.owner,
                ])?,
        };
        if let Some(key) = &self.key {
            c.prepare_cached(
                "INSERT INTO idempotency_keys (key, run_id, program_hash, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT (key) DO UPDATE SET run_id = excluded.run_id, updated_at = excluded.updated_at",
            )?
            .execute(params![key, self.run_id, self.program.hash(), now])?;
        }
        Ok(Begin::Started { took_over })
    }
}

struct Claimed {
    cursor: String,
    program_hash: String,
    policy_hash: String,
    envelopes: u64,
    head: String,
}

/// Take a suspended run (or one whose resume was interrupted): it is `running` again, so one
/// resumer wins; its cursor stays until the resumed run ends.
fn claim(
    c: &Connection,
    run_id: &str,
    owner: &str,
    lease: Duration,
) -> Result<Claimed, StoreError> {
    let row: Option<(String, String, String, i64)> = c
        .query_row(
            "SELECT status, program_hash, policy_hash, lease_until FROM runs WHERE run_id = ?1",
            [run_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((status, program_hash, policy_hash, lease_end)) = row else {
        return Err(StoreError::NoRun(run_id.to_owned()));
    };
    let cursor: Option<String> = c
        .query_row(
            "SELECT cursor FROM cursors WHERE run_id = ?1",
            [run_id],
            |r| r.get(0),
        )
        .optional()?;
    // A resume whose process died leaves the run `running` with a lapsed lease and the cursor
    // in place: it can be resumed again.
    let resumable = status == "suspended" || (status == "running" && lease_end < now_ms());
    let (true, Some(cursor)) = (resumable, cursor) else {
        if status == "suspended" {
            return Err(corrupt(format!("suspended run `{run_id}` has no cursor")));
        }
        return Err(StoreError::NotSuspended {
            run_id: run_id.to_owned(),
            status,
        });
    };
    // A deleted program's source is gone: the run cannot go on (running the program again
    // restores it).
    let deleted: Option<bool> = c
        .query_row(
            "SELECT deleted_at IS NOT NULL FROM programs WHERE hash = ?1",
            [&program_hash],
            |r| r.get(0),
        )
        .optional()?;
    if deleted != Some(false) {
        return Err(StoreError::ProgramDeleted {
            run_id: run_id.to_owned(),
            program_id: program_hash,
        });
    }
    // The chain goes on from its last envelope (an interrupted resume may have added some).
    let last: Option<(i64, String)> = c
        .query_row(
            "SELECT idx, hash FROM envelopes WHERE run_id = ?1 ORDER BY idx DESC LIMIT 1",
            [run_id],
            |r| {
                let hash = r.get_ref(1)?.as_blob()?;
                Ok((r.get(0)?, unstore(hash)))
            },
        )
        .optional()?;
    let (envelopes, head) = match last {
        Some((idx, hash)) => (u64::try_from(idx).unwrap_or(0).saturating_add(1), hash),
        None => (0, genesis(run_id)),
    };
    c.execute(
        "UPDATE runs SET status = 'running', finished_at = NULL, owner = ?2, lease_until = ?3 WHERE run_id = ?1",
        params![run_id, owner, lease_until(lease)],
    )?;
    Ok(Claimed {
        cursor,
        program_hash,
        policy_hash,
        envelopes,
        head,
    })
}

/// Where a run's chain stands, and its envelopes not yet handed to the writer.
#[derive(Debug, Default)]
struct Chain {
    index: u64,
    prev: String,
    /// Envelopes made since the writer last took them, in chain order.
    pending: Vec<Envelope>,
    /// A writer job that takes `pending` is queued (one per run at a time: the envelopes of
    /// a quick run's steps go to the writer in one job).
    scheduled: bool,
    /// Where the run's detached `begin` job stands.
    begin: BeginState,
}

/// How a `begin` job writes the run row.
#[derive(Debug, Clone, Copy)]
enum RowAs<'a> {
    /// Running from now: the run starts once this job has committed (it was awaited).
    Starting,
    /// Running since it was queued (the run did not wait for this job).
    Running,
    /// Ended: the run finished before this job ran.
    Ended(&'a Ended),
}

/// A run's `begin` job, as its `finish` finds it.
#[derive(Debug, Default)]
enum BeginState {
    /// Run (or awaited: a run with a key or secrets, a resumed run).
    #[default]
    Written,
    /// Queued, not run yet.
    Queued,
    /// The run ended before the job ran: the job writes this row and the run's envelopes.
    Ended(Ended),
}

/// The columns of an ended run's row that `finish` writes.
#[derive(Debug)]
struct Ended {
    status: &'static str,
    finished_at: String,
    /// The trace without its step records (they are the envelopes' payloads).
    trace: String,
    envelopes: i64,
    head: String,
}

/// A trace as stored when its step records are its envelopes' payloads: the trace's fields in
/// its order, `steps` empty, and `state_snapshots` `null` when they can be read back from the
/// step records' state hashes (the usual case; see [`snapshots_of`]), about a third of the
/// text less for the store to write.
#[derive(serde::Serialize)]
struct Skeleton<'a> {
    trace_id: &'a str,
    program_name: &'a str,
    status: Status,
    steps: [(); 0],
    final_output: &'a Value,
    error: &'a Option<String>,
    failure: &'a Option<Failure>,
    started_at: &'a str,
    finished_at: &'a Option<String>,
    duration_ms: f64,
    state_snapshots: Option<&'a [(u64, String)]>,
    snapshot_root: &'a str,
    suspended_step_id: &'a Option<String>,
    step_metrics: &'a Metrics,
    total_tokens: u64,
    cost_usd: Option<f64>,
}

impl<'a> Skeleton<'a> {
    fn of(t: &'a Trace) -> serde_json::Result<String> {
        let derivable = t
            .state_snapshots
            .iter()
            .map(|(i, h)| (*i, h.as_str()))
            .eq(snapshots_of(
                t.steps.iter().map(|r| r.state_hash.as_deref()),
            ));
        serde_json::to_string(&Skeleton {
            trace_id: &t.trace_id,
            program_name: &t.program_name,
            status: t.status,
            steps: [],
            final_output: &t.final_output,
            error: &t.error,
            failure: &t.failure,
            started_at: &t.started_at,
            finished_at: &t.finished_at,
            duration_ms: t.duration_ms,
            state_snapshots: (!derivable).then_some(t.state_snapshots.as_slice()),
            snapshot_root: &t.snapshot_root,
            suspended_step_id: &t.suspended_step_id,
            step_metrics: &t.step_metrics,
            total_tokens: t.total_tokens,
            cost_usd: t.cost_usd,
        })
    }
}

/// The state snapshots that step records with these state hashes (in trace order) stand for:
/// `[n, hash]` for the n-th record that has one (a top-level step's; sub-steps have none).
pub(super) fn snapshots_of<'a>(
    hashes: impl Iterator<Item = Option<&'a str>>,
) -> impl Iterator<Item = (u64, &'a str)> {
    hashes.flatten().zip(0u64..).map(|(h, i)| (i, h))
}

/// A mutex's guard, poisoned or not (each critical section here leaves its data whole).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Insert a run's envelopes with one prepared statement. Each insert is atomic by itself;
/// one that fails does not keep the others out (the first error is returned).
fn insert_envelopes(
    c: &Connection,
    run_id: &str,
    policy_hash: &str,
    pending: Vec<Envelope>,
) -> Result<(), StoreError> {
    if pending.is_empty() {
        return Ok(());
    }
    let mut st = c.prepare_cached(
        "INSERT INTO envelopes (run_id, idx, step_id, policy_hash, state_hash, prev_hash, hash, payload)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    let mut first_error = None;
    let policy_hash = Stored::of(policy_hash);
    for e in pending {
        let written = st.execute(params![
            run_id,
            e.idx,
            e.step_id,
            policy_hash,
            e.state_hash.as_deref().map(Stored::of),
            Stored::of(&e.prev),
            Stored::of(&e.hash),
            e.payload
        ]);
        if let Err(err) = written {
            first_error.get_or_insert(err);
        }
    }
    first_error.map_or(Ok(()), |e| Err(e.into()))
}

impl rusqlite::ToSql for Stored<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::Borrowed(
            rusqlite::types::ValueRef::Blob(self.as_bytes()),
        ))
    }
}

/// One envelope row (besides the run's id and policy hash).
#[derive(Debug)]
struct Envelope {
    idx: i64,
    step_id: String,
    state_hash: Option<String>,
    prev: String,
    hash: String,
    payload: String,
}

/// The observer that writes one envelope per step record.
#[derive(Debug)]
struct Recorder {
    store: Store,
    run_id: Arc<str>,
    policy_hash: Arc<str>,
    chain: Arc<Mutex<Chain>>,
    /// The first write that failed.
    error: Arc<Mutex<Option<StoreError>>>,
    next: Option<Arc<dyn Observer>>,
}

impl Observer for Recorder {
    fn step_started(&self, step_id: &str, number: u64) {
        if let Some(n) = &self.next {
            n.step_started(step_id, number);
        }
    }

    fn step_finished(&self, record: &StepRecord) {
        if let Some(n) = &self.next {
            n.step_finished(record);
        }
        let payload = record.canonical();
        let mut chain = match self.chain.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let index = chain.index;
        let state_hash = record.state_hash.clone();
        let hash = Link {
            index,
            step_id: &record.step_id,
            policy_hash: &self.policy_hash,
            state_hash: state_hash.as_deref(),
            prev_hash: &chain.prev,
            payload: &payload,
        }
        .hash();
        let prev = std::mem::replace(&mut chain.prev, hash.clone());
        chain.index += 1;
        chain.pending.push(Envelope {
            idx: i64::try_from(index).unwrap_or(i64::MAX),
            step_id: record.step_id.clone(),
            state_hash,
            prev,
            hash,
            payload,
        });
        if chain.scheduled {
            // The queued job has not taken the pending envelopes yet: it writes this one too.
            return;
        }
        chain.scheduled = true;
        drop(chain);
        let chain = self.chain.clone();
        let run_id = self.run_id.clone();
        let policy_hash = self.policy_hash.clone();
        let slot = self.error.clone();
        self.store.write_detached(
            move |c| {
                let pending = {
                    let mut chain = lock(&chain);
                    chain.scheduled = false;
                    std::mem::take(&mut chain.pending)
                };
                // Taken by the run's begin job already (the run had ended by then).
                if pending.is_empty() {
                    return Ok(());
                }
                // After a failed write of this run (rare), make sure its row exists: when its
                // `begin` failed, envelopes would refer to no run. They are dropped instead;
                // the run ends with that error.
                let failed_before = match slot.lock() {
                    Ok(g) => g.is_some(),
                    Err(p) => p.into_inner().is_some(),
                };
                if failed_before {
                    let row = c
                        .prepare_cached("SELECT 1 FROM runs WHERE run_id = ?1")?
                        .query_row([&*run_id], |_| Ok(()))
                        .optional()?;
                    if row.is_none() {
                        return Ok(());
                    }
                }
                insert_envelopes(c, &run_id, &policy_hash, pending)
            },
            self.error.clone(),
            true,
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use serde_json::json;

    fn record(step_id: &str, state_hash: Option<&str>, parent: Option<&str>) -> StepRecord {
        serde_json::from_value(json!({
            "step_id": step_id, "status": "success", "output": {"n": 1}, "error": null,
            "retries": 0, "usage": null, "duration_ms": 0.5, "parent": parent,
            "state_hash": state_hash,
        }))
        .unwrap()
    }

    fn trace(snapshots: Vec<(u64, String)>) -> Trace {
        Trace {
            trace_id: "t".into(),
            program_name: "p".into(),
            status: Status::Failed,
            steps: vec![
                record("a", Some("h0"), None),
                record("b1", None, Some("b")),
                record("b", Some("h1"), None),
            ],
            final_output: json!({"x": [1, "y"]}),
            error: Some("e".into()),
            failure: None,
            started_at: "s".into(),
            finished_at: Some("f".into()),
            duration_ms: 1.25,
            state_snapshots: snapshots,
            snapshot_root: "r".into(),
            suspended_step_id: Some("b".into()),
            step_metrics: Metrics {
                llm_calls: 1,
                ..Metrics::default()
            },
            total_tokens: 7,
            cost_usd: Some(0.5),
        }
    }

    /// The skeleton is the trace's JSON, every field in its order, with `steps` empty and
    /// `state_snapshots` null when the steps' state hashes give them back.
    #[test]
    fn a_skeleton_is_the_trace_without_its_steps_and_the_snapshots_they_give() {
        let derivable = trace(vec![(0, "h0".into()), (1, "h1".into())]);
        let other = trace(vec![(0, "h0".into()), (2, "h1".into())]);
        for (t, elided) in [(&derivable, true), (&other, false)] {
            let mut whole = serde_json::to_value(t).unwrap();
            whole["steps"] = json!([]);
            if elided {
                whole["state_snapshots"] = Value::Null;
            }
            let skeleton: Value = serde_json::from_str(&Skeleton::of(t).unwrap()).unwrap();
            let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
            assert_eq!(keys(&skeleton), keys(&whole));
            assert_eq!(skeleton, whole);
        }
        let hashes = derivable.steps.iter().map(|r| r.state_hash.as_deref());
        assert_eq!(
            snapshots_of(hashes).collect::<Vec<_>>(),
            vec![(0, "h0"), (1, "h1")]
        );
    }
}
