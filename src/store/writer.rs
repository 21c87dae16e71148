//! The single writer: a dedicated thread owns the write connection and runs jobs in group
//! commits. Each job runs inside its own savepoint, so a failing job leaves no partial writes
//! and does not undo the others. A transaction is committed as soon as a job somebody waits
//! for (an urgent one: a run's start or end) has run, together with everything queued by
//! then; writes nobody waits for (step envelopes) are committed at the latest [`MAX_DELAY`]
//! after the transaction opened. Callers hear how their job went only after the commit.
//!
//! WAL checkpoints (copying committed pages from the WAL into the database file, with its
//! fsyncs) run on a second thread with its own connection, so the writer keeps committing
//! while a checkpoint waits for the disk. SQLite's automatic checkpoint would run them on the
//! writer, inside its commits.

use super::StoreError;
use rusqlite::Connection;
use std::cell::Cell;
use std::sync::Mutex;
use std::sync::mpsc::{
    Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError, channel, sync_channel,
};
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

/// When the WAL is checkpointed, in pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WalLimits {
    /// A checkpoint starts on the checkpointer's thread.
    checkpoint: i32,
    /// The writer checkpoints itself: the checkpointer has not caught up (a checkpoint that
    /// runs while commits append to the WAL may never reach its end, and SQLite starts the
    /// WAL over only once all of it is in the database).
    limit: i32,
}

impl WalLimits {
    /// The WAL's size at which a checkpoint starts: about 16 MB, four times SQLite's default
    /// for its automatic checkpoint (1,000 pages of 4 KiB). A checkpoint copies each page
    /// once however often it was committed since the last one, and pays its two fsyncs once:
    /// in load runs of persisted runs, 16 MB took about a fifth off the checkpointer's CPU
    /// and 5% off the store's, against 4 MB (32 MB did no better).
    const CHECKPOINT_BYTES: i64 = 4000 * 4096;
    /// The WAL's size at which the writer checkpoints itself: about 40 MB.
    const LIMIT_BYTES: i64 = 10_000 * 4096;

    /// The limits for a file of `page_size`-byte pages: the same sizes in bytes whatever the
    /// page size (a file keeps the page size it was made with).
    fn for_page_size(page_size: i64) -> Self {
        let pages =
            |bytes: i64| i32::try_from(bytes / page_size.clamp(512, 65_536)).unwrap_or(i32::MAX);
        Self {
            checkpoint: pages(Self::CHECKPOINT_BYTES),
            limit: pages(Self::LIMIT_BYTES),
        }
    }
}

#[derive(Debug)]
pub(super) struct Writer {
    tx: Mutex<Option<Sender<(Job, bool)>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    /// Start the writer on `conn` and its checkpointer on `checkpoints` (a second read-write
    /// connection to the same file).
    pub fn start(conn: Connection, checkpoints: Connection) -> Result<Self, StoreError> {
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        Self::start_with(conn, checkpoints, WalLimits::for_page_size(page_size))
    }

    fn start_with(
        conn: Connection,
        checkpoints: Connection,
        limits: WalLimits,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = channel::<(Job, bool)>();
        let checkpointer = Checkpointer::start(checkpoints, limits)?;
        conn.wal_hook(Some(count_wal_pages));
        let thread = std::thread::Builder::new()
            .name("nanovm-store-writer".into())
            .spawn(move || {
                run(&conn, rx, &checkpointer);
                // Before the writer's connection closes: the last connection to close
                // checkpoints the whole WAL and removes it.
                checkpointer.stop();
            })
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

fn run(conn: &Connection, rx: Receiver<(Job, bool)>, checkpointer: &Checkpointer) {
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
                commit(conn, &mut done, checkpointer);
                deadline = None;
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                if deadline.is_some() {
                    commit(conn, &mut done, checkpointer);
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
            commit(conn, &mut done, checkpointer);
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
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) => {}
        }
        if start.elapsed() >= SPIN {
            return None;
        }
        std::thread::yield_now();
    }
}

/// Commit the open transaction, tell every job how it went, and have the WAL checkpointed
/// when it has grown.
fn commit(conn: &Connection, done: &mut Vec<Done>, checkpointer: &Checkpointer) {
    let committed = conn.execute_batch("COMMIT").map_err(StoreError::from);
    if committed.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    for d in done.drain(..) {
        d(committed.as_ref().map(|_| ()));
    }
    let pages = WAL_PAGES.get();
    if pages >= checkpointer.limits.limit {
        // Finish the checkpoint here, with no commit in between: most pages are in the
        // database already. Busy (the checkpointer is at it) is tried again next commit.
        let _ = checkpoint(conn);
    } else if pages >= checkpointer.limits.checkpoint {
        checkpointer.wake();
    }
}

thread_local! {
    /// Pages in the WAL after the writer thread's last commit.
    static WAL_PAGES: Cell<i32> = const { Cell::new(0) };
}

/// SQLite's WAL hook: it runs on the committing thread with the WAL's size in pages. Having
/// a hook also turns SQLite's automatic checkpoints off.
fn count_wal_pages(_: &rusqlite::hooks::Wal, pages: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_PAGES.set(pages);
    Ok(())
}

/// A passive checkpoint: it copies what it can without waiting for anybody. Gives
/// (busy, pages in the WAL, pages copied); `busy` is 1 when another checkpoint ran.
fn checkpoint(conn: &Connection) -> rusqlite::Result<(i32, i32, i32)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
}

/// The thread that checkpoints the WAL when the writer says it has grown.
struct Checkpointer {
    wake: SyncSender<()>,
    thread: JoinHandle<()>,
    limits: WalLimits,
}

impl Checkpointer {
    fn start(conn: Connection, limits: WalLimits) -> Result<Self, StoreError> {
        // One pending wake-up is enough: a checkpoint copies everything committed by then.
        let (wake, rx) = sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("nanovm-store-checkpoint".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    if let Err(e) = checkpoint(&conn) {
                        // Nothing is lost: the pages stay in the WAL for the next checkpoint.
                        tracing::warn!("WAL checkpoint failed: {e}");
                    }
                }
            })
            .map_err(|e| StoreError::Thread(e.to_string()))?;
        Ok(Self {
            wake,
            thread,
            limits,
        })
    }

    fn wake(&self) {
        // Full: a wake-up is already pending.
        let _ = self.wake.try_send(());
    }

    /// Finish the checkpoint under way, close the connection and end the thread.
    fn stop(self) {
        drop(self.wake);
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::path::{Path, PathBuf};

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Self {
            let d =
                std::env::temp_dir().join(format!("nanovm-writer-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Self(d)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn wal_db(path: &Path) -> Connection {
        let c = Connection::open(path).unwrap();
        c.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .unwrap();
        c.execute_batch("CREATE TABLE IF NOT EXISTS t (b BLOB NOT NULL)")
            .unwrap();
        c
    }

    /// Insert `rows` rows of about a page each, committing every 20, and wait for the last.
    fn write_pages(w: &Writer, rows: usize) {
        let (tx, rx) = channel();
        for i in 0..rows {
            let tx = tx.clone();
            let job: Job = Box::new(move |conn| {
                let res = conn.map_err(Clone::clone).and_then(|c| {
                    c.execute("INSERT INTO t (b) VALUES (zeroblob(3900))", [])
                        .map(drop)
                        .map_err(StoreError::from)
                });
                Box::new(move |commit| {
                    let _ = tx.send(res.is_ok() && commit.is_ok());
                })
            });
            assert!(w.send(job, i % 20 == 19).is_ok());
        }
        for _ in 0..rows {
            assert!(rx.recv().unwrap());
        }
    }

    fn size(path: &Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }

    const PAGE: u64 = 4096;

    #[test]
    fn the_wal_limits_are_the_same_bytes_whatever_the_page_size() {
        let four = WalLimits::for_page_size(4096);
        assert_eq!(
            four,
            WalLimits {
                checkpoint: 4000,
                limit: 10_000
            }
        );
        let eight = WalLimits::for_page_size(8192);
        assert_eq!(
            eight,
            WalLimits {
                checkpoint: 2000,
                limit: 5_000
            }
        );
        // A page size SQLite would not report still gives usable limits.
        assert!(WalLimits::for_page_size(0).checkpoint > 0);
    }

    #[test]
    fn the_checkpointer_copies_the_wal_into_the_file_while_the_writer_runs() {
        let dir = Dir::new("background");
        let path = dir.0.join("db");
        let limits = WalLimits {
            checkpoint: 50,
            limit: 100_000,
        };
        let w = Writer::start_with(wal_db(&path), wal_db(&path), limits).unwrap();
        write_pages(&w, 400);
        // The checkpoint runs on its own thread: give it time.
        let start = Instant::now();
        while size(&path) < 300 * PAGE && start.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(size(&path) >= 300 * PAGE, "{} bytes", size(&path));
        w.close();
        assert!(!dir.0.join("db-wal").exists());
    }

    #[test]
    fn the_writer_bounds_the_wal_when_the_checkpointer_does_not_keep_up() {
        let dir = Dir::new("limit");
        let path = dir.0.join("db");
        let limits = WalLimits {
            checkpoint: 50,
            limit: 200,
        };
        // A checkpointer on another file: it never checkpoints this one.
        let w = Writer::start_with(wal_db(&path), wal_db(&dir.0.join("other")), limits).unwrap();
        write_pages(&w, 2000);
        // The WAL file keeps its largest size; a frame is a page and a 24-byte header. It can
        // pass the limit by one commit (here at most `MAX_BATCH` rows of a page); without the
        // limit it would hold all 2,000 pages.
        let wal = size(&dir.0.join("db-wal"));
        let most = 200 + MAX_BATCH as u64 + 20;
        assert!(wal <= most * (PAGE + 24), "{wal} bytes");
        assert!(size(&path) >= 1500 * PAGE, "{} bytes", size(&path));
        w.close();
    }
}
