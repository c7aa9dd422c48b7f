//! TLS where users expect it: PostgreSQL with `sslmode=require` and
//! `verify-full`, the CLI over https:// and wss://, and RabbitMQ over
//! amqps://. The API and RabbitMQ are put behind a TLS-terminating proxy the
//! test runs, with a throwaway CA the clients trust through `SSL_CERT_FILE`
//! (set on the processes the tests start, never on the test process).

use crate::support::deployment::{bin, run_cli, Backend, Deployment};
use crate::support::tls_proxy::TlsProxy;
use std::net::SocketAddr;
use std::time::Duration;
use stevedore_core::testing::{admin_pg_url, TestDatabase};
use stevedore_store::postgres::PgStore;
use tokio::process::Command;

fn with_param(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

/// `sslmode=require` encrypts (the server's `pg_stat_ssl` says so), through
/// the binary and the store; `verify-full` refuses a certificate no trusted
/// CA signed. Needs a server with `ssl = on` (Debian's default, with its
/// snakeoil certificate); says so and checks nothing otherwise.
#[tokio::test]
async fn postgres_connections_use_tls_when_asked() {
    let admin = sqlx::PgPool::connect(&admin_pg_url()).await.unwrap();
    let ssl: String = sqlx::query_scalar("SHOW ssl").fetch_one(&admin).await.unwrap();
    if ssl != "on" {
        eprintln!("PostgreSQL runs without ssl: TLS to it cannot be checked here");
        return;
    }
    let db = TestDatabase::create().await;
    let require = with_param(db.url(), "sslmode=require");
    run_cli(&["migrate", "--database-url", &require], &[]).await;
    let store = PgStore::connect(&require).await.unwrap();
    let encrypted: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(encrypted, "sslmode=require did not encrypt");

    let verify = with_param(db.url(), "sslmode=verify-full");
    let err = PgStore::connect(&verify).await.unwrap_err().to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

/// The CLI reaches an API served over https:// (REST) and wss:// (its
/// websockets), trusting a private CA named by `SSL_CERT_FILE`; without it,
/// the certificate is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_speaks_https_and_wss() {
    let d = Deployment::start(Backend::Embedded).await;
    let api: SocketAddr = d.url.trim_start_matches("http://").parse().unwrap();
    let proxy = TlsProxy::start(api, d.dir.path()).await;
    let https = proxy.url("https");
    let svc = d.create_object("/api/app/v1/service/", r#"{"name":"tls"}"#).await;
    let svc = svc["uuid"].as_str().unwrap().to_string();
    let cli = |args: &[&str], trust: bool| {
        let mut c = Command::new(bin());
        c.args(args)
            .env_remove("STEVEDORE_DATABASE_URL")
            .env("STEVEDORE_URL", &https)
            .env("STEVEDORE_USER", &d.user)
            .env("STEVEDORE_APIKEY", &d.key)
            .env("STEVEDORE_CREDENTIALS", d.dir.path().join("none.toml"))
            .kill_on_drop(true);
        if trust {
            c.env("SSL_CERT_FILE", &proxy.ca_file);
        } else {
            c.env("SSL_CERT_FILE", d.dir.path().join("empty.pem"));
        }
        c
    };
    std::fs::write(d.dir.path().join("empty.pem"), "").unwrap();
    let run = |args: Vec<String>, trust: bool| {
        let mut c = cli(&args.iter().map(String::as_str).collect::<Vec<_>>(), trust);
        async move {
            tokio::time::timeout(Duration::from_secs(60), c.output())
                .await
                .unwrap()
                .unwrap()
        }
    };

    // REST over https: run an action and wait for it (`--wait` follows it).
    let out = run(
        vec!["run".into(), "service".into(), svc.clone(), "start".into()],
        true,
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let action = String::from_utf8_lossy(&out.stdout).trim().to_string();
    d.wait_for_state(&action, &["Success"]).await;
    // The logs websocket over wss.
    let out = run(
        vec!["action".into(), "logs".into(), "--follow".into(), action.clone()],
        true,
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("started"),
        "{out:?}"
    );

    // Untrusted: refused, with the reason.
    let out = run(vec!["action".into(), "ls".into()], false).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("certificate") || err.contains("tls") || err.contains("ssl"),
        "{err}"
    );
}

/// A broker reached over amqps:// (RabbitMQ behind TLS) publishes and
/// delivers like one over amqp://: an API and a worker that reach RabbitMQ
/// only through a TLS listener run an action to Success. They trust its CA
/// through `SSL_CERT_FILE` in their own environment: the test process's is
/// shared by every test and stays as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_over_amqps_publishes_and_delivers() {
    let mut d = Deployment::start(Backend::PostgresRabbit).await;
    // From here on only processes on amqps:// (children: api, worker-1).
    d.kill(0).await;
    d.kill(1).await;
    let rabbit: SocketAddr = "127.0.0.1:5672".parse().unwrap();
    let proxy = TlsProxy::start(rabbit, d.dir.path()).await;
    let amqps = format!("amqps://guest:guest@localhost:{}/%2f", proxy.addr.port());
    d.role_env
        .push(("SSL_CERT_FILE".into(), proxy.ca_file.display().to_string()));
    let db_url = d.db_url.clone();
    d.url = d.start_api_via("api-tls", &db_url, &amqps).await;
    d.start_worker_with_ops_via("worker-tls", &db_url, &amqps).await;
    let svc = d.new_service().await;
    let action = d.submit(&svc, "start", None).await;
    let done = d.wait_for_state(&action, &["Success", "Failed"]).await;
    assert_eq!(
        done["state"],
        "Success",
        "{done}\napi-tls:\n{}\nworker-tls:\n{}",
        d.logs("api-tls"),
        d.logs("worker-tls")
    );
}
