//! Test support: throwaway PostgreSQL databases and unique broker prefixes, so
//! that test runs never collide and clean up after themselves.
//!
//! Environment: `STEVEDORE_TEST_PG_URL` (an admin connection, default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and `STEVEDORE_TEST_AMQP_URL`
//! (default `amqp://guest:guest@127.0.0.1:5672/%2f`).

use rand::Rng;
use sqlx::{Connection, Executor, PgConnection};

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
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async move {
                    if let Ok(mut conn) = PgConnection::connect(&admin_pg_url()).await {
                        let _ = conn
                            .execute(
                                format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str(),
                            )
                            .await;
                    }
                });
            }
        })
        .join();
    }
}
