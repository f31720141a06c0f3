//! RabbitMQ (AMQP 0-9-1): a queue consumer with manual acks and a
//! publisher with confirms, both reconnecting with backoff (lapin does not).

pub(crate) mod access;
mod acks;
pub mod config;
pub(crate) mod connection;
pub(crate) mod errors;
pub(crate) mod mapping;
pub mod sink;
pub(crate) mod source;

pub use config::{AmqpSinkConfig, AmqpSourceConfig};
