#[macro_use]
mod deployment;
pub mod amqp_proxy;
pub mod tls_proxy;

pub use deployment::*;
