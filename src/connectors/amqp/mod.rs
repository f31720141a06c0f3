//! RabbitMQ (AMQP 0-9-1): a queue consumer with manual acks and a
//! publisher with confirms, both reconnecting with backoff (lapin does not).

pub mod access;
pub mod acks;
pub mod config;
pub mod connection;
pub mod errors;
pub mod mapping;
pub mod sink;
pub mod source;

pub use config::{AmqpSinkConfig, AmqpSourceConfig};
