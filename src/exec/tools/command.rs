//! `kind = "command"` tools: one process per call, started from an argv (never a shell), the
//! arguments as JSON on stdin (then closed), one JSON value expected on stdout.
//!
//! stdin, stdout and stderr are served concurrently, so a process that writes before it reads
//! cannot deadlock. stdout is read up to `max_output_bytes` (one byte more fails the call);
//! stderr is kept up to [`STDERR_KEEP`] bytes for the error message and the rest drained. On
//! the timeout or the output cap, the process and (on Unix) its whole process group — it is
//! started as the leader of a new group, so a shell script's children go too — are killed,
//! and the process is always reaped. A call dropped midway (its step cancelled) kills them
//! too (`kill_on_drop`, and the group from a drop guard).

use super::config::CommandConfig;
use crate::exec::adapter::{CallError, excerpt};
use serde_json::Value;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// How much of stderr is kept for an error message.
const STDERR_KEEP: usize = 64 * 1024;
/// How many bytes of stderr or stdout an error message quotes.
const EXCERPT: usize = 500;

#[derive(Debug)]
pub(super) struct CommandTool {
    config: CommandConfig,
    timeout: Duration,
    max_output: usize,
}

/// Why serving the pipes stopped early.
enum Stop {
    TooLarge,
    Io(std::io::Error),
}

impl CommandTool {
    pub(super) fn new(config: CommandConfig, timeout: Duration, max_output: usize) -> Self {
        Self {
            config,
            timeout,
            max_output,
        }
    }

    pub(super) async fn call(&self, args: &Value) -> Result<Value, CallError> {
        let input = serde_json::to_vec(args)
            .map_err(|e| CallError::Failed(format!("cannot encode the arguments: {e}")))?;
        let c = &self.config;
        let mut cmd = group_command(c);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            CallError::Failed(format!("cannot start `{}`: {e}", c.program.display()))
        })?;
        let mut group = GroupGuard::new(child.id());
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let cap = self.max_output;

        let work = async {
            let write = async move {
                if let Some(mut w) = stdin {
                    // A process that does not read its stdin (or exits first) is fine.
                    let _ = w.write_all(&input).await;
                    let _ = w.shutdown().await;
                }
                Ok::<(), Stop>(())
            };
            let (_, out, err) = tokio::try_join!(
                write,
                read_capped(stdout, cap),
                read_head(stderr, STDERR_KEEP)
            )?;
            let status = child.wait().await.map_err(Stop::Io)?;
            Ok::<_, Stop>((status, out, err))
        };
        let outcome = tokio::time::timeout(self.timeout, work).await;
        match outcome {
            Ok(Ok((status, out, err))) => {
                group.disarm();
                finish(status, &out, &err)
            }
            Ok(Err(stop)) => {
                kill(&mut child, &mut group).await;
                Err(match stop {
                    Stop::TooLarge => CallError::Failed(format!("output exceeds {cap} bytes")),
                    Stop::Io(e) => CallError::Failed(format!("cannot read the output: {e}")),
                })
            }
            Err(_) => {
                kill(&mut child, &mut group).await;
                Err(CallError::Timeout(self.timeout))
            }
        }
    }
}

/// The result of a process that exited.
fn finish(status: ExitStatus, out: &[u8], err: &[u8]) -> Result<Value, CallError> {
    if !status.success() {
        let stderr = String::from_utf8_lossy(err);
        let what = match status.code() {
            Some(n) => format!("exited with status {n}"),
            None => format!("was stopped ({status})"),
        };
        return Err(CallError::Failed(if stderr.trim().is_empty() {
            format!("{what} (no stderr)")
        } else {
            format!("{what}: {}", excerpt(&stderr, EXCERPT))
        }));
    }
    serde_json::from_slice(out).map_err(|e| {
        let text = String::from_utf8_lossy(out);
        if text.trim().is_empty() {
            CallError::Failed("printed invalid JSON: nothing on stdout".to_owned())
        } else {
            CallError::Failed(format!(
                "printed invalid JSON: {} ({e})",
                excerpt(&text, EXCERPT)
            ))
        }
    })
}

/// Read to the end, failing past `cap` bytes.
async fn read_capped(r: Option<impl AsyncRead + Unpin>, cap: usize) -> Result<Vec<u8>, Stop> {
    let mut buf = Vec::new();
    if let Some(r) = r {
        let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
        r.take(limit)
            .read_to_end(&mut buf)
            .await
            .map_err(Stop::Io)?;
        if buf.len() > cap {
            return Err(Stop::TooLarge);
        }
    }
    Ok(buf)
}

/// Keep the first `keep` bytes, drain the rest.
async fn read_head(r: Option<impl AsyncRead + Unpin>, keep: usize) -> Result<Vec<u8>, Stop> {
    let mut buf = Vec::new();
    if let Some(mut r) = r {
        let limit = u64::try_from(keep).unwrap_or(u64::MAX);
        (&mut r)
            .take(limit)
            .read_to_end(&mut buf)
            .await
            .map_err(Stop::Io)?;
        tokio::io::copy(&mut r, &mut tokio::io::sink())
            .await
            .map_err(Stop::Io)?;
    }
    Ok(buf)
}

/// Kill the process group, then the process, and reap it.
async fn kill(child: &mut Child, group: &mut GroupGuard) {
    group.kill().await;
    // SIGKILL and wait: the process is reaped even when it was already gone.
    let _ = child.kill().await;
}

/// The process group of a running child (its pid: the child leads a new group), killed when
/// the guard is dropped armed.
#[derive(Debug)]
pub(super) struct GroupGuard(Option<u32>);

impl GroupGuard {
    /// The guard of the group a child started with `process_group(0)` leads.
    pub(super) fn new(pid: Option<u32>) -> Self {
        Self(pid)
    }

    fn disarm(&mut self) {
        self.0 = None;
    }

    /// Kill the group now (before the leader is reaped, so its id cannot have been reused).
    async fn kill(&mut self) {
        #[cfg(unix)]
        if let Some(pid) = self.0.take()
            && let Ok(mut c) = group_kill_command(pid).spawn()
        {
            let _ = c.wait().await;
        }
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pid) = self.0.take() {
            // Dropped midway (the call was cancelled): the child itself is killed by
            // `kill_on_drop`; the group is killed by a `kill` that tokio reaps in the
            // background, or synchronously outside a runtime.
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = group_kill_command(pid).spawn();
            } else {
                let _ = std::process::Command::new("kill")
                    .args(["-s", "KILL", "--", &format!("-{pid}")])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// `kill -s KILL -- -PGID` (no `unsafe` for `killpg` in this crate).
#[cfg(unix)]
fn group_kill_command(pid: u32) -> Command {
    let mut c = Command::new("kill");
    c.args(["-s", "KILL", "--", &format!("-{pid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// The process of a command config: its argv, environment and directory, killed on drop and
/// leading its own process group (see [`GroupGuard`]).
pub(super) fn group_command(c: &CommandConfig) -> Command {
    let mut cmd = Command::new(&c.program);
    cmd.args(&c.args)
        .envs(&c.env)
        .current_dir(&c.cwd)
        .kill_on_drop(true);
    #[cfg(unix)]
    cmd.process_group(0);
    cmd
}
