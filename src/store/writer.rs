//! The single writer: a dedicated thread owns the write connection and runs jobs in group
//! commits. Each job runs inside its own savepoint, so a failing job leaves no partial writes
//! and does not undo the others. A transaction is committed as soon as a job somebody waits
//! for (an urgent one: a run's start or end) has run, together with everything queued by
//! then; writes nobody waits for (step envelopes) are committed at the latest [`MAX_DELAY`]
//! after the transaction opened. Callers hear how their job went only after the commit.

use super::StoreError;
use rusqlite::Connection;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most jobs in one transaction.
const MAX_BATCH: usize = 512;

/// Longest a write nobody waits for (an envelope) stays uncommitted.
pub(super) const MAX_DELAY: Duration = Duration::from_millis(2);

/// Called after the commit with its result.
pub(super) type Done = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

/// A unit of writes. It gets the connection inside an open transaction, or the error that
/// kept the transaction from opening.
pub(super) type Job = Box<dyn FnOnce(Result<&Connection, &StoreError>) -> Done + Send>;

#[derive(Debug)]
pub(super) struct Writer {
    tx: Mutex<Option<Sender<(Job, bool)>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    pub fn start(conn: Connection) -> Result<Self, StoreError> {
        let (tx, rx) = channel::<(Job, bool)>();
        let thread = std::thread::Builder::new()
            .name("nanovm-store-writer".into())
            .spawn(move || run(&conn, rx))
            .map_err(|e| StoreError::Thread(e.to_string()))?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queue a job; `urgent` when a caller waits for its commit (the transaction commits
    /// right after it). `Err(job)` gives it back when the writer has stopped.
    pub fn send(&self, job: Job, urgent: bool) -> Result<(), Job> {
        let guard = match self.tx.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        match guard.as_ref() {
            Some(tx) => tx.send((job, urgent)).map_err(|e| e.0.0),
            None => Err(job),
        }
    }

    /// Stop taking jobs, finish the queued ones and wait for the thread.
    pub fn close(&self) {
        let tx = match self.tx.lock() {
            Ok(mut g) => g.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        drop(tx);
        let thread = match self.thread.lock() {
            Ok(mut g) => g.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.close();
    }
}

/// Run a job's writes inside a savepoint: all of them or none.
pub(super) fn atomically<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    match f(conn) {
        Ok(v) => {
            conn.prepare_cached("RELEASE job")?.execute([])?;
            Ok(v)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
            Err(e)
        }
    }
}

fn run(conn: &Connection, rx: Receiver<(Job, bool)>) {
    let mut done: Vec<Done> = Vec::new();
    // The open transaction's deadline: queued writes nobody waits for are committed by then.
    let mut deadline: Option<Instant> = None;
    loop {
        let next = match spin(&rx) {
            Some(j) => Ok(j),
            None => match deadline {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
            },
        };
        let (job, urgent) = match next {
            Ok(j) => j,
            Err(RecvTimeoutError::Timeout) => {
                commit(conn, &mut done);
                deadline = None;
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                if deadline.is_some() {
                    commit(conn, &mut done);
                }
                return;
            }
        };
        if deadline.is_none() {
            if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
                let e = StoreError::from(e);
                job(Err(&e))(Err(&e));
                continue;
            }
            deadline = Some(Instant::now() + MAX_DELAY);
        }
        done.push(job(Ok(conn)));
        if urgent || done.len() >= MAX_BATCH || deadline.is_some_and(|d| Instant::now() >= d) {
            // Whatever else is already queued shares the commit.
            while done.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok((job, _)) => done.push(job(Ok(conn))),
                    Err(_) => break,
                }
            }
            commit(conn, &mut done);
            deadline = None;
        }
    }
}

/// How long the writer polls for the next job before it sleeps: waking a sleeping thread
/// costs tens to hundreds of microseconds on a busy virtual machine, more than a commit.
pub(super) const SPIN: Duration = Duration::from_micros(100);

/// Poll for a job for at most [`SPIN`].
fn spin(rx: &Receiver<(Job, bool)>) -> Option<(Job, bool)> {
    let start = Instant::now();
    loop {
        match rx.try_recv() {
            Ok(j) => return Some(j),
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
            Err(std::sync::mpsc::TryRecvError::Empty) => {}
        }
        if start.elapsed() >= SPIN {
            return None;
        }
        std::thread::yield_now();
    }
}

/// Commit the open transaction and tell every job how it went.
fn commit(conn: &Connection, done: &mut Vec<Done>) {
    let committed = conn.execute_batch("COMMIT").map_err(StoreError::from);
    if committed.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    for d in done.drain(..) {
        d(committed.as_ref().map(|_| ()));
    }
}
