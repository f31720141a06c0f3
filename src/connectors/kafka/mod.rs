//! Kafka: a consumer-group source and an idempotent producer sink.

pub mod admin;
pub mod config;
pub mod errors;
pub mod mapping;
pub mod oauth;
pub mod offsets;
pub mod security;
pub mod sink;
pub mod source;
pub mod watch;

pub use config::{KafkaSinkConfig, KafkaSourceConfig};
pub use sink::KafkaSink;
pub use source::KafkaSource;
