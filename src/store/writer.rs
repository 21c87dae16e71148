//! The single writer: a dedicated thread owns the write connection and runs jobs in group
//! commits. It takes the first waiting job, opens a transaction, runs every job that is
//! already queued (up to [`MAX_BATCH`]), each inside its own savepoint so a failing job
//! leaves no partial writes and does not undo the others, commits once, and only then tells
//! each job's caller how it went. Under load many runs share one commit; a lone run still
//! commits each write as soon as it arrives.

use super::StoreError;
use rusqlite::Connection;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

/// Most jobs in one transaction.
const MAX_BATCH: usize = 512;

/// Called after the commit with its result.
pub(super) type Done = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

/// A unit of writes. It gets the connection inside an open transaction, or the error that
/// kept the transaction from opening.
pub(super) type Job = Box<dyn FnOnce(Result<&Connection, &StoreError>) -> Done + Send>;

#[derive(Debug)]
pub(super) struct Writer {
    tx: Mutex<Option<Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    pub fn start(conn: Connection) -> Result<Self, StoreError> {
        let (tx, rx) = channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("nanovm-store-writer".into())
            .spawn(move || run(conn, rx))
            .map_err(|e| StoreError::Thread(e.to_string()))?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queue a job; `Err(job)` gives it back when the writer has stopped.
    pub fn send(&self, job: Job) -> Result<(), Job> {
        let guard = match self.tx.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        match guard.as_ref() {
            Some(tx) => tx.send(job).map_err(|e| e.0),
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
    conn.execute_batch("SAVEPOINT job")?;
    match f(conn) {
        Ok(v) => {
            conn.execute_batch("RELEASE job")?;
            Ok(v)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
            Err(e)
        }
    }
}

fn run(conn: Connection, rx: Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut done: Vec<Done> = Vec::new();
        match conn.execute_batch("BEGIN IMMEDIATE") {
            Err(e) => {
                let e = StoreError::from(e);
                done.push(first(Err(&e)));
                for d in done {
                    d(Err(&e));
                }
                continue;
            }
            Ok(()) => {
                done.push(first(Ok(&conn)));
                while done.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(job) => done.push(job(Ok(&conn))),
                        Err(_) => break,
                    }
                }
            }
        }
        let committed = conn.execute_batch("COMMIT").map_err(StoreError::from);
        if committed.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for d in done {
            d(committed.as_ref().map(|_| ()));
        }
    }
}
