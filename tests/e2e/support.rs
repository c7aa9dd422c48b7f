//! What the end-to-end tests share: a [`deployment::Deployment`] of the real
//! binary on either backend, the proxies that fake faults between its
//! processes and PostgreSQL or RabbitMQ, and clients (HTTP, websockets).

pub mod amqp_proxy;
pub mod deployment;
pub mod http;
pub mod marks;
pub mod proxy;
pub mod rabbit;
pub mod sse;
pub mod tls_proxy;
pub mod ws;

/// Generates one `#[tokio::test]` per backend, in modules `embedded` and
/// `postgres_rabbitmq`, for each listed test function of the calling module:
///
/// - `on_both_backends!(a, b)`: `async fn a(d: &mut Deployment)`, given a
///   deployment with [`deployment::TEST_CONFIG`];
/// - `on_both_backends!(config = f; a, b)`: the same with the config `f()`
///   returns (`f` a function of the calling module);
/// - `on_both_backends!(backend; a, b)`: `async fn a(backend: Backend)`,
///   which starts what it needs itself.
macro_rules! on_both_backends {
    (@with $config:expr; $($name:ident),*) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    use $crate::support::deployment::{Backend, Deployment};
                    let mut d = Deployment::start_with(Backend::Embedded, $config).await;
                    super::$name(&mut d).await;
                }
            )*
        }
        mod postgres_rabbitmq {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    use $crate::support::deployment::{Backend, Deployment};
                    let mut d = Deployment::start_with(Backend::PostgresRabbit, $config).await;
                    super::$name(&mut d).await;
                }
            )*
        }
    };
    (backend; $($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::deployment::Backend::Embedded).await;
                }
            )*
        }
        mod postgres_rabbitmq {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::deployment::Backend::PostgresRabbit).await;
                }
            )*
        }
    };
    (config = $config:ident; $($name:ident),* $(,)?) => {
        on_both_backends!(@with &super::$config(); $($name),*);
    };
    ($($name:ident),* $(,)?) => {
        on_both_backends!(@with $crate::support::deployment::TEST_CONFIG; $($name),*);
    };
}
