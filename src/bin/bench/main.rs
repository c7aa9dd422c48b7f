//! Stevedore's benchmarks. Each scenario starts what it needs in this process
//! (API on a loopback port, workers, a fresh PostgreSQL database and broker
//! prefix), drives it over real HTTP, and prints one JSON object.
//!
//! ```text
//! cargo run --release --bin bench -- list --actions 1000000
//! cargo run --release --bin bench -- submit --requests 20000 --clients 64
//! cargo run --release --bin bench -- e2e --actions 20000 --workers 2
//! cargo run --release --bin bench -- latency --rate 1000 --seconds 10
//! cargo run --release --bin bench -- logs --lines 200000
//! cargo run --release --bin bench -- compare --actions 10000 --workers 2
//! scripts/cluster.sh faults   # runs `bench drive` against the cluster rig
//! ```
//!
//! `--smoke` shrinks every size so CI can check that the benchmarks still run
//! (seconds, no assertions on speed). Results go to BENCHMARKS.md.

/// mimalloc instead of the system allocator: under load glibc's malloc
/// and free took about a quarter of the process's CPU (docs/benchmarks-history.md, round 6).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod compare;
mod drive;
mod latency;
mod list;
mod logs;
mod queues;
mod rig;
mod throughput;

use anyhow::Result;
use clap::{Parser, Subcommand};
/// Stevedore benchmarks (JSON on stdout, progress on stderr).
#[derive(Debug, Parser)]
#[command(name = "bench", about)]
struct Cli {
    /// Tiny sizes: checks that the scenario runs, measures nothing useful.
    #[arg(long, global = true)]
    smoke: bool,
    /// Overrides `[database] batch_interval` (milliseconds; 0: no pacing).
    #[arg(long, global = true)]
    batch_interval_ms: Option<u64>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// GET /api/audit/v1/action/ with each filter over a seeded table.
    List {
        /// Actions to seed.
        #[arg(long, default_value_t = 1_000_000)]
        actions: i64,
        /// Requests per query shape.
        #[arg(long, default_value_t = 50)]
        requests: usize,
    },
    /// Accepted actions per second (202 returned: committed, publish confirmed).
    Submit {
        /// Requests in all.
        #[arg(long, default_value_t = 20_000)]
        requests: u64,
        /// Concurrent HTTP clients.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Services the requests go to, round robin (0: one per request).
        #[arg(long, default_value_t = 0)]
        objects: u64,
    },
    /// noop actions completed per second end to end.
    E2e {
        /// Actions in all.
        #[arg(long, default_value_t = 20_000)]
        actions: u64,
        /// Concurrent HTTP clients.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Worker instances.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Services the actions go to, round robin (0: one per action).
        #[arg(long, default_value_t = 0)]
        objects: u64,
    },
    /// POST → Success event latency at a fixed offered rate.
    Latency {
        /// Offered rate, actions per second.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// How long to offer it.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Worker instances.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Where the Success event is awaited.
        #[arg(long, value_enum, default_value_t = latency::Probe::Ws)]
        to: latency::Probe,
    },
    /// Log lines per second from one action to a following logs websocket.
    Logs {
        /// Lines the action prints (`seq 1 <lines>`).
        #[arg(long, default_value_t = 200_000)]
        lines: u64,
    },
    /// `e2e`, then the same number of Celery no-op tasks on the same RabbitMQ
    /// (bench/peers/run.sh, which installs Celery from PyPI), and the ratios.
    Compare {
        /// Actions (and Celery tasks) in all.
        #[arg(long, default_value_t = 10_000)]
        actions: u64,
        /// Concurrent HTTP clients.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Stevedore worker instances.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Celery worker processes (prefork pool).
        #[arg(long, default_value_t = 2)]
        concurrency: usize,
    },
    /// Traffic and websocket followers against a running deployment (the
    /// cluster rig, scripts/cluster.sh), then what it lost: one line of JSON.
    Drive(drive::DriveArgs),
    /// Confirmed and consumed job messages per second over one or several
    /// job queues, the broker alone (`--url` may list a cluster's nodes).
    Queues(queues::QueuesArgs),
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let s = cli.smoke;
    if let Some(ms) = cli.batch_interval_ms {
        rig::set_batch_interval(std::time::Duration::from_millis(ms));
    }
    let out = match cli.scenario {
        Scenario::Queues(args) => queues::queues(args).await?,
        // One line: scripts/cluster.sh reports its last line.
        Scenario::Drive(args) => {
            println!("{}", serde_json::to_string(&drive::drive(args).await?)?);
            return Ok(());
        }
        Scenario::List { actions, requests } => {
            list::list(if s { 2000 } else { actions }, if s { 2 } else { requests }).await?
        }
        Scenario::Submit {
            requests,
            clients,
            objects,
        } => {
            throughput::submit(
                if s { 200 } else { requests },
                if s { 4 } else { clients },
                objects,
            )
            .await?
        }
        Scenario::E2e {
            actions,
            clients,
            workers,
            objects,
        } => {
            throughput::e2e(
                if s { 200 } else { actions },
                if s { 4 } else { clients },
                workers,
                objects,
            )
            .await?
        }
        Scenario::Latency {
            rate,
            seconds,
            workers,
            to,
        } => {
            latency::latency(
                if s { 50 } else { rate },
                if s { 1 } else { seconds },
                workers,
                to,
            )
            .await?
        }
        Scenario::Logs { lines } => logs::logs(if s { 2000 } else { lines }).await?,
        // The peer needs PyPI: smoke runs Stevedore's side only.
        Scenario::Compare {
            actions,
            clients,
            workers,
            concurrency,
        } => {
            compare::compare(
                if s { 200 } else { actions },
                if s { 4 } else { clients },
                workers,
                concurrency,
                !s,
            )
            .await?
        }
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
