//! The client commands end to end: the real `stevedore` binary as a client
//! (`action …`, `event`, `log …`, `run`, `login`, `completions`) against a
//! real server, on `stevedore dev` and on PostgreSQL + RabbitMQ.

use crate::support::deployment::{assert_help, bin, Backend, Deployment};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// What a client command did.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Where the client connects and as whom.
struct Client {
    url: String,
    stream_url: String,
    user: String,
    key: String,
    /// A credentials file that does not exist, so a developer's own never interferes.
    credentials: String,
}

impl Client {
    async fn new(d: &mut Deployment) -> Client {
        let stream_url = d.stream_url().await;
        Client {
            url: d.url.clone(),
            stream_url,
            user: d.user.clone(),
            key: d.key.clone(),
            credentials: d.dir.path().join("no-credentials.toml").display().to_string(),
        }
    }

    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .env_remove("STEVEDORE_DATABASE_URL")
            .env_remove("NO_COLOR")
            .env("STEVEDORE_URL", &self.url)
            .env("STEVEDORE_STREAM_URL", &self.stream_url)
            .env("STEVEDORE_USER", &self.user)
            .env("STEVEDORE_APIKEY", &self.key)
            .env("STEVEDORE_CREDENTIALS", &self.credentials)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    /// Runs a client command to its end (at most a minute).
    async fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let out = tokio::time::timeout(Duration::from_secs(60), self.command(args, env).output())
            .await
            .unwrap_or_else(|_| panic!("stevedore {args:?} did not finish"))
            .expect("run stevedore");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn run(&self, args: &[&str]) -> Out {
        self.run_env(args, &[]).await
    }

    /// Runs a command that must succeed; returns its stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert_eq!(out.code, 0, "stevedore {args:?}: {out:?}");
        out.stdout
    }

    /// Starts a long-running client command with piped stdout.
    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args, &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn stevedore")
    }
}

/// The uuids of the API's action list, newest first.
async fn api_uuids(d: &Deployment, query: &str) -> Vec<String> {
    let (status, _, page) = d
        .request(Method::GET, &format!("/api/audit/v1/action/?{query}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["uuid"].as_str().unwrap().to_string())
        .collect()
}

fn lines(s: &str) -> Vec<String> {
    s.lines().map(String::from).collect()
}

on_both_backends!(
    action_ls_prints_a_table_json_and_quiet_uuids_and_follows_pages,
    inspect_accepts_unambiguous_prefixes_and_names_the_others,
    logs_follow_exits_0_on_success_and_1_on_failure,
    cancel_of_a_running_sleep_makes_logs_follow_exit_2,
    retry_prints_the_new_actions_uuid,
    run_submits_an_operation_and_wait_exits_with_its_final_state,
    a_wrong_key_gets_the_not_authorized_message,
    login_verifies_and_writes_a_private_credentials_file,
    event_prints_the_events_of_a_new_action,
    log_ls_and_export_use_the_system_log_api_when_the_server_has_it,
);

async fn action_ls_prints_a_table_json_and_quiet_uuids_and_follows_pages(d: &mut Deployment) {
    let c = Client::new(d).await;
    let svc = d.new_service().await;
    let ok = d.submit(&svc, "start", None).await;
    let failed = d.submit(&svc, "fail", None).await;
    d.wait_for_state(&ok, &["Success"]).await;
    d.wait_for_state(&failed, &["Failed"]).await;

    let table = c.ok(&["action", "ls"]).await;
    let rows = lines(&table);
    let header: Vec<&str> = rows[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["UUID", "ACTION", "START", "END", "TARGET", "IP", "LOCATION", "STATE"]
    );
    assert!(
        !table.contains('\x1b'),
        "no colours when stdout is not a terminal: {table:?}"
    );
    let row = rows
        .iter()
        .find(|r| r.starts_with(&failed[..8]))
        .unwrap_or_else(|| panic!("no row for {failed}:\n{table}"));
    assert!(row.contains("Service Fail"), "{row}");
    assert!(row.contains(&format!("service/{svc}")), "{row}");
    assert!(row.trim_end().ends_with("Failed"), "{row}");
    assert!(
        row.contains("ago") || row.contains("now"),
        "relative times: {row}"
    );
    assert_eq!(rows.len(), 1 + 3, "create, start, fail:\n{table}");

    // -q: full uuids, in the API's order.
    let quiet = lines(&c.ok(&["action", "ls", "-q"]).await);
    assert_eq!(quiet, api_uuids(d, "").await);
    assert_eq!(quiet[0], failed);

    // --json: the API's objects.
    let json: Value = serde_json::from_str(&c.ok(&["action", "ls", "--json"]).await).unwrap();
    let arr = json.as_array().unwrap();
    assert_eq!(arr.len(), 3);
    assert_eq!(arr[0]["uuid"], failed.as_str());
    assert_eq!(arr[0]["state"], "Failed");

    // Filters.
    let only_failed = lines(&c.ok(&["action", "ls", "-q", "--state", "Failed"]).await);
    assert_eq!(only_failed, vec![failed.clone()]);
    let two_states = lines(&c.ok(&["action", "ls", "-q", "--state", "failed,success"]).await);
    assert_eq!(two_states.len(), 3);
    let other = d.new_service().await;
    let on_svc = lines(&c.ok(&["action", "ls", "-q", "--object", &svc]).await);
    assert_eq!(on_svc.len(), 3, "{on_svc:?}");
    let recent = lines(&c.ok(&["action", "ls", "-q", "--since", "1h"]).await);
    assert_eq!(recent.len(), 4, "{recent:?}");
    let old = c.ok(&["action", "ls", "-q", "--until", "1h"]).await;
    assert_eq!(old, "");

    // --limit across pages of --page-size.
    for _ in 0..3 {
        d.submit(&other, "noop", None).await;
    }
    let all = api_uuids(d, "limit=100").await;
    assert_eq!(all.len(), 7);
    let paged = lines(
        &c.ok(&["action", "ls", "-q", "--limit", "5", "--page-size", "2"])
            .await,
    );
    assert_eq!(paged, all[..5].to_vec());
    let everything = lines(
        &c.ok(&["action", "ls", "-q", "--limit", "0", "--page-size", "3"])
            .await,
    );
    assert_eq!(everything, all);
    let two = lines(&c.ok(&["action", "ls", "-q", "-n", "2"]).await);
    assert_eq!(two, all[..2].to_vec());
}

async fn inspect_accepts_unambiguous_prefixes_and_names_the_others(d: &mut Deployment) {
    let c = Client::new(d).await;
    // 17 creations: at least two action uuids share their first character.
    for _ in 0..17 {
        d.new_service().await;
    }
    let all = api_uuids(d, "limit=100").await;
    let target = &all[3];
    let out = c.ok(&["action", "inspect", &target[..8]]).await;
    let json: Value = serde_json::from_str(&out).expect("pretty JSON");
    assert_eq!(json["uuid"], target.as_str());
    assert_eq!(json["action"], "Service Create");
    assert!(out.contains("\n  \"uuid\""), "indented: {out}");

    // Several at once, full uuid too.
    let out = c.ok(&["action", "inspect", &all[0], &all[1][..10]]).await;
    assert_eq!(out.matches("\"resource_uri\"").count(), 2, "{out}");

    let shared = (0..16)
        .map(|i| format!("{i:x}"))
        .find(|p| all.iter().filter(|u| u.starts_with(p.as_str())).count() > 1)
        .unwrap();
    let out = c.run(&["action", "inspect", &shared]).await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains(&format!("'{shared}' is ambiguous: ")),
        "{out:?}"
    );
    let candidate = all.iter().find(|u| u.starts_with(&shared)).unwrap();
    assert!(
        out.stderr.contains(candidate.as_str()),
        "lists the matches: {out:?}"
    );

    let unused = (0..=0xffu32)
        .map(|i| format!("{i:02x}"))
        .find(|p| !all.iter().any(|u| u.starts_with(p.as_str())))
        .unwrap();
    for id in [
        unused.as_str(),
        "not-a-uuid",
        "00000000-0000-4000-8000-000000000000",
    ] {
        let out = c.run(&["action", "inspect", id]).await;
        assert_eq!(out.code, 3, "{id}: {out:?}");
        assert!(
            out.stderr.contains(&format!("no action matches '{id}'")),
            "{id}: {out:?}"
        );
        assert_eq!(out.stdout, "");
    }
}

async fn logs_follow_exits_0_on_success_and_1_on_failure(d: &mut Deployment) {
    let c = Client::new(d).await;
    let svc = d.new_service().await;
    let ok = d.submit(&svc, "start", None).await;
    let out = c.run(&["action", "logs", "--follow", &ok[..8]]).await;
    assert_eq!(out.code, 0, "{out:?}");
    // stdout and stderr lines may interleave: compare as sets.
    let mut got = lines(&out.stdout);
    got.sort();
    let mut want = vec![
        format!("starting {svc}"),
        "started".to_string(),
        "warming up".to_string(),
    ];
    want.sort();
    assert_eq!(got, want, "{out:?}");

    let failed = d.submit(&svc, "fail", None).await;
    let out = c.run(&["action", "logs", "-f", &failed]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        lines(&out.stdout),
        ["failing", "sh exited with code 3"],
        "{out:?}"
    );
    assert_eq!(out.stderr, "", "a Failed action is an exit status, not an error");

    // Without --follow: the stored lines, exit 0 whatever the state; --tail.
    let out = c.run(&["action", "logs", &failed]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        lines(&out.stdout),
        ["failing", "sh exited with code 3"],
        "{out:?}"
    );
    let all = lines(&c.ok(&["action", "logs", &ok]).await);
    assert_eq!(all.len(), 3, "{all:?}");
    let out = c.ok(&["action", "logs", "--tail", "1", &ok]).await;
    assert_eq!(lines(&out), all[2..], "the last stored line");
}

async fn cancel_of_a_running_sleep_makes_logs_follow_exit_2(d: &mut Deployment) {
    let c = Client::new(d).await;
    let svc = d.new_service().await;
    let sleeping = d.submit(&svc, "sleep", Some(r#"{"seconds": 60}"#)).await;
    d.wait_for_state(&sleeping, &["In progress"]).await;
    let follower = c.spawn(&["action", "logs", "--follow", &sleeping]);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let out = c.ok(&["action", "cancel", &sleeping[..8]]).await;
    assert!(out.starts_with(&sleeping), "{out}");
    assert!(out.contains("Cancel"), "{out}");
    let done = tokio::time::timeout(Duration::from_secs(30), follower.wait_with_output())
        .await
        .expect("logs --follow ends when the action is canceled")
        .unwrap();
    assert_eq!(
        done.status.code(),
        Some(2),
        "stderr: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    d.wait_for_state(&sleeping, &["Canceled"]).await;

    // A finished action cannot be canceled: 409 with the server's reason.
    let out = c.run(&["action", "cancel", &sleeping]).await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("conflict: "), "{out:?}");
    assert!(out.stderr.contains("Canceled"), "the server's message: {out:?}");
}

async fn retry_prints_the_new_actions_uuid(d: &mut Deployment) {
    let c = Client::new(d).await;
    let svc = d.new_service().await;
    let failed = d.submit(&svc, "fail", None).await;
    d.wait_for_state(&failed, &["Failed"]).await;
    let out = c.ok(&["action", "retry", &failed[..8]]).await;
    let new = out.trim();
    assert_ne!(new, failed);
    assert_eq!(new.len(), 36, "{out}");
    let retried = d.wait_for_state(new, &["Failed"]).await;
    assert_eq!(retried["action"], "Service Fail");
    // The retry of a running action is refused.
    let sleeping = d.submit(&svc, "sleep", Some(r#"{"seconds": 30}"#)).await;
    let out = c.run(&["action", "retry", &sleeping]).await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("conflict: "), "{out:?}");
    c.ok(&["action", "cancel", &sleeping]).await;
}

async fn run_submits_an_operation_and_wait_exits_with_its_final_state(d: &mut Deployment) {
    let c = Client::new(d).await;
    let svc = d.new_service().await;

    let out = c.ok(&["run", "service", &svc, "noop"]).await;
    let uuid = out.trim();
    assert_eq!(uuid.len(), 36, "{out}");
    let action = d.wait_for_state(uuid, &["Success"]).await;
    assert_eq!(action["action"], "Service Noop");

    let out = c.run(&["run", "service", &svc, "start", "--wait"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let l = lines(&out.stdout);
    assert_eq!(l.len(), 4, "the uuid, then the log lines: {out:?}");
    assert_eq!(
        d.wait_for_state(&l[0], &["Success"]).await["action"],
        "Service Start"
    );
    assert!(l[1..].contains(&"started".to_string()), "{out:?}");

    let out = c.run(&["run", "service", &svc, "fail", "--wait"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        lines(&out.stdout)[1..],
        ["failing", "sh exited with code 3"],
        "{out:?}"
    );

    let out = c
        .run(&[
            "run",
            "service",
            &svc,
            "sleep",
            "--body",
            r#"{"seconds": 0.2}"#,
            "--wait",
        ])
        .await;
    assert_eq!(out.code, 0, "{out:?}");

    // Errors: unknown verb (the server's message), bad body, unknown type.
    let out = c.run(&["run", "service", &svc, "explode"]).await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains("no operation \\\"explode\\\"")
            || out.stderr.contains("no operation \"explode\""),
        "{out:?}"
    );
    let out = c.run(&["run", "service", &svc, "start", "--body", "{nope"]).await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("--body is not valid JSON"), "{out:?}");
    let out = c.run(&["run", "gadget", &svc, "start"]).await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("pass --subsystem"), "{out:?}");
    let out = c
        .run(&["run", "service", "00000000-0000-4000-8000-000000000000", "start"])
        .await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("not found: "), "{out:?}");
}

async fn a_wrong_key_gets_the_not_authorized_message(d: &mut Deployment) {
    let c = Client::new(d).await;
    for args in [
        &["action", "ls"][..],
        &["action", "logs", "-f", "00000000-0000-4000-8000-000000000000"][..],
        &["run", "service", "00000000-0000-4000-8000-000000000000", "start"][..],
    ] {
        let out = c.run_env(args, &[("STEVEDORE_APIKEY", "wrong")]).await;
        assert_eq!(out.code, 3, "{args:?}: {out:?}");
        assert!(
            out.stderr
                .contains("not authorized: check STEVEDORE_USER / STEVEDORE_APIKEY or run stevedore login"),
            "{args:?}: {out:?}"
        );
    }
    // The event stream's handshake too (it would otherwise retry forever).
    let out = c.run_env(&["event"], &[("STEVEDORE_APIKEY", "wrong")]).await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("not authorized"), "{out:?}");
}

async fn login_verifies_and_writes_a_private_credentials_file(d: &mut Deployment) {
    use std::os::unix::fs::PermissionsExt;
    let c = Client::new(d).await;
    let path = d.dir.path().join("config").join("credentials.toml");
    let p = path.display().to_string();

    let out = c
        .run_env(
            &["login"],
            &[("STEVEDORE_CREDENTIALS", &p), ("STEVEDORE_APIKEY", "wrong")],
        )
        .await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("not authorized"), "{out:?}");
    assert!(!path.exists(), "nothing saved after a refusal");

    let out = c.run_env(&["login"], &[("STEVEDORE_CREDENTIALS", &p)]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains(&format!("as {}", d.user)), "{out:?}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let saved: toml::Value = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(saved["user"].as_str(), Some(d.user.as_str()));
    assert_eq!(saved["apikey"].as_str(), Some(d.key.as_str()));
    assert_eq!(saved["url"].as_str(), Some(d.url.as_str()));

    // The other commands use it when the environment says nothing.
    let svc = d.new_service().await;
    let out = Command::new(bin())
        .args(["action", "ls", "-q", "--object", &svc])
        .env_remove("STEVEDORE_URL")
        .env_remove("STEVEDORE_USER")
        .env_remove("STEVEDORE_APIKEY")
        .env_remove("STEVEDORE_STREAM_URL")
        .env("STEVEDORE_CREDENTIALS", &p)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);

    // Without any credentials: a clear message.
    let out = Command::new(bin())
        .args(["action", "ls"])
        .env_remove("STEVEDORE_USER")
        .env_remove("STEVEDORE_APIKEY")
        .env("STEVEDORE_URL", &d.url)
        .env("STEVEDORE_CREDENTIALS", d.dir.path().join("none.toml"))
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no credentials: set STEVEDORE_USER and STEVEDORE_APIKEY"),
        "{out:?}"
    );
}

/// Reads a child's stdout lines into a channel.
fn collect_lines(child: &mut Child) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for an event line about `uuid` in `state`; returns every line read.
async fn wait_for_event(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: &mut Vec<Value>,
    uuid: &str,
    state: &str,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    if seen.iter().any(|e| e["uuid"] == uuid && e["state"] == state) {
        return;
    }
    loop {
        let line = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {state} event for {uuid}; saw {seen:#?}"))
            .expect("stevedore event ended");
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let hit = v["uuid"] == uuid && v["state"] == state;
        seen.push(v);
        if hit {
            return;
        }
    }
}

async fn event_prints_the_events_of_a_new_action(d: &mut Deployment) {
    let c = Client::new(d).await;
    let mut child = c.spawn(&["event"]);
    let mut rx = collect_lines(&mut child);
    // Let it connect: events from before it connected are not replayed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let svc = d.new_service().await;
    let action = d.submit(&svc, "start", None).await;
    let mut seen = vec![];
    wait_for_event(&mut rx, &mut seen, &action, "Success").await;
    let mine: Vec<&Value> = seen.iter().filter(|e| e["uuid"] == action.as_str()).collect();
    assert_eq!(mine[0]["type"], "action");
    assert_eq!(mine[0]["action"], "create");
    assert!(
        seen.iter().all(|e| e["type"] != "auth"),
        "the auth frame is not printed"
    );
    let seqs: Vec<i64> = seen.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    child.kill().await.unwrap();
}

async fn log_ls_and_export_use_the_system_log_api_when_the_server_has_it(d: &mut Deployment) {
    let c = Client::new(d).await;
    let (status, _, _) = d.request(Method::GET, "/api/v1/log?limit=1", None).await;
    if status == StatusCode::NOT_FOUND {
        // The client must say so plainly rather than fail obscurely.
        let out = c.run(&["log", "ls"]).await;
        assert_eq!(out.code, 3, "{out:?}");
        assert!(
            out.stderr.contains("this server has no system log API"),
            "{out:?}"
        );
        eprintln!("skipping the log ls / export checks: this server has no /api/v1/log endpoint yet");
        return;
    }
    assert_eq!(status, StatusCode::OK);
    let out = c.ok(&["log", "ls", "--json", "--limit", "5"]).await;
    let records: Value = serde_json::from_str(&out).unwrap();
    assert!(records.as_array().unwrap().len() <= 5);
    let table = c.ok(&["log", "ls"]).await;
    assert!(table.starts_with("ID"), "{table}");
    let file = d.dir.path().join("log.csv");
    let out = c
        .run(&["log", "export", "--output", file.to_str().unwrap()])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let csv = std::fs::read_to_string(&file).unwrap();
    assert!(csv.starts_with("Date,Level,Category,User,Message"), "{csv}");
    let stdout = c.ok(&["log", "export"]).await;
    assert!(stdout.starts_with("Date,"), "{stdout}");
}

// --- without a server ---------------------------------------------------------

#[tokio::test]
async fn an_unreachable_server_is_named_in_the_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        &["action", "ls"][..],
        &["action", "inspect", "abc"][..],
        &["event"][..],
    ] {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .env("STEVEDORE_URL", &url)
            .env_remove("STEVEDORE_STREAM_URL")
            .env("STEVEDORE_USER", "u")
            .env("STEVEDORE_APIKEY", "k")
            .env("STEVEDORE_CREDENTIALS", "/nonexistent/credentials.toml")
            .kill_on_drop(true);
        if args == ["event"] {
            // The event stream retries; it reports each failed attempt.
            let mut child = cmd.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
            let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
            let line = tokio::time::timeout(Duration::from_secs(10), err.next_line())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert!(line.contains(&format!("cannot reach {url}: ")), "{line}");
            assert!(line.contains("reconnecting in"), "{line}");
            child.kill().await.unwrap();
            continue;
        }
        let out = cmd.output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("cannot reach {url}: ")),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("refused"), "{args:?}: {stderr}");
    }
    let out = Command::new(bin())
        .args(["action", "ls", "--url", "ftp://example.invalid"])
        .env("STEVEDORE_USER", "u")
        .env("STEVEDORE_APIKEY", "k")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an http:// or https:// URL"));
}

#[tokio::test]
async fn completions_are_generated_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(bin())
            .args(["completions", shell])
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.len() > 1000, "{shell}: {script}");
        assert!(script.contains("stevedore"), "{shell}");
        assert!(script.contains("inspect"), "{shell}: knows the subcommands");
    }
}

#[tokio::test]
async fn every_client_command_has_help() {
    for args in [
        &["action", "--help"][..],
        &["action", "ls", "--help"][..],
        &["action", "logs", "--help"][..],
        &["event", "--help"][..],
        &["log", "export", "--help"][..],
        &["run", "--help"][..],
        &["login", "--help"][..],
    ] {
        assert_help(args, "Usage: stevedore").await;
    }
}

// --- the event stream across a restart of the stream service -----------------

/// Starts `stevedore stream` on `addr`; waits until it listens.
async fn start_stream_at(d: &Deployment, addr: &str) -> Child {
    let mut child = Command::new(bin())
        .args([
            "stream",
            "--listen",
            addr,
            "--database-url",
            &d.db_url,
            "--amqp-url",
            &stevedore_core::testing::amqp_url(),
            "--broker-prefix",
            d.prefix.as_deref().unwrap(),
            "--config",
            d.config_path.to_str().unwrap(),
        ])
        .env_remove("STEVEDORE_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.contains("listening on") {
                return;
            }
        }
        panic!("stream exited");
    })
    .await
    .expect("stream starts");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_reconnects_after_the_stream_service_restarts_and_resumes_where_it_left_off() {
    let d = Deployment::start(Backend::PostgresRabbit).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let mut stream = start_stream_at(&d, &addr).await;
    let c = Client {
        url: d.url.clone(),
        stream_url: format!("http://{addr}"),
        user: d.user.clone(),
        key: d.key.clone(),
        credentials: d.dir.path().join("none.toml").display().to_string(),
    };
    let mut child = c.spawn(&["event"]);
    let mut rx = collect_lines(&mut child);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let svc = d.new_service().await;
    let first = d.submit(&svc, "noop", None).await;
    let mut seen = vec![];
    wait_for_event(&mut rx, &mut seen, &first, "Success").await;

    // The stream service goes away; actions go on meanwhile.
    stream.kill().await.unwrap();
    let _ = stream.wait().await;
    let during = d.submit(&svc, "noop", None).await;
    d.wait_for_state(&during, &["Success"]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _stream = start_stream_at(&d, &addr).await;

    // The client reconnects with ?since= and replays what it missed.
    wait_for_event(&mut rx, &mut seen, &during, "Success").await;
    let after = d.submit(&svc, "noop", None).await;
    wait_for_event(&mut rx, &mut seen, &after, "Success").await;
    let seqs: Vec<i64> = seen.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "no event twice, in order: {seqs:?}"
    );
    let creates = seen
        .iter()
        .filter(|e| e["uuid"] == during.as_str() && e["action"] == "create")
        .count();
    assert_eq!(creates, 1, "the missed create event was replayed once: {seen:#?}");
    child.kill().await.unwrap();
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("reconnecting in"), "{stderr}");
}
