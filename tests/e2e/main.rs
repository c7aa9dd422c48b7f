//! End-to-end tests: the real `stevedore` binary as users and operators run
//! it (`stevedore dev` on SQLite and the in-process broker, or `migrate`,
//! `api`, `worker` and `stream` on PostgreSQL + RabbitMQ), driven over HTTP,
//! websockets, the CLI and a browser. One test binary: one module per area,
//! and [`support`] for what they share (deployments, proxies, clients).
//!
//! Every test runs in this one process, so none may change process-wide
//! state (environment variables, the current directory): what a started
//! process needs is passed to it (`Deployment::role_env`, `Command::env`).

#[macro_use]
mod support;

mod actions_api;
mod cli;
mod cluster;
mod dashboard;
mod deploy_manifests;
mod faults;
mod hostile_clients;
mod limits;
mod ops;
mod outages;
mod pipeline;
mod progress;
mod qnap;
mod queue_position;
mod session;
mod sse;
mod stream;
mod tls;
mod webhooks;
mod workers;
