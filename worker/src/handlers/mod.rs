//! Handlers: what actually performs an operation.
//!
//! A handler gets a [`HandlerContext`] (the action, its operation, a log sink,
//! a progress sink and a cancellation token) and returns an [`Outcome`].
//! A built-in reports progress with [`HandlerContext::progress`]; an `exec`
//! command prints reserved lines ([`progress_line`]). Timeouts, leases and
//! state changes are the executor's business, not the handler's: a handler
//! only has to stop promptly when its token is cancelled.

mod exec;
mod noop;
pub mod progress_line;
mod sleep;

pub use exec::ExecHandler;
pub use noop::{FailHandler, NoopHandler};
pub use sleep::SleepHandler;

use crate::progress::ProgressSink;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use stevedore_core::action::Action;
use stevedore_core::config::{HandlerSpec, Operation};
use stevedore_core::logline::{NewLogLine, StreamType};
use stevedore_core::progress::Progress;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The operation succeeded.
    Success,
    /// The operation failed for good; the reason becomes a log line.
    Failed(String),
    /// A temporary failure (exit code 75, EX_TEMPFAIL): worth retrying.
    Temporary(String),
    /// The handler stopped because its token was cancelled.
    Canceled,
}

/// Everything a handler may use.
pub struct HandlerContext {
    /// The action being run.
    pub action: Action,
    /// Its operation.
    pub operation: Operation,
    /// Fires on cancel, timeout, lost lease or shutdown.
    pub cancel: CancellationToken,
    /// SIGTERM → SIGKILL grace period for child processes.
    pub kill_grace: Duration,
    /// How long a command's output is still read after it exited.
    pub output_drain: Duration,
    log: mpsc::Sender<NewLogLine>,
    progress: ProgressSink,
}

impl HandlerContext {
    /// A context whose log lines go to `log`.
    pub fn new(
        action: Action,
        operation: Operation,
        cancel: CancellationToken,
        kill_grace: Duration,
        output_drain: Duration,
        log: mpsc::Sender<NewLogLine>,
    ) -> Self {
        HandlerContext {
            action,
            operation,
            cancel,
            kill_grace,
            output_drain,
            log,
            progress: ProgressSink::discard(),
        }
    }

    /// The same context, its progress reports going to `progress`.
    pub fn with_progress(mut self, progress: ProgressSink) -> Self {
        self.progress = progress;
        self
    }

    /// Reports progress: `percent` done (above 100 is ignored), doing
    /// `message`. Cheap and never waits: only the latest report is kept,
    /// and the worker writes it at most once per `[worker] progress_interval`.
    pub fn progress(&self, percent: u8, message: impl Into<String>) {
        if let Some(p) = Progress::new(percent, message) {
            self.progress.report(p);
        }
    }

    /// A clone of the progress sink, for tasks that read child output.
    pub fn progress_sink(&self) -> ProgressSink {
        self.progress.clone()
    }

    /// Emits a log line (waits when the log writer is behind: backpressure
    /// instead of unbounded memory).
    pub async fn log(&self, stream: StreamType, line: impl Into<String>) {
        let _ = self.log.send(NewLogLine::now(stream, line)).await;
    }

    /// A clone of the log sink, for tasks that read child output.
    pub fn log_sink(&self) -> mpsc::Sender<NewLogLine> {
        self.log.clone()
    }
}

/// Performs one attempt of an operation.
#[async_trait]
pub trait Handler: Send + Sync {
    /// Runs until done or until `ctx.cancel` fires.
    async fn run(&self, ctx: &HandlerContext) -> Outcome;
}

/// The handler an operation names.
pub fn for_operation(op: &Operation) -> Arc<dyn Handler> {
    match op.handler_spec() {
        HandlerSpec::Exec(argv) => Arc::new(ExecHandler::new(argv, op.env.clone(), op.detach)),
        HandlerSpec::Builtin(name) => match name.as_str() {
            "sleep" => Arc::new(SleepHandler),
            "fail" => Arc::new(FailHandler),
            // Config validation only lets known names through; noop is the default.
            _ => Arc::new(NoopHandler),
        },
    }
}
