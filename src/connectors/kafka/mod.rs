//! Kafka: a consumer-group source and an idempotent producer sink.

pub mod admin;
pub mod config;
pub mod mapping;
pub mod offsets;
pub mod security;
pub mod sink;
pub mod source;

pub use config::{KafkaSinkConfig, KafkaSourceConfig};
pub use sink::KafkaSink;
pub use source::KafkaSource;

use rdkafka::config::RDKafkaLogLevel;
use tracing::{debug, error, info, warn};

/// Forwards a librdkafka log line to `tracing`, tagged with the pipeline.
fn log_librdkafka(pipeline: &str, level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => error!(pipeline, facility, "librdkafka: {message}"),
        RDKafkaLogLevel::Warning => warn!(pipeline, facility, "librdkafka: {message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            info!(pipeline, facility, "librdkafka: {message}")
        }
        RDKafkaLogLevel::Debug => debug!(pipeline, facility, "librdkafka: {message}"),
    }
}
