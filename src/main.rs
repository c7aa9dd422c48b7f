//! `stevedore`: one binary for every role (dev, api, stream, worker, migrate) and the
//! administration commands. See `stevedore --help`.

/// mimalloc instead of the system allocator: under load glibc's malloc
/// and free took about a quarter of the process's CPU (docs/benchmarks-history.md, round 6).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;
mod keys;
mod roles;
mod settings;

use clap::{CommandFactory, Parser, Subcommand};
use settings::CommonArgs;
use std::process::ExitCode;

/// Stevedore: a message-queue-backed job orchestrator with a Docker Cloud /
/// Tutum compatible Actions API.
#[derive(Debug, Parser)]
#[command(name = "stevedore", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Everything in one process on an embedded SQLite store and in-process
    /// broker: API, worker, demo operations. Needs no PostgreSQL or RabbitMQ.
    Dev(roles::DevArgs),
    /// The REST API (with the outbox relay), on PostgreSQL + RabbitMQ.
    Api(roles::ServerArgs),
    /// The stream service (action logs, events; websockets, or Server-Sent
    /// Events with Accept: text/event-stream), on PostgreSQL + RabbitMQ; run
    /// as many as you like, each sees every update.
    Stream(roles::ServerArgs),
    /// A worker: consumes jobs and runs their handlers. `stevedore worker ls`
    /// lists the live workers instead (admins only).
    Worker(roles::WorkerArgs),
    /// Applies database migrations.
    Migrate(CommonArgs),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Apikey(ApikeyCommand),
    /// Client commands: action, event, log, run, login, completions.
    #[command(flatten)]
    Client(cli::ClientCommand),
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Creates a user (and their own namespace) with a first API key.
    Create(roles::UserCreateArgs),
    /// Makes a user an admin (an operator: may list the workers).
    GrantAdmin(roles::UserAdminArgs),
    /// Takes a user's admin flag away, at once on every running API process.
    RevokeAdmin(roles::UserAdminArgs),
}

#[derive(Debug, Subcommand)]
enum ApikeyCommand {
    /// Creates a new API key for an existing user.
    Create(roles::ApikeyCreateArgs),
    /// Lists a user's API keys: id, fingerprint, creation and last use (never the keys).
    Ls(keys::ApikeyLsArgs),
    /// Revokes one of a user's API keys and ends the sessions made from it,
    /// at once on every running API and stream process.
    Revoke(keys::ApikeyRevokeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = match cli.command {
        Command::Client(c) => return cli::main(c, Cli::command()),
        Command::Worker(mut a) => match a.take_client_command() {
            Some(client) => return cli::worker_main(client),
            None => Command::Worker(a),
        },
        other => other,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The roles that serve streams (`dev`, `stream`, `api --with-stream`) run
    // their clients on a runtime of their own (see
    // `stevedore_api::stream::socket_runtime`).
    let serves_streams = match &command {
        Command::Dev(_) | Command::Stream(_) => true,
        Command::Api(a) => a.with_stream(),
        _ => false,
    };
    let streams = match serves_streams.then(stream_runtime).transpose() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the stream clients' runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(rt) = &streams {
        stevedore_api::stream::socket_runtime::install(rt.handle().clone());
    }
    let result = runtime.block_on(async move {
        match command {
            Command::Dev(a) => roles::dev(a).await,
            Command::Api(a) => roles::api(a).await,
            Command::Stream(a) => roles::stream(a).await,
            Command::Worker(a) => roles::worker(a).await,
            Command::Migrate(a) => roles::migrate(a).await,
            Command::User(UserCommand::Create(a)) => roles::user_create(a).await,
            Command::User(UserCommand::GrantAdmin(a)) => roles::user_set_admin(a, true).await,
            Command::User(UserCommand::RevokeAdmin(a)) => roles::user_set_admin(a, false).await,
            Command::Apikey(ApikeyCommand::Create(a)) => roles::apikey_create(a).await,
            Command::Apikey(ApikeyCommand::Ls(a)) => keys::apikey_ls(a).await,
            Command::Apikey(ApikeyCommand::Revoke(a)) => keys::apikey_revoke(a).await,
            Command::Client(_) => unreachable!("client commands return above"),
        }
    });
    // The clients were told to stop with the rest: their close frames go out
    // before the process ends (a client slower than that is cut off).
    if result.is_ok() && streams.is_some() {
        runtime.block_on(stevedore_api::stream::socket_runtime::drained(CLIENTS_DRAIN));
    }
    drop(streams);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Longest a stopping server waits for its stream clients' close frames.
const CLIENTS_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// The runtime stream clients run on: as many threads as the request
/// runtime, named so that a profile tells the two apart.
fn stream_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .thread_name("stevedore-stream")
        .enable_all()
        .build()
}
