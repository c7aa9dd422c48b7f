//! Stevedore's broker drivers: [`amqp::AmqpBroker`] (RabbitMQ via lapin
//! and deadpool-lapin) for production and [`memory::MemoryBroker`]
//! (in-process) for `stevedore dev`, both implementing
//! [`stevedore_core::broker::Broker`] and passing one conformance suite
//! (`tests/conformance.rs`).

pub mod amqp;
pub mod memory;
