//! Kafka: a consumer-group source and an idempotent producer sink.

pub mod admin;
pub mod config;
pub(crate) mod errors;
pub(crate) mod mapping;
pub(crate) mod oauth;
pub(crate) mod offsets;
pub(crate) mod security;
pub mod sink;
pub(crate) mod source;
pub(crate) mod watch;

pub use config::{KafkaSinkConfig, KafkaSourceConfig};
pub use sink::KafkaSink;
pub use source::KafkaSource;
