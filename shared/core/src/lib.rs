//! Stevedore's core: the domain model, the lifecycle of actions, and the two
//! interfaces every role meets through. No HTTP, no SQL, no driver here: the
//! drivers are the `stevedore-store` and `stevedore-broker` crates.
//!
//! - [`state`]: the action state machine — the one place transitions are decided.
//! - [`lifecycle`]: the rules of an action's life, the changeset each change
//!   records, the driver interface a database implements, and the engine
//!   that runs the rules over it.
//! - [`action`], [`object`], [`event`], [`logline`]: the domain types and their wire JSON.
//! - [`dates`]: RFC 2822 dates as the clients parse them.
//! - [`store`]: the `Store` traits, one per area.
//! - [`broker`]: the `Broker` trait.
//! - [`messages`]: what travels through the broker.
//! - [`dispatch`]: publishing jobs through the outbox, and the relay that
//!   republishes whatever was committed but not confirmed.
//! - [`group_commit`]: the batching loop (in lanes) of submissions and final writes.
//! - [`config`]: `stevedore.toml`, operations and object types.
//! - [`auth`]: API keys (hashed at rest) and `Authorization` headers;
//!   [`session`], the dashboard's sessions (their ids hashed at rest).
//! - [`progress`]: what a handler reports while it runs, coalesced writes and live frames.
//! - [`syslog`], [`retention`]: the QNAP-style system log, and the pruner of old history.
//! - [`shutdown`]: the one shutdown signal every role listens to; [`reconnect`],
//!   the delays of every loop that reconnects to the broker.
//! - [`workers`]: the workers registry (who runs, with what, until when).
//! - [`health`]: conditions a process reports on `/readyz` (jobs held in an outage, a blocked broker).
//! - [`webhook`]: webhooks — matching, signatures, the network guard, backoff.
//! - `testing` (with the `testing` feature, for tests only): throwaway
//!   PostgreSQL databases and broker prefixes.

pub mod action;
pub mod auth;
pub mod broker;
pub mod config;
pub mod dates;
pub mod dispatch;
pub mod error;
pub mod event;
pub mod group_commit;
pub mod health;
pub mod lifecycle;
pub mod logline;
pub mod messages;
pub mod net;
pub mod object;
pub mod progress;
pub mod reconnect;
pub mod retention;
pub mod session;
pub mod shutdown;
pub mod state;
pub mod store;
pub mod syslog;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod webhook;
pub mod workers;

pub use error::{Error, Result};
