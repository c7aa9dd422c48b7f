//! What the end-to-end tests share: a [`deployment::Deployment`] of the real
//! binary on either backend, the proxies that fake faults between its
//! processes and PostgreSQL or RabbitMQ, and clients (HTTP, websockets).

pub mod amqp_proxy;
pub mod deployment;
pub mod http;
pub mod marks;
pub mod proxy;
pub mod rabbit;
pub mod tls_proxy;
pub mod ws;

/// Generates one `#[tokio::test]` per backend for each listed test function
/// `async fn name(d: &mut Deployment)`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let mut d = $crate::support::deployment::Deployment::start($crate::support::deployment::Backend::Embedded).await;
                    super::$name(&mut d).await;
                }
            )*
        }
        mod postgres_rabbitmq {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let mut d = $crate::support::deployment::Deployment::start($crate::support::deployment::Backend::PostgresRabbit).await;
                    super::$name(&mut d).await;
                }
            )*
        }
    };
}
