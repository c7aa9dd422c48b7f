//! Where stream clients run: on a runtime of their own when the process set
//! one up ([`install`]; the `stevedore` binary does, for the roles that
//! serve streams), else on the runtime of the caller.
//!
//! Why: a fan-out wakes one task per client at once. On the runtime that
//! also serves requests and runs actions, ten thousand socket tasks queue
//! ahead of the next step of every action in flight (its commit, its claim,
//! its final write), so an action's `Success` waited behind the fan-out of
//! its own `create` event, and every client then got the two in separate
//! writes. On a runtime of their own the sockets get the share of the CPU
//! the operating system gives their threads, and the action path runs as it
//! does without clients.
//!
//! Only the clients' tasks move: their connections stay registered with the
//! I/O driver of the runtime that accepted them, which wakes them there. The
//! hub's subscriber stays on the request runtime too (measured: moving it
//! beside the clients it wakes gained nothing).

use std::future::Future;
use std::sync::{LazyLock, OnceLock};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio_util::task::TaskTracker;

static RUNTIME: OnceLock<Handle> = OnceLock::new();

/// Every stream client's task, wherever it runs, for [`drained`].
static CLIENTS: LazyLock<TaskTracker> = LazyLock::new(TaskTracker::new);

/// Runs stream clients on `handle` from now on, for the life of the
/// process. Only the first call counts; it returns whether it was this one.
pub fn install(handle: Handle) -> bool {
    RUNTIME.set(handle).is_ok()
}

/// Spawns one stream client's task on the stream runtime, if one was
/// installed, else on the current runtime.
pub(crate) fn spawn<F>(client: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    spawn_on(RUNTIME.get(), client)
}

fn spawn_on<F>(runtime: Option<&Handle>, client: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    match runtime {
        Some(runtime) => drop(CLIENTS.spawn_on(client, runtime)),
        None => drop(CLIENTS.spawn(client)),
    }
}

/// Waits, at most `limit`, for every stream client to end; returns whether
/// they all did. Once the shutdown signal fired, each sends its close frame
/// (1001) and ends: a process waits for that before it exits, or its
/// clients could see the connection cut without one.
pub async fn drained(limit: Duration) -> bool {
    CLIENTS.close();
    tokio::time::timeout(limit, CLIENTS.wait()).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The name of the thread a task spawned with `spawn_on(runtime, …)` runs on.
    async fn runs_on(runtime: Option<&Handle>) -> Option<String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        spawn_on(runtime, async move {
            let _ = tx.send(std::thread::current().name().map(str::to_string));
        });
        rx.await.expect("the task ran")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn clients_run_on_the_stream_runtime_when_there_is_one() {
        let streams = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-streams")
            .build()
            .unwrap();
        assert_eq!(
            runs_on(Some(streams.handle())).await.as_deref(),
            Some("test-streams")
        );
        assert_ne!(runs_on(None).await.as_deref(), Some("test-streams"));
        streams.shutdown_background();
    }
}
