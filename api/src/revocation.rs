//! How a revocation reaches every process's [credential cache](crate::credential_cache).
//!
//! A key revoked (`stevedore apikey revoke`) or a session ended (logout)
//! is deleted from the store first; then every API and stream process must
//! stop accepting it, cached or not. The rule, in one place:
//!
//! - **Processes on a shared broker (RabbitMQ)** subscribe to the control
//!   fanout exchange ([`spawn_listener`]). Whoever ends a key or session
//!   publishes [`Control::Revoke`] naming the user ([`announce`], and the
//!   admin command), and each process forgets that user's entries at once.
//!   If the message is lost (the fanout is not persistent), an entry still
//!   lives at most `[auth] credential_cache_ttl` ([`CREDENTIAL_TTL`](crate::credential_cache::CREDENTIAL_TTL), 5 s, by
//!   default); and whenever the subscription
//!   is (re)established or reports lost messages, everything is forgotten,
//!   since a revocation may have been missed meanwhile.
//! - **A process on the in-process broker (`stevedore dev`)** cannot be
//!   told by the admin commands, which are other processes. It confirms
//!   every cache hit by reading the store's credential revision (one
//!   single-row read, [`confirm_cache`]), which every revocation advances
//!   in its own transaction: a moved revision forgets everything.
//!
//! Either way a revoked key or ended session is refused by the next request
//! that reaches a process after the revocation reached it: with RabbitMQ,
//! once the control message is delivered (a matter of milliseconds, but not
//! synchronised with the revoking command's exit).

use crate::error::ApiError;
use crate::stream::{RESUBSCRIBE_MAX, RESUBSCRIBE_MIN};
use crate::ApiState;
use futures::StreamExt;
use stevedore_core::messages::Control;
use stevedore_core::reconnect::Reconnect;
use stevedore_core::shutdown::Shutdown;

/// How revocations made elsewhere reach this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Through the broker's control exchange ([`spawn_listener`]).
    Broker,
    /// By reading the store's credential revision before each cache hit.
    StoreRevision,
}

impl Reach {
    /// The reach of a process on `broker`.
    pub fn of(broker: &dyn stevedore_core::broker::Broker) -> Self {
        if broker.spans_processes() {
            Reach::Broker
        } else {
            Reach::StoreRevision
        }
    }
}

/// Before the cache is consulted: where revocations are not announced to
/// this process, reads the store's credential revision and forgets
/// everything if it moved. A store error is a 503, as any other.
pub async fn confirm_cache(state: &ApiState) -> Result<(), ApiError> {
    if state.revocations == Reach::StoreRevision {
        let revision = state.dispatcher.store().credential_revision().await?;
        state.credentials.observe_revision(revision);
    }
    Ok(())
}

/// After this process ended a key or session of `user` in the store:
/// forgets the user's entries here, and tells every other process. A
/// failed publish is logged; the other processes then notice when their
/// entries expire (`[auth] credential_cache_ttl`).
pub async fn announce(state: &ApiState, user: &str) {
    state.credentials.forget_user(user);
    let msg = Control::Revoke {
        user: user.to_string(),
    };
    if let Err(e) = state.dispatcher.broker().publish_control(&msg).await {
        tracing::warn!(
            error = %e,
            user,
            "revocation not announced; other processes notice when their cache entries expire"
        );
    }
}

/// Starts the task that forgets revoked users' entries as control messages
/// arrive, until `shutdown`; it re-subscribes with backoff whenever the
/// subscription ends.
pub fn spawn_listener(state: &ApiState, shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move { listen(state, shutdown).await })
}

async fn listen(state: ApiState, shutdown: Shutdown) {
    let broker = state.dispatcher.broker().clone();
    let mut reconnect = Reconnect::new(RESUBSCRIBE_MIN, RESUBSCRIBE_MAX);
    let subscribe = || broker.subscribe_control();
    while let Some(mut msgs) = reconnect
        .until_connected("subscribe to control messages", &shutdown, subscribe)
        .await
    {
        // Revocations published while this process was not subscribed are lost.
        state.credentials.forget_all();
        tracing::info!("subscribed to revocations");
        loop {
            let item = tokio::select! {
                _ = shutdown.cancelled() => return,
                item = msgs.next() => item,
            };
            match item {
                Some(Ok(Control::Revoke { user })) => {
                    state.credentials.forget_user(&user);
                    tracing::debug!(%user, "revocation received");
                }
                Some(Ok(Control::Cancel { .. })) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "control messages lost; forgetting every cached credential");
                    state.credentials.forget_all();
                }
                None => break,
            }
        }
        tracing::warn!("control subscription ended; re-subscribing");
    }
}
