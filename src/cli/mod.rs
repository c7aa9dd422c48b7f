//! The client commands: `stevedore action …`, `event`, `log …`, `run`,
//! `login`, `completions`, `worker ls` and `webhook …`. They talk to a Stevedore API (and its stream
//! service) over HTTP and websockets, authenticating like the Docker Cloud
//! and Tutum clients do.
//!
//! Exit status: 0 on success; for `action logs --follow` and `run --wait`
//! the action's final state (0 Success, 1 Failed, 2 Canceled); 3 for any
//! error (unreachable server, 401, 404, 409, bad input), as the original
//! clients exit 3 on API errors.

pub mod actions;
pub mod config;
pub mod http;
pub mod output;
pub mod run;
pub mod stream;
pub mod syslog;
pub mod webhooks;
pub mod workers;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use config::{ConnArgs, Credentials};
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

/// The exit status of a failed client command.
pub const ERROR_EXIT: u8 = 3;

/// Ends a command with this exit status, printing nothing more.
#[derive(Debug)]
pub struct Exit(pub u8);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for Exit {}

/// The client subcommands (merged into `stevedore`'s own).
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Actions: list, inspect, follow logs, cancel, retry.
    Action(actions::ActionArgs),
    /// Follows the events stream, printing each event's JSON on its own line;
    /// reconnects and resumes where it left off when the connection drops.
    Event(EventArgs),
    /// The system log: list and export.
    Log(syslog::LogArgs),
    /// Runs an operation on an object and prints the new action's uuid.
    Run(run::RunArgs),
    /// Checks credentials against the API and saves them (0600) for the other commands.
    Login(LoginArgs),
    /// Prints a shell completion script.
    Completions(CompletionsArgs),
    /// Webhooks: add, list, remove, and their delivery logs.
    Webhook(webhooks::WebhookArgs),
}

/// `stevedore event` options.
#[derive(Debug, Args)]
pub struct EventArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Start after this event sequence number (replays the stored events since).
    #[arg(long)]
    pub since: Option<i64>,
}

/// `stevedore login` options.
#[derive(Debug, Args)]
pub struct LoginArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `stevedore completions` options.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Prints an error the way every client command does.
pub fn print_error(e: &anyhow::Error) {
    let prefix = output::paint("error:", output::Color::Red, output::stderr_colors());
    eprintln!("{prefix} {e:#}");
}

/// Runs a client command; `app` is the whole command line definition (for completions).
pub fn main(command: ClientCommand, app: clap::Command) -> ExitCode {
    if let ClientCommand::Completions(a) = command {
        let mut app = app;
        clap_complete::generate(a.shell, &mut app, "stevedore", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    block_on(async move {
        match command {
            ClientCommand::Action(a) => actions::run(a).await,
            ClientCommand::Event(a) => event(a).await,
            ClientCommand::Log(a) => syslog::run(a).await,
            ClientCommand::Run(a) => run::run(a).await,
            ClientCommand::Login(a) => login(a).await,
            ClientCommand::Webhook(a) => webhooks::run(a).await,
            ClientCommand::Completions(_) => unreachable!("handled above"),
        }
    })
}

/// Runs a `stevedore worker` client subcommand (`worker ls`).
pub fn worker_main(command: workers::WorkerCommand) -> ExitCode {
    block_on(workers::run(command))
}

/// Runs a client command to its end on a runtime of its own, and maps its
/// outcome to the client's exit status.
fn block_on(command: impl std::future::Future<Output = Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(ERROR_EXIT);
        }
    };
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<Exit>() {
            Some(Exit(code)) => ExitCode::from(*code),
            None => {
                print_error(&e);
                ExitCode::from(ERROR_EXIT)
            }
        },
    }
}

async fn event(a: EventArgs) -> Result<()> {
    let api = http::Api::new(&a.conn.resolve()?)?;
    stream::follow_events(&api, a.since, |t: &str| output::say(t)).await?;
    Ok(())
}

/// Reads one line from stdin after a prompt on stderr; hides the input on a
/// terminal when `secret`.
fn prompt(label: &str, secret: bool) -> Result<String> {
    eprint!("{label}: ");
    let _ = std::io::stderr().flush();
    let tty = std::io::stdin().is_terminal();
    let hide = secret && tty;
    if hide {
        let _ = std::process::Command::new("stty").arg("-echo").status();
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if hide {
        let _ = std::process::Command::new("stty").arg("echo").status();
        eprintln!();
    }
    read.context("cannot read from stdin")?;
    Ok(line.trim().to_string())
}

async fn login(a: LoginArgs) -> Result<()> {
    let path = config::credentials_path()
        .context("no place for the credentials file: set STEVEDORE_CREDENTIALS or HOME")?;
    let file = config::load_credentials(&path).unwrap_or_default();
    let mut conn = a.conn.clone();
    // Credentials come from flags, the environment or the prompt; the file is
    // what gets replaced.
    if conn.user.as_deref().is_none_or(str::is_empty) {
        conn.user = Some(prompt("Username", false)?);
    }
    if conn.apikey.as_deref().is_none_or(str::is_empty) {
        conn.apikey = Some(prompt("API key", true)?);
    }
    let resolved = config::merge(
        &conn,
        &Credentials {
            user: None,
            apikey: None,
            ..file
        },
    );
    let api = http::Api::new(&resolved)?;
    let who = match api.get("/api/v1/auth/", &[]).await {
        Err(http::ApiError::Unauthorized) => anyhow::bail!(
            "not authorized: {} refused that user name and API key; nothing was saved",
            resolved.url
        ),
        other => other?,
    };
    let creds = Credentials {
        url: Some(resolved.url.clone()),
        stream_url: (resolved.stream_url != resolved.url).then(|| resolved.stream_url.clone()),
        user: resolved.user.clone(),
        apikey: resolved.apikey.clone(),
    };
    config::save_credentials(&path, &creds)?;
    let user = who["user"]
        .as_str()
        .or(resolved.user.as_deref())
        .unwrap_or_default();
    output::say(format_args!(
        "Logged in to {} as {user}; credentials saved in {}",
        resolved.url,
        path.display()
    ));
    Ok(())
}
