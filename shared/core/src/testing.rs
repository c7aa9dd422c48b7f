//! Test support: throwaway PostgreSQL databases and unique broker prefixes, so
//! that test runs never collide and clean up after themselves, and a sample
//! action to submit.
//!
//! For tests only: compiled with the `testing` feature (off by default; the
//! crates that test with it turn it on in their dev-dependencies) or into
//! this crate's own unit tests.
//!
//! Environment: `STEVEDORE_TEST_PG_URL` (an admin connection, default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and `STEVEDORE_TEST_AMQP_URL`
//! (default `amqp://guest:guest@127.0.0.1:5672/%2f`).

use rand::Rng;
use sqlx::{Connection, Executor, PgConnection};

/// A new action for `POST /api/app/v1/acme/service/<object>/<verb>/` by user
/// `acme` in namespace `acme` ("Service Start" for `start`); tests change
/// what they need with struct update syntax.
pub fn new_action(object: uuid::Uuid, verb: &str) -> crate::action::NewAction {
    let mut name = verb.to_string();
    if let Some(first) = name.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    crate::action::NewAction {
        uuid: uuid::Uuid::new_v4(),
        namespace: "acme".into(),
        action: format!("Service {name}"),
        object: format!("/api/app/v1/acme/service/{object}/"),
        object_uuid: object,
        object_type: "service".into(),
        object_parents: vec![],
        verb: verb.into(),
        method: "POST".into(),
        path: format!("/api/app/v1/acme/service/{object}/{verb}/"),
        body: String::new(),
        ip: "127.0.0.1".into(),
        location: String::new(),
        user: "acme".into(),
        user_agent: "test".into(),
        is_user_action: true,
        retry_of: None,
        completed: None,
    }
}

/// The admin PostgreSQL URL tests create their databases with.
pub fn admin_pg_url() -> String {
    std::env::var("STEVEDORE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// The RabbitMQ URL tests use.
pub fn amqp_url() -> String {
    std::env::var("STEVEDORE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string())
}

/// A short random lowercase hex string.
pub fn random_suffix() -> String {
    format!("{:08x}", rand::thread_rng().gen::<u32>())
}

/// A broker name prefix unique to one test: `stv-test-<label>-<random>`.
pub fn unique_prefix(label: &str) -> String {
    format!("stv-test-{label}-{}", random_suffix())
}

/// A PostgreSQL database created for one test and dropped when this value is
/// dropped (connections are terminated first).
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates `stevedore_test_<random>` on the admin server.
    pub async fn create() -> TestDatabase {
        let admin = admin_pg_url();
        let name = format!("stevedore_test_{}{}", random_suffix(), random_suffix());
        let mut conn = PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {admin}: {e}"));
        conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .expect("CREATE DATABASE");
        let _ = conn.close().await;
        let url = match admin.rfind('/') {
            Some(i) if admin[..i].contains("://") && i > admin.find("://").unwrap() + 2 => {
                let query = admin[i..].find('?').map(|q| &admin[i + q..]).unwrap_or("");
                format!("{}/{}{}", &admin[..i], name, query)
            }
            _ => format!("{admin}/{name}"),
        };
        TestDatabase { name, url }
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside or outside a runtime; a thread with its own runtime works in both.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
            if let Ok(rt) = rt {
                rt.block_on(async move {
                    if let Ok(mut conn) = PgConnection::connect(&admin_pg_url()).await {
                        let _ = conn
                            .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
                            .await;
                    }
                });
            }
        })
        .join();
    }
}
