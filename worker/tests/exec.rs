//! The `exec` handler against real commands that fork, hang, escape their
//! process group and flood their output: every stage is bounded, the outcome
//! is the main process's exit status, and the cancel token is obeyed until
//! the handler returns.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::Duration;
use stevedore_core::action::Action;
use stevedore_core::config::{FileConfig, Operation};
use stevedore_core::logline::{NewLogLine, StreamType};
use stevedore_core::store::DynStore;
use stevedore_worker::handlers::{self, HandlerContext, Outcome};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Upper bound for anything the tests below expect to end "soon": far
/// below the 600 s the commands would otherwise run.
const SOON: Duration = Duration::from_secs(20);

async fn action() -> Action {
    let store: DynStore = stevedore_store::connect("sqlite::memory:").await.unwrap();
    store.migrate().await.unwrap();
    let new = stevedore_core::testing::new_action(uuid::Uuid::new_v4(), "start");
    store.submit_action(new).await.unwrap().action
}

fn operation(exec: &str, detach: bool) -> Operation {
    let text = format!(
        "[[operation]]\nobject = 'service'\nverb = 'start'\nexec = ['sh', '-c', {exec:?}]\ndetach = {detach}\n"
    );
    FileConfig::parse(&text).unwrap().operations.remove(0)
}

struct Run {
    outcome: Outcome,
    lines: Vec<NewLogLine>,
    took: Duration,
}

impl Run {
    fn stdout(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|l| l.stream == StreamType::Stdout)
            .map(|l| l.log.as_str())
            .collect()
    }
    fn system(&self) -> String {
        self.lines
            .iter()
            .filter(|l| l.stream == StreamType::System)
            .map(|l| l.log.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
    /// The pid a command printed as `pid <n>`.
    fn pid(&self) -> Pid {
        let line = self
            .stdout()
            .into_iter()
            .find_map(|l| l.strip_prefix("pid "))
            .unwrap_or_else(|| panic!("no pid line in {:?}", self.lines))
            .trim()
            .to_string();
        Pid::from_raw(line.parse().unwrap())
    }
}

/// Runs `exec` with a kill grace of 1 s and an output drain of `drain`;
/// `cancel_after` cancels the token that long after the start.
async fn run(exec: &str, detach: bool, drain: Duration, cancel_after: Option<Duration>) -> Run {
    let op = operation(exec, detach);
    let handler = handlers::for_operation(&op);
    let (tx, mut rx) = mpsc::channel(1024);
    let cancel = CancellationToken::new();
    let ctx = HandlerContext::new(
        action().await,
        op,
        cancel.clone(),
        Duration::from_secs(1),
        drain,
        tx,
    );
    if let Some(after) = cancel_after {
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            cancel.cancel();
        });
    }
    let collect = tokio::spawn(async move {
        let mut lines = vec![];
        while let Some(l) = rx.recv().await {
            lines.push(l);
        }
        lines
    });
    let started = Instant::now();
    let outcome = tokio::time::timeout(SOON, handler.run(&ctx))
        .await
        .expect("the handler did not return: an open stage is unbounded");
    let took = started.elapsed();
    drop(ctx);
    let lines = tokio::time::timeout(SOON, collect)
        .await
        .expect("the handler kept its log sink after returning")
        .unwrap();
    Run { outcome, lines, took }
}

fn alive(pid: Pid) -> bool {
    // A zombie waiting for its parent to reap it counts as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.contains(") Z "),
        Err(_) => false,
    }
}

async fn wait_gone(pid: Pid) -> bool {
    let deadline = Instant::now() + SOON;
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// Kills a process a test left running on purpose.
fn cleanup(pid: Pid) {
    let _ = kill(pid, Signal::SIGKILL);
}

#[tokio::test]
async fn a_command_that_backgrounds_a_child_ends_with_its_exit_status_and_the_child_is_stopped() {
    let r = run(
        "sleep 600 & echo \"pid $!\"; echo started",
        false,
        Duration::from_secs(1),
        None,
    )
    .await;
    assert_eq!(r.outcome, Outcome::Success, "{:?}", r.lines);
    assert!(r.stdout().contains(&"started"), "{:?}", r.lines);
    let child = r.pid();
    assert!(
        wait_gone(child).await,
        "the backgrounded child outlived the action"
    );
    assert!(r.system().contains("SIGTERM"), "{}", r.system());
}

#[tokio::test]
async fn the_exit_status_is_the_outcome_even_with_children_left_behind() {
    let r = run("sleep 600 & exit 3", false, Duration::from_secs(1), None).await;
    assert_eq!(r.outcome, Outcome::Failed("sh exited with code 3".into()));
}

#[tokio::test]
async fn a_left_over_child_that_ignores_sigterm_gets_sigkill_after_the_grace() {
    let r = run(
        "(trap '' TERM; echo \"pid $(exec sh -c 'echo $PPID')\"; while :; do sleep 1; done) & sleep 0.3; echo done",
        false,
        Duration::from_secs(1),
        None,
    )
    .await;
    assert_eq!(r.outcome, Outcome::Success, "{:?}", r.lines);
    assert!(r.system().contains("SIGKILL"), "{}", r.system());
    assert!(
        wait_gone(r.pid()).await,
        "the child that ignored SIGTERM survived"
    );
}

#[tokio::test]
async fn a_child_that_escaped_with_setsid_does_not_hold_the_action_open() {
    let r = run(
        "setsid sh -c 'echo \"pid $$\"; exec sleep 600' & sleep 0.3; echo started",
        false,
        Duration::from_millis(500),
        None,
    )
    .await;
    assert_eq!(r.outcome, Outcome::Success, "{:?}", r.lines);
    assert!(r.system().contains("no longer collected"), "{}", r.system());
    let escaped = r.pid();
    // Documented: it may outlive the action (it left the process group).
    assert!(alive(escaped), "the escaped child should be left alone");
    cleanup(escaped);
}

#[tokio::test]
async fn detach_leaves_the_commands_children_running() {
    let r = run(
        "sleep 600 & echo \"pid $!\"",
        true,
        Duration::from_millis(500),
        None,
    )
    .await;
    assert_eq!(r.outcome, Outcome::Success, "{:?}", r.lines);
    let child = r.pid();
    assert!(alive(child), "detach = true must leave the child running");
    assert!(r.system().contains("detached"), "{}", r.system());
    cleanup(child);
}

#[tokio::test]
async fn a_cancel_while_output_is_drained_ends_the_wait_at_once() {
    // The escaped child holds the pipes; the drain would wait 600 s.
    let r = run(
        "setsid sh -c 'echo \"pid $$\"; exec sleep 600' & sleep 0.3; exit 0",
        false,
        Duration::from_secs(600),
        Some(Duration::from_secs(2)),
    )
    .await;
    assert!(r.took < SOON);
    // The main process had exited: its status stands.
    assert_eq!(r.outcome, Outcome::Success, "{:?}", r.lines);
    cleanup(r.pid());
}

#[tokio::test]
async fn a_cancel_while_the_command_runs_stops_its_group() {
    let r = run(
        "sleep 600 & echo \"pid $!\"; sleep 600",
        false,
        Duration::from_secs(1),
        Some(Duration::from_millis(500)),
    )
    .await;
    assert_eq!(r.outcome, Outcome::Canceled);
    assert!(wait_gone(r.pid()).await);
}

/// Reserved `::progress` lines on stdout report progress and are not
/// logged; malformed ones, and any on stderr, are logged as they are.
#[tokio::test]
async fn progress_lines_report_progress_instead_of_logging() {
    use stevedore_core::store::LeaseToken;
    use stevedore_worker::progress::ProgressBoard;
    let script = "echo before; echo '::progress 30 Copying layers'; \
                  echo '::progress 250 too far'; echo '::progress 64% Extracting'; \
                  echo '::progress 90 on stderr' >&2; echo after";
    let op = operation(script, false);
    let handler = handlers::for_operation(&op);
    let (tx, mut rx) = mpsc::channel(1024);
    let a = action().await;
    let uuid = a.uuid;
    let board = ProgressBoard::new();
    let sink = board.register(uuid, LeaseToken(uuid::Uuid::new_v4()));
    let ctx = HandlerContext::new(a, op, CancellationToken::new(), Duration::from_secs(1), SOON, tx)
        .with_progress(sink);
    let outcome = tokio::time::timeout(SOON, handler.run(&ctx)).await.unwrap();
    drop(ctx);
    let mut lines = vec![];
    while let Some(l) = rx.recv().await {
        lines.push((l.stream, l.log));
    }
    assert_eq!(outcome, Outcome::Success);
    let latest = board.latest(uuid).expect("a report");
    assert_eq!((latest.percent, latest.message.as_str()), (64, "Extracting"));
    let stdout: Vec<&str> = lines
        .iter()
        .filter(|(s, _)| *s == StreamType::Stdout)
        .map(|(_, l)| l.as_str())
        .collect();
    assert_eq!(stdout, ["before", "::progress 250 too far", "after"]);
    assert!(lines.contains(&(StreamType::Stderr, "::progress 90 on stderr".to_string())));
}

/// The built-in `sleep` reports its progress up to 100.
#[tokio::test]
async fn the_sleep_handler_reports_progress() {
    use stevedore_core::store::LeaseToken;
    use stevedore_worker::progress::ProgressBoard;
    let op = FileConfig::parse("[[operation]]\nobject = 'service'\nverb = 'sleep'\nhandler = 'sleep'\n")
        .unwrap()
        .operations
        .remove(0);
    let handler = handlers::for_operation(&op);
    let (tx, _rx) = mpsc::channel(1024);
    let mut a = action().await;
    a.body = r#"{"seconds": 0.5}"#.into();
    let uuid = a.uuid;
    let board = ProgressBoard::new();
    let ctx = HandlerContext::new(a, op, CancellationToken::new(), Duration::from_secs(1), SOON, tx)
        .with_progress(board.register(uuid, LeaseToken(uuid::Uuid::new_v4())));
    let run = tokio::spawn({
        let handler = handler.clone();
        async move { handler.run(&ctx).await }
    });
    // Midway it has reported something below 100…
    let mut seen_partial = false;
    while !run.is_finished() {
        if board.latest(uuid).is_some_and(|p| p.percent < 100) {
            seen_partial = true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(run.await.unwrap(), Outcome::Success);
    assert!(seen_partial);
    // …and at the end, 100.
    assert_eq!(board.latest(uuid).unwrap().percent, 100);
}
