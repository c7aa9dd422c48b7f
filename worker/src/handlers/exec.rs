//! `exec`: runs a command for an action.
//!
//! The command gets the action JSON on stdin and `STEVEDORE_ACTION_UUID`,
//! `STEVEDORE_OBJECT_URI`, `STEVEDORE_OBJECT_UUID`, `STEVEDORE_OBJECT_TYPE`,
//! `STEVEDORE_VERB`, `STEVEDORE_NAMESPACE` in its environment. Every line it
//! writes to stdout or stderr becomes a log line. Exit 0 → Success, exit 75
//! (EX_TEMPFAIL) → a temporary failure, anything else → Failed. It runs in its
//! own process group; on cancel the whole group gets SIGTERM, then SIGKILL
//! after the grace period, so no grandchild outlives the action.

use super::{Handler, HandlerContext, Outcome};
use async_trait::async_trait;
use std::collections::HashMap;
use std::process::Stdio;
use stevedore_shared::logline::{NewLogLine, StreamType};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

/// Exit code of a temporary failure (sysexits.h EX_TEMPFAIL).
pub const EX_TEMPFAIL: i32 = 75;

/// Longest log line kept; the rest of a longer line is cut (and said so), so a
/// command printing without newlines cannot exhaust memory.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Runs `argv` with `env` added to the environment.
pub struct ExecHandler {
    argv: Vec<String>,
    env: HashMap<String, String>,
}

impl ExecHandler {
    /// A handler for `argv`.
    pub fn new(argv: Vec<String>, env: HashMap<String, String>) -> Self {
        ExecHandler { argv, env }
    }
}

#[async_trait]
impl Handler for ExecHandler {
    async fn run(&self, ctx: &HandlerContext) -> Outcome {
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
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return Outcome::Failed(format!("cannot start {:?}: {e}", self.argv[0])),
        };
        let pid = child.id();
        if let Some(mut stdin) = child.stdin.take() {
            let input = serde_json::to_vec(&a.to_wire()).unwrap_or_default();
            // A command that ignores stdin closes it early; that is fine.
            tokio::spawn(async move {
                let _ = stdin.write_all(&input).await;
            });
        }
        let readers = [
            child
                .stdout
                .take()
                .map(|o| tokio::spawn(pump(BufReader::new(o), StreamType::Stdout, ctx.log_sink()))),
            child
                .stderr
                .take()
                .map(|e| tokio::spawn(pump(BufReader::new(e), StreamType::Stderr, ctx.log_sink()))),
        ];
        let status = tokio::select! {
            s = child.wait() => Some(s),
            _ = ctx.cancel.cancelled() => None,
        };
        let outcome = match status {
            Some(Ok(st)) => match st.code() {
                Some(0) => Outcome::Success,
                Some(EX_TEMPFAIL) => Outcome::Temporary(format!(
                    "{} exited with code 75 (temporary failure)",
                    self.argv[0]
                )),
                Some(code) => Outcome::Failed(format!("{} exited with code {code}", self.argv[0])),
                None => Outcome::Failed(format!("{} was killed by a signal", self.argv[0])),
            },
            Some(Err(e)) => Outcome::Failed(format!("waiting for {}: {e}", self.argv[0])),
            None => {
                terminate_group(pid, &mut child, ctx).await;
                Outcome::Canceled
            }
        };
        // Output written before exit is still in the pipes: read it all.
        for r in readers.into_iter().flatten() {
            let _ = r.await;
        }
        outcome
    }
}

/// SIGTERM to the process group, then SIGKILL after the grace period.
async fn terminate_group(pid: Option<u32>, child: &mut tokio::process::Child, ctx: &HandlerContext) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    let Some(pid) = pid else { return };
    let group = Pid::from_raw(pid as i32);
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

/// Forwards lines from a child's output to the log sink, cutting lines longer
/// than [`MAX_LINE_BYTES`].
async fn pump<R: AsyncBufRead + Unpin>(mut r: R, stream: StreamType, sink: mpsc::Sender<NewLogLine>) {
    while let Some(line) = read_capped_line(&mut r, MAX_LINE_BYTES).await {
        if sink.send(NewLogLine::now(stream, line)).await.is_err() {
            return;
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
