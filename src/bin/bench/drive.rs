//! `drive`: traffic against a running deployment (the cluster rig of
//! scripts/cluster.sh, or any other) and the accounting of what it lost.
//!
//! It offers `--rate` submissions per second through the deployment's URL
//! for `--seconds`, keeps `--followers` websockets on the events stream
//! (each reconnects after any error and resumes with `?since=` from the last
//! `seq` it saw), waits until every action is final, and then counts from the
//! database and the followers what a fault may have cost: actions accepted
//! but lost, stuck, or with more than one final state; runs of one action
//! that overlapped or repeated (from the `mark` operation's marks file); and
//! events each follower missed or saw twice. With `--rig-dir` it adds the CPU
//! seconds each role's processes used (their pid files in that directory).

use crate::rig::percentiles;
use anyhow::{Context, Result};
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stevedore_core::state::ActionState;
use stevedore_core::store::{ActionFilter, Scope};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

/// What to drive, and where.
#[derive(Debug, clap::Args)]
pub struct DriveArgs {
    /// The deployment's base URL (the balancer's).
    #[arg(long)]
    url: String,
    /// User whose API key submits and follows.
    #[arg(long)]
    user: String,
    /// That user's API key (from the environment, so that it shows in no
    /// process list).
    #[arg(long, env = "STEVEDORE_APIKEY", hide_env_values = true)]
    key: String,
    /// The deployment's database, read for the accounting.
    #[arg(long)]
    database_url: String,
    /// The rig's directory: its pid files (CPU per role) and marks file.
    #[arg(long)]
    rig_dir: Option<PathBuf>,
    /// How long to submit (at most, with `--stop-file`).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Stop submitting as soon as this file exists. The driver writes
    /// `<path>.started` once its followers are connected and it submits.
    #[arg(long)]
    stop_file: Option<PathBuf>,
    /// Offered submissions per second.
    #[arg(long, default_value_t = 50)]
    rate: u64,
    /// Websocket followers of the events stream.
    #[arg(long, default_value_t = 4)]
    followers: usize,
    /// The verb submitted on each service (`mark` writes the marks file).
    #[arg(long, default_value = "mark")]
    verb: String,
    /// Services the submissions go to, round robin.
    #[arg(long, default_value_t = 32)]
    objects: usize,
    /// How long every action gets to reach a final state after the last submission.
    #[arg(long, default_value_t = 180)]
    settle: u64,
}

/// What one follower saw.
#[derive(Debug, Default)]
struct Followed {
    /// The `seq` of the auth frame of its first connection: it owes every
    /// event after it.
    start: Option<i64>,
    /// The highest `seq` seen (where a reconnect resumes).
    last: Option<i64>,
    /// How many times each `seq` arrived.
    seen: HashMap<i64, u32>,
    reconnects: u32,
    /// The `since` of each reconnection attempt.
    resumed_from: Vec<i64>,
}

pub async fn drive(a: DriveArgs) -> Result<Value> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(30))
        .build()?;
    let store = stevedore_store::connect(&a.database_url)
        .await
        .context("connecting to the deployment's database")?;

    let mut services = Vec::with_capacity(a.objects);
    for i in 0..a.objects {
        services.push(create_service(&http, &a, i).await?);
    }

    let (stop_tx, stop_rx) = watch::channel(None::<i64>);
    let mut followers = vec![];
    for _ in 0..a.followers {
        let followed = Arc::new(Mutex::new(Followed::default()));
        let task = tokio::spawn(follow(ws_base(&a), followed.clone(), stop_rx.clone()));
        followers.push((followed, task));
    }
    // Every follower has its starting point before the first submission.
    let wait_start = Instant::now();
    while followers.iter().any(|(f, _)| f.lock().unwrap().start.is_none()) {
        anyhow::ensure!(
            wait_start.elapsed() < Duration::from_secs(30),
            "followers could not connect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let cpu_before = a.rig_dir.as_deref().map(cpu_by_role);
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let outcomes = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let total = a.rate * a.seconds;
    if let Some(stop) = &a.stop_file {
        let _ = std::fs::remove_file(stop);
        std::fs::write(stop.with_extension("started"), b"")?;
    }
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / a.rate.max(1) as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut requests = Vec::with_capacity(total as usize);
    for i in 0..total {
        ticker.tick().await;
        if i % a.rate.max(1) == 0 && a.stop_file.as_ref().is_some_and(|f| f.exists()) {
            break;
        }
        let url = format!(
            "{}/api/app/v1/service/{}/{}/",
            a.url,
            services[i as usize % services.len()],
            a.verb
        );
        let request = http.post(url).basic_auth(&a.user, Some(&a.key)).body("{}");
        let (accepted, outcomes, latency) = (accepted.clone(), outcomes.clone(), latency.clone());
        requests.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let outcome = match request.send().await {
                Ok(r) if r.status().as_u16() == 202 => match r.json::<Value>().await {
                    Ok(v) => match v["uuid"].as_str() {
                        Some(u) => {
                            accepted.lock().unwrap().push(u.to_string());
                            let _ = latency.lock().unwrap().record(t0.elapsed().as_micros() as u64);
                            "202".to_string()
                        }
                        None => "202 without uuid".to_string(),
                    },
                    Err(_) => "202, body cut".to_string(),
                },
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "no answer".to_string(),
            };
            *outcomes.lock().unwrap().entry(outcome).or_default() += 1;
        }));
        if i % (a.rate * 10).max(1) == 0 && i > 0 {
            eprintln!("drive: {i}/{total} submitted");
        }
    }
    for r in requests {
        r.await?;
    }
    let offered_for = started.elapsed();

    // Every action final, or the settle time is up.
    let deadline = Instant::now() + Duration::from_secs(a.settle);
    // This run's actions: its verb on the services it created (creating a
    // service is an action too).
    let ours: HashSet<uuid::Uuid> = services.iter().filter_map(|s| s.parse().ok()).collect();
    let actions = loop {
        let mut page = store
            .list_actions(Scope::All, &ActionFilter::default(), 10_000_000, 0)
            .await?;
        page.items
            .retain(|x| ours.contains(&x.object_uuid) && x.verb == a.verb);
        let open = page.items.iter().filter(|x| !x.state.is_final()).count();
        if open == 0 || Instant::now() > deadline {
            break page.items;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let settled_after = started.elapsed();
    let cpu = match (a.rig_dir.as_deref(), cpu_before) {
        (Some(dir), Some(before)) => {
            let after = cpu_by_role(dir);
            let n = accepted.lock().unwrap().len().max(1) as f64;
            let mut roles = serde_json::Map::new();
            for (role, secs) in &after {
                let used = secs - before.get(role).copied().unwrap_or(0.0);
                roles.insert(
                    role.clone(),
                    json!({"cpu_seconds": round3(used), "ms_per_action": round3(used * 1000.0 / n)}),
                );
            }
            Some(Value::Object(roles))
        }
        _ => None,
    };

    // Followers catch up to the last event, then stop.
    let last_seq = store.last_event_seq().await?;
    let _ = stop_tx.send(Some(last_seq));
    for (_, task) in &mut followers {
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    }

    let events = store.events_after(Scope::All, 0, 100_000_000).await?;
    let mut finals: HashMap<&str, usize> = HashMap::new();
    for e in &events {
        let is_final = e
            .state
            .parse::<ActionState>()
            .map(|s| s.is_final())
            .unwrap_or(false);
        if e.object_type == "action" && is_final {
            *finals.entry(e.uuid.as_str()).or_default() += 1;
        }
    }
    let accepted = accepted.lock().unwrap().clone();
    let in_db: HashSet<String> = actions.iter().map(|x| x.uuid.to_string()).collect();
    let lost = accepted.iter().filter(|u| !in_db.contains(*u)).count();
    let count = |s: ActionState| actions.iter().filter(|x| x.state == s).count();
    let stuck = actions.iter().filter(|x| !x.state.is_final()).count();
    let more_than_one_final = actions
        .iter()
        .filter(|x| x.state.is_final() && finals.get(x.uuid.to_string().as_str()).copied().unwrap_or(0) != 1)
        .count();
    let (runs, overlapping) = match a.rig_dir.as_deref() {
        Some(dir) if a.verb == "mark" => marks(&dir.join("marks")),
        _ => (HashMap::new(), 0),
    };
    let ran_without_mark = if a.verb == "mark" {
        actions
            .iter()
            .filter(|x| x.state == ActionState::Success && !runs.contains_key(&x.uuid.to_string()))
            .count()
    } else {
        0
    };
    let reexecuted = runs.values().filter(|n| **n > 1).count();

    let mut follower_reports = vec![];
    let (mut missed_total, mut twice_total) = (0usize, 0usize);
    for (f, _) in &followers {
        let f = f.lock().unwrap();
        let start = f.start.unwrap_or(0);
        let owed: Vec<i64> = events
            .iter()
            .map(|e| e.seq)
            .filter(|s| *s > start && *s <= last_seq)
            .collect();
        let missed_seqs: Vec<i64> = owed.iter().copied().filter(|s| !f.seen.contains_key(s)).collect();
        let missed = missed_seqs.len();
        let twice = f.seen.values().filter(|n| **n > 1).count();
        missed_total += missed;
        twice_total += twice;
        follower_reports.push(json!({
            "owed": owed.len(), "missed": missed, "seen_twice": twice, "reconnects": f.reconnects,
            "missed_seqs": &missed_seqs[..missed.min(5)], "resumed_from": f.resumed_from,
        }));
    }

    let latency = latency.lock().unwrap().clone();
    Ok(json!({
        "scenario": "drive",
        "url": a.url,
        "verb": a.verb,
        "offered_rate": a.rate,
        "offered_seconds": round3(offered_for.as_secs_f64()),
        "settled_after_seconds": round3(settled_after.as_secs_f64()),
        "submissions": outcomes.lock().unwrap().clone(),
        "accept_latency_ms": percentiles(&latency),
        "accepted": accepted.len(),
        "completed": count(ActionState::Success),
        "failed": count(ActionState::Failed),
        "canceled": count(ActionState::Canceled),
        "lost": lost,
        "stuck": stuck,
        "more_than_one_final_state": more_than_one_final,
        "succeeded_without_running": ran_without_mark,
        "concurrently_duplicated": overlapping,
        "re_executed": reexecuted,
        "followers": follower_reports,
        "events_missed": missed_total,
        "events_seen_twice": twice_total,
        "cpu_by_role": cpu,
    }))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

async fn create_service(http: &reqwest::Client, a: &DriveArgs, i: usize) -> Result<String> {
    let body = json!({"name": format!("rig-{i}-{}", uuid::Uuid::new_v4().simple())}).to_string();
    let r = http
        .post(format!("{}/api/app/v1/service/", a.url))
        .basic_auth(&a.user, Some(&a.key))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .context("creating a service")?;
    anyhow::ensure!(r.status().is_success(), "creating a service: {}", r.status());
    let v: Value = r.json().await?;
    v["uuid"]
        .as_str()
        .map(String::from)
        .context("service without uuid")
}

fn ws_base(a: &DriveArgs) -> String {
    format!(
        "{}/api/audit/v1/events/?user={}&token={}",
        a.url.replacen("http://", "ws://", 1),
        a.user,
        a.key
    )
}

/// Follows the events stream until told the last `seq` and it got there (or
/// 20 s after being told), reconnecting after any error from where it was.
async fn follow(base: String, followed: Arc<Mutex<Followed>>, mut stop: watch::Receiver<Option<i64>>) {
    let mut stop_at: Option<(i64, Instant)> = None;
    loop {
        let since = followed.lock().unwrap().last;
        let url = match since {
            // Only a reconnection has a `since`.
            Some(s) => {
                followed.lock().unwrap().resumed_from.push(s);
                format!("{base}&since={s}")
            }
            None => base.clone(),
        };
        if let Ok(Ok((mut ws, _))) =
            tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(url)).await
        {
            loop {
                if let Some((last, at)) = stop_at {
                    let done = followed.lock().unwrap().last.is_some_and(|l| l >= last);
                    if done || at.elapsed() > Duration::from_secs(20) {
                        return;
                    }
                }
                let next = tokio::select! {
                    m = ws.next() => m,
                    _ = stop.changed(), if stop_at.is_none() => {
                        if let Some(last) = *stop.borrow() {
                            stop_at = Some((last, Instant::now()));
                        }
                        continue;
                    }
                    _ = tokio::time::sleep(Duration::from_millis(250)) => continue,
                };
                let Some(Ok(Message::Text(text))) = next else {
                    match next {
                        Some(Ok(_)) => continue,
                        _ => break,
                    }
                };
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                let mut f = followed.lock().unwrap();
                if v["type"] == "auth" {
                    let seq = v["data"]["seq"].as_i64();
                    if f.start.is_none() {
                        f.start = seq;
                        f.last = seq;
                    }
                    continue;
                }
                if let Some(seq) = v["seq"].as_i64() {
                    *f.seen.entry(seq).or_default() += 1;
                    f.last = Some(f.last.map_or(seq, |l| l.max(seq)));
                }
            }
        }
        if let Some((_, at)) = stop_at {
            if at.elapsed() > Duration::from_secs(20) {
                return;
            }
        }
        followed.lock().unwrap().reconnects += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs per action in a marks file, and how many runs started while another
/// run of the same action had not ended.
fn marks(path: &Path) -> (HashMap<String, usize>, usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut open: HashMap<String, bool> = HashMap::new();
    let mut runs: HashMap<String, usize> = HashMap::new();
    let mut overlapping = 0;
    for line in text.lines() {
        let Some((what, uuid)) = line.split_once(' ') else {
            continue;
        };
        let running = open.entry(uuid.to_string()).or_default();
        match what {
            "start" => {
                if *running {
                    overlapping += 1;
                }
                *running = true;
                *runs.entry(uuid.to_string()).or_default() += 1;
            }
            "end" => *running = false,
            _ => {}
        }
    }
    (runs, overlapping)
}

/// CPU seconds (user + system, children included) so far, by role: the
/// rig's processes from their pid files (`api-1.pid` → `api`), HAProxy,
/// every RabbitMQ node (`beam`), PostgreSQL's processes, and this driver.
fn cpu_by_role(dir: &Path) -> BTreeMap<String, f64> {
    let mut roles: HashMap<u32, String> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(stem) = name.strip_suffix(".pid") else {
                continue;
            };
            let role = stem.split('-').next().unwrap_or(stem).to_string();
            if let Some(pid) = std::fs::read_to_string(e.path())
                .ok()
                .and_then(|p| p.trim().parse().ok())
            {
                roles.insert(pid, role);
            }
        }
    }
    let me = std::process::id();
    let mut out = BTreeMap::new();
    for (pid, comm, seconds) in crate::rig::process_cpu() {
        let role = if let Some(r) = roles.get(&pid) {
            r.clone()
        } else if pid == me {
            "driver".to_string()
        } else if comm.starts_with("postgres") {
            "postgresql".to_string()
        } else if comm.starts_with("beam") {
            "rabbitmq".to_string()
        } else if comm == "haproxy" {
            "haproxy".to_string()
        } else {
            continue;
        };
        *out.entry(role).or_insert(0.0) += seconds;
    }
    out
}
