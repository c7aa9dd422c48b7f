//! One shutdown signal shared by every task of a role.
//!
//! A [`Shutdown`] is a cancellation token: `SIGTERM`/`SIGINT` (see
//! [`Shutdown::on_signals`]) or a test cancels it, and every loop selects on
//! [`Shutdown::cancelled`] to stop taking work.

use tokio_util::sync::CancellationToken;

/// The process-wide shutdown signal (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A signal not yet fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires the signal.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether it has fired.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once it has fired.
    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }

    /// The underlying token (children are cancelled with it).
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Fires the signal on SIGTERM or SIGINT (spawns a task).
    pub fn on_signals(&self) {
        let me = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{signal, SignalKind};
                let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
                }
            }
            #[cfg(not(unix))]
            {
                let _ = tokio::signal::ctrl_c().await;
            }
            me.trigger();
        });
    }
}
