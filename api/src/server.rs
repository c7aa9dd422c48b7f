//! The HTTP server loop every listener runs: hyper's connection handling with
//! the limits a hostile or careless client meets (`[http]` in the config).
//!
//! - **Connection cap**: at most `max_connections` connections are served at
//!   once; the next one is accepted only when one closes (meanwhile the
//!   kernel's listen backlog holds it).
//! - **Header timeout**: hyper closes a connection whose request headers are
//!   not complete `header_read_timeout` after it started waiting for them
//!   (HTTP/1; the timer also runs while a keep-alive connection waits for its
//!   next request).
//! - **Idle timeout**: a connection with no request in flight for
//!   `idle_timeout` (including one that never sent a byte) is shut down
//!   gracefully. A request is in flight from its headers until its response
//!   body ended, so long-polls and streamed exports are never idle; an
//!   upgraded websocket leaves the connection's accounting altogether.
//! - **Graceful shutdown**: on [`Shutdown`] the listener stops accepting,
//!   every connection finishes its request in flight and closes.

use axum::extract::connect_info::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use stevedore_core::config::HttpSettings;
use stevedore_core::shutdown::Shutdown;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// The connection limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// See [`HttpSettings::header_read_timeout`].
    pub header_read_timeout: Duration,
    /// See [`HttpSettings::idle_timeout`].
    pub idle_timeout: Duration,
    /// See [`HttpSettings::max_connections`].
    pub max_connections: usize,
}

impl From<&HttpSettings> for ConnectionLimits {
    fn from(h: &HttpSettings) -> Self {
        ConnectionLimits {
            header_read_timeout: h.header_read_timeout,
            idle_timeout: h.idle_timeout,
            max_connections: h.max_connections,
        }
    }
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        (&HttpSettings::default()).into()
    }
}

/// A pause after a failed `accept` (out of file descriptors, say), so the
/// loop does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` with `limits` until `shutdown` fires, then
/// lets every connection finish its request in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    let closing = Shutdown::new();
    // Registers the gauge at 0, so a listener reports it before its first client.
    metrics::gauge!(crate::ops::HTTP_CONNECTIONS).increment(0.0);
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let (stream, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (builder, router, closing) = (builder.clone(), router.clone(), closing.clone());
        connections.spawn(async move {
            let _permit = permit;
            metrics::gauge!(crate::ops::HTTP_CONNECTIONS).increment(1.0);
            serve_connection(&builder, stream, remote, router, limits.idle_timeout, closing).await;
            metrics::gauge!(crate::ops::HTTP_CONNECTIONS).decrement(1.0);
        });
    }
    drop(listener);
    closing.trigger();
    connections.close();
    connections.wait().await;
    Ok(())
}

/// One connection: hyper drives the protocol; this loop closes it when it
/// stays idle or the server shuts down.
async fn serve_connection(
    builder: &auto::Builder<TokioExecutor>,
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    router: Router,
    idle_timeout: Duration,
    closing: Shutdown,
) {
    let activity = Activity::new();
    let tracked = activity.clone();
    let service = tower::service_fn(move |req: axum::http::Request<hyper::body::Incoming>| {
        // In flight from its headers until its response body ends.
        let guard = tracked.start();
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(ConnectInfo(remote));
        let router = router.clone();
        async move {
            let resp = router.oneshot(req).await?;
            Ok::<_, std::convert::Infallible>(resp.map(|body| {
                axum::body::Body::new(TrackedBody {
                    inner: body,
                    _guard: guard,
                })
            }))
        }
    });
    let mut conn =
        pin!(builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service)));
    let mut shutting_down = false;
    loop {
        let check = activity.next_check(idle_timeout);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%remote, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = closing.cancelled(), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(check), if !shutting_down => {
                if activity.idle_for() >= Some(idle_timeout) {
                    tracing::debug!(%remote, "closing an idle connection");
                    shutting_down = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// What a connection is doing: how many responses are in flight, and since
/// when it has had none.
#[derive(Clone)]
struct Activity {
    in_flight: Arc<AtomicUsize>,
    idle_since: Arc<Mutex<Instant>>,
}

impl Activity {
    fn new() -> Self {
        Activity {
            in_flight: Arc::new(AtomicUsize::new(0)),
            idle_since: Arc::new(Mutex::new(Instant::now())),
        }
    }

    /// A response starts; it is in flight until the guard drops.
    fn start(&self) -> ActivityGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        ActivityGuard(self.clone())
    }

    /// How long the connection has had nothing in flight (`None`: busy).
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        Some(
            self.idle_since
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .elapsed(),
        )
    }

    /// When to look again: when the connection would have been idle for
    /// `idle_timeout` if nothing happens meanwhile (while busy, a full period on).
    fn next_check(&self, idle_timeout: Duration) -> Instant {
        let idle = self.idle_for().unwrap_or_default();
        Instant::now() + idle_timeout.saturating_sub(idle)
    }
}

struct ActivityGuard(Activity);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        *self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its connection busy until it ends or is dropped.
struct TrackedBody {
    inner: axum::body::Body,
    _guard: ActivityGuard,
}

impl http_body::Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
