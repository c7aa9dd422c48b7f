//! The cluster rig (scripts/cluster.sh) under faults, in short: three
//! RabbitMQ nodes, two API and two stream processes behind HAProxy, three
//! workers, two job queues. While actions are submitted and followed on the
//! events stream, the node leading the job queue stops and comes back, an
//! API process, a stream process and two workers are killed with SIGKILL.
//! Nothing may be lost, stuck, finished twice, run twice at once or missed
//! by a follower; re-executions (at-least-once) are allowed and reported.

use crate::support::deployment::bin;
use serde_json::Value;
use std::process::Command;

/// The rig's port base in tests: its own ports, node names, database and
/// directory, beside a rig someone runs on the default base.
const BASE: &str = "6700";

fn cluster(args: &[&str]) -> std::process::Output {
    Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh"))
        .args(args)
        .env("STEVEDORE_RIG_BASE", BASE)
        .env("STEVEDORE_BIN", bin())
        .env("STEVEDORE_BENCH_BIN", env!("CARGO_BIN_EXE_bench"))
        .output()
        .expect("scripts/cluster.sh runs")
}

/// Takes the rig down however the test ends.
struct Down;

impl Drop for Down {
    fn drop(&mut self) {
        let out = cluster(&["down"]);
        if !out.status.success() {
            eprintln!("cluster.sh down: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_rig_loses_nothing_when_nodes_and_processes_die() {
    let _serial = crate::faults::SERIAL.lock().await;
    let _down = Down;
    let up = tokio::task::spawn_blocking(|| cluster(&["up", "--job-queues", "2"]))
        .await
        .unwrap();
    assert!(
        up.status.success(),
        "cluster.sh up failed:\n{}",
        String::from_utf8_lossy(&up.stderr)
    );
    // Two job queues, replicated on all three nodes, led by two nodes.
    let leaders = cluster(&["leaders"]);
    let leaders = String::from_utf8_lossy(&leaders.stdout).to_string();
    let jobs: Vec<&str> = leaders
        .lines()
        .filter(|l| l.starts_with("stevedore.jobs ") || l.starts_with("stevedore.jobs.1 "))
        .collect();
    assert_eq!(jobs.len(), 2, "both job queues are quorum queues:\n{leaders}");
    let nodes: std::collections::HashSet<&str> = jobs.iter().filter_map(|l| l.split(' ').nth(1)).collect();
    assert_eq!(
        nodes.len(),
        2,
        "the job queues' leaders are on two nodes:\n{leaders}"
    );

    let faults = tokio::task::spawn_blocking(|| {
        cluster(&[
            "faults",
            "--step",
            "3",
            "--rate",
            "10",
            "--followers",
            "2",
            "--objects",
            "8",
        ])
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&faults.stderr);
    assert!(faults.status.success(), "cluster.sh faults failed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&faults.stdout);
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the last line is the summary ({e}):\n{stdout}\n{stderr}"));
    let n = |k: &str| {
        summary[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} missing: {summary}"))
    };
    assert!(n("accepted") >= 100, "a steady stream was accepted: {summary}");
    // An answer lost with a killed API process may still have been
    // committed: such actions run too, so completed can exceed accepted.
    // But never more than that: nothing is submitted twice (the balancer
    // must not resend a request that reached a process).
    let unanswered: u64 = summary["submissions"]
        .as_object()
        .expect("submissions")
        .iter()
        .filter(|(k, _)| k.as_str() != "202")
        .map(|(_, v)| v.as_u64().unwrap_or(0))
        .sum();
    assert!(n("completed") >= n("accepted"), "{summary}");
    assert!(
        n("completed") <= n("accepted") + unanswered,
        "submitted twice: {summary}"
    );
    for zero in [
        "lost",
        "stuck",
        "failed",
        "canceled",
        "more_than_one_final_state",
        "succeeded_without_running",
        "concurrently_duplicated",
        "events_missed",
        "events_seen_twice",
    ] {
        assert_eq!(n(zero), 0, "{zero}: {summary}\n{stderr}");
    }
    let followers = summary["followers"].as_array().expect("followers");
    assert_eq!(followers.len(), 2);
    assert!(
        followers.iter().all(|f| f["owed"].as_u64() > Some(0)),
        "every follower was owed events: {summary}"
    );
    assert!(
        stderr.contains("fault: stopping RabbitMQ node") && stderr.contains("fault: kill -9 stream-1"),
        "the faults happened:\n{stderr}"
    );
}
