//! `exec`: runs a command for an action.
//!
//! The command gets the action JSON on stdin and `STEVEDORE_ACTION_UUID`,
//! `STEVEDORE_OBJECT_URI`, `STEVEDORE_OBJECT_UUID`, `STEVEDORE_OBJECT_TYPE`,
//! `STEVEDORE_VERB`, `STEVEDORE_NAMESPACE` in its environment. Every line it
//! writes to stdout or stderr becomes a log line, except the reserved
//! progress lines on stdout (`::progress 42 Copying layers`, see
//! [`super::progress_line`]), which report progress instead. Exit 0 →
//! Success, exit 75 (EX_TEMPFAIL) → a temporary failure, anything else →
//! Failed.
//!
//! The command's life, in stages, each bounded and each watching the
//! action's token (cancel, timeout, lost lease, shutdown):
//!
//! 1. **Running**: until the main process exits. On cancel the command's
//!    process group gets SIGTERM, then SIGKILL after `kill_grace`: the
//!    outcome is Canceled.
//! 2. **Left-overs**: the main process exited, and its exit status is the
//!    outcome from now on. Whatever it left running in its process group
//!    (`cmd &`, `nohup cmd &`) gets SIGTERM, then SIGKILL after
//!    `kill_grace` — unless the operation says `detach = true`, when they
//!    are left running.
//! 3. **Draining**: output already written is read for at most
//!    `[worker] output_drain`. A process that left the group (`setsid`) or
//!    a detached one may keep the pipes open for ever; past the drain it
//!    no longer holds the action open: its further output is read and
//!    discarded, so it never dies of a broken pipe either.

use super::{progress_line, Handler, HandlerContext, Outcome};
use crate::progress::ProgressSink;
use async_trait::async_trait;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;
use stevedore_core::logline::{NewLogLine, StreamType};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Exit code of a temporary failure (sysexits.h EX_TEMPFAIL).
pub const EX_TEMPFAIL: i32 = 75;

/// Longest log line kept; the rest of a longer line is cut (and said so), so a
/// command printing without newlines cannot exhaust memory.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// How often the process group is checked for members while it winds down.
const GROUP_POLL: Duration = Duration::from_millis(50);

/// Runs `argv` with `env` added to the environment.
pub struct ExecHandler {
    argv: Vec<String>,
    env: HashMap<String, String>,
    detach: bool,
}

impl ExecHandler {
    /// A handler for `argv`. With `detach`, processes the command leaves
    /// running in its process group after it exits are not terminated.
    pub fn new(argv: Vec<String>, env: HashMap<String, String>, detach: bool) -> Self {
        ExecHandler { argv, env, detach }
    }

    fn command(&self, ctx: &HandlerContext) -> Command {
        let a = &ctx.action;
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..])
            .envs(&self.env)
            .env("STEVEDORE_ACTION_UUID", a.uuid.to_string())
            .env("STEVEDORE_OBJECT_URI", &a.object)
            .env("STEVEDORE_OBJECT_UUID", a.object_uuid.to_string())
            .env("STEVEDORE_OBJECT_TYPE", &a.object_type)
            .env("STEVEDORE_VERB", &a.verb)
            .env("STEVEDORE_NAMESPACE", &a.namespace)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        cmd
    }

    fn outcome_of(&self, status: std::io::Result<std::process::ExitStatus>) -> Outcome {
        let name = &self.argv[0];
        match status {
            Ok(st) => match st.code() {
                Some(0) => Outcome::Success,
                Some(EX_TEMPFAIL) => {
                    Outcome::Temporary(format!("{name} exited with code 75 (temporary failure)"))
                }
                Some(code) => Outcome::Failed(format!("{name} exited with code {code}")),
                None => Outcome::Failed(format!("{name} was killed by a signal")),
            },
            Err(e) => Outcome::Failed(format!("waiting for {name}: {e}")),
        }
    }
}

#[async_trait]
impl Handler for ExecHandler {
    async fn run(&self, ctx: &HandlerContext) -> Outcome {
        let mut child = match self.command(ctx).spawn() {
            Ok(c) => c,
            Err(e) => return Outcome::Failed(format!("cannot start {:?}: {e}", self.argv[0])),
        };
        // The group id is the leader's pid (`process_group(0)`).
        let group = child.id().map(|pid| Pid::from_raw(pid as i32));
        if let Some(mut stdin) = child.stdin.take() {
            let input = serde_json::to_vec(&ctx.action.to_wire()).unwrap_or_default();
            // A command that ignores stdin closes it early; that is fine.
            tokio::spawn(async move {
                let _ = stdin.write_all(&input).await;
            });
        }
        let detach_output = CancellationToken::new();
        let readers: Vec<JoinHandle<()>> = [
            child.stdout.take().map(|o| {
                let r = BufReader::new(o);
                let progress = Some(ctx.progress_sink());
                tokio::spawn(pump(
                    r,
                    StreamType::Stdout,
                    ctx.log_sink(),
                    progress,
                    detach_output.clone(),
                ))
            }),
            child.stderr.take().map(|e| {
                let r = BufReader::new(e);
                tokio::spawn(pump(
                    r,
                    StreamType::Stderr,
                    ctx.log_sink(),
                    None,
                    detach_output.clone(),
                ))
            }),
        ]
        .into_iter()
        .flatten()
        .collect();

        // 1. Running.
        let outcome = tokio::select! {
            status = child.wait() => self.outcome_of(status),
            _ = ctx.cancel.cancelled() => {
                terminate_group(group, &mut child, ctx).await;
                Outcome::Canceled
            }
        };
        // 2. Left-overs in the process group.
        if let Some(group) = group {
            if self.detach {
                if group_alive(group) {
                    ctx.log(
                        StreamType::System,
                        "the command exited; processes it left running are detached (detach = true)",
                    )
                    .await;
                }
            } else {
                end_leftovers(group, ctx).await;
            }
        }
        // 3. Draining.
        drain(readers, detach_output, ctx).await;
        outcome
    }
}

/// Whether a live process is left in `group`. Signal 0 answers for any
/// member, zombies included (an orphan waits for its new parent to reap
/// it), so on Linux the members found are checked in `/proc`: a group of
/// zombies only is over.
fn group_alive(group: Pid) -> bool {
    if killpg(group, None).is_err() {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries.flatten().any(|e| {
        let is_pid = e
            .file_name()
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        is_pid
            && std::fs::read_to_string(e.path().join("stat"))
                .ok()
                .and_then(|stat| live_member_of(&stat))
                == Some(group.as_raw())
    })
}

/// The process group of a `/proc/<pid>/stat` line's process, unless it is
/// a zombie. The command name may hold spaces and parentheses: the fields
/// after it follow the last `)`.
fn live_member_of(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    (state != "Z" && state != "X").then_some(pgrp)
}

/// Waits up to `limit` for `group` to empty; false if it did not. Returns
/// early, with the group's state, when `cancel` fires.
async fn group_ended_within(group: Pid, limit: Duration, cancel: &CancellationToken) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while group_alive(group) {
        if tokio::time::Instant::now() >= deadline || cancel.is_cancelled() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(GROUP_POLL) => {}
            _ = cancel.cancelled() => {}
        }
    }
    true
}

/// The main process exited: SIGTERM to what it left in its process group,
/// SIGKILL to whatever is still there after the grace period (at once if
/// the action is cancelled meanwhile).
async fn end_leftovers(group: Pid, ctx: &HandlerContext) {
    if !group_alive(group) {
        return;
    }
    ctx.log(
        StreamType::System,
        "the command exited and left processes in its process group: sending them SIGTERM",
    )
    .await;
    let _ = killpg(group, Signal::SIGTERM);
    if !group_ended_within(group, ctx.kill_grace, &ctx.cancel).await {
        if group_alive(group) {
            ctx.log(
                StreamType::System,
                "left-over processes still running: sending SIGKILL",
            )
            .await;
        }
        let _ = killpg(group, Signal::SIGKILL);
    }
}

/// Cancel while the command runs: SIGTERM to the process group, then
/// SIGKILL after the grace period.
async fn terminate_group(group: Option<Pid>, child: &mut tokio::process::Child, ctx: &HandlerContext) {
    let Some(group) = group else { return };
    ctx.log(
        StreamType::System,
        "sending SIGTERM to the command's process group",
    )
    .await;
    let _ = killpg(group, Signal::SIGTERM);
    if tokio::time::timeout(ctx.kill_grace, child.wait()).await.is_err() {
        ctx.log(
            StreamType::System,
            format!("still running after {:?}: sending SIGKILL", ctx.kill_grace),
        )
        .await;
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
    } else {
        // The leader exited; make sure stragglers in its group go too.
        let _ = killpg(group, Signal::SIGKILL);
    }
}

/// Reads what is left in the pipes for at most `ctx.output_drain`; a cancel
/// ends the wait at once. Readers still open after that (a process outside
/// the group holds the pipe) keep reading but discard, and release the log
/// sink, so the action can end.
async fn drain(readers: Vec<JoinHandle<()>>, detach_output: CancellationToken, ctx: &HandlerContext) {
    let all = futures::future::join_all(readers);
    tokio::pin!(all);
    let finished = tokio::select! {
        _ = &mut all => true,
        _ = tokio::time::sleep(ctx.output_drain) => false,
        _ = ctx.cancel.cancelled() => false,
    };
    if !finished {
        detach_output.cancel();
        ctx.log(
            StreamType::System,
            format!(
                "output still open {:?} after the command exited (held by a process outside its process group): no longer collected",
                ctx.output_drain
            ),
        )
        .await;
    }
}

/// Forwards lines from a child's output to the log sink, cutting lines longer
/// than [`MAX_LINE_BYTES`]; with a `progress` sink (stdout), reserved
/// progress lines go there instead. Once `detach` fires, drops the sinks and
/// reads the rest of the output to its end, discarding it.
async fn pump<R: AsyncBufRead + Unpin>(
    mut r: R,
    stream: StreamType,
    sink: mpsc::Sender<NewLogLine>,
    progress: Option<ProgressSink>,
    detach: CancellationToken,
) {
    let mut sink = Some(sink);
    loop {
        let line = match &sink {
            Some(_) => tokio::select! {
                biased;
                _ = detach.cancelled() => { sink = None; continue }
                l = read_capped_line(&mut r, MAX_LINE_BYTES) => l,
            },
            None => read_capped_line(&mut r, MAX_LINE_BYTES).await,
        };
        let Some(line) = line else { return };
        if let (Some(p), Some(_)) = (&progress, &sink) {
            if let Some(report) = progress_line::parse(&line) {
                p.report(report);
                continue;
            }
        }
        if let Some(s) = &sink {
            let sent = tokio::select! {
                biased;
                _ = detach.cancelled() => false,
                r = s.send(NewLogLine::now(stream, line)) => r.is_ok(),
            };
            if !sent {
                sink = None;
            }
        }
    }
}

/// Reads one line (without its `\n`/`\r\n`), keeping at most `cap` bytes of
/// it; `None` at end of input. Invalid UTF-8 is replaced, never an error.
pub async fn read_capped_line<R: AsyncBufRead + Unpin>(r: &mut R, cap: usize) -> Option<String> {
    let mut line = Vec::new();
    let mut cut = false;
    let mut saw_any = false;
    while let Ok(buf) = r.fill_buf().await {
        if buf.is_empty() {
            break;
        }
        saw_any = true;
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        let room = cap.saturating_sub(line.len());
        if chunk.len() > room {
            cut = true;
        }
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = done.unwrap_or(buf.len());
        r.consume(used);
        if done.is_some() {
            break;
        }
    }
    if !saw_any {
        return None;
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    let mut s = String::from_utf8_lossy(&line).into_owned();
    if cut {
        s.push_str(" … [line truncated]");
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_lines_give_the_group_of_live_processes() {
        assert_eq!(live_member_of("42 (sleep) S 1 40 40 0 -1"), Some(40));
        assert_eq!(live_member_of("42 (a) b) (c) R 1 7 7 0"), Some(7));
        assert_eq!(live_member_of("42 (sleep) Z 1 40 40 0"), None);
        assert_eq!(live_member_of("garbage"), None);
    }

    #[tokio::test]
    async fn lines_are_split_and_capped() {
        let input = b"one\r\ntwo\n\nxxxxxxxxxx\nlast".to_vec();
        let mut r = BufReader::with_capacity(3, &input[..]);
        let mut got = vec![];
        while let Some(l) = read_capped_line(&mut r, 4).await {
            got.push(l);
        }
        assert_eq!(got, ["one", "two", "", "xxxx … [line truncated]", "last"]);
    }
}
