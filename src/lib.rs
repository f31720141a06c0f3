//! ferry moves data between Redis, Kafka and RabbitMQ without losing it.
//!
//! See `ARCHITECTURE.md` for the bird's-eye view. In short: a [`config`]
//! file describes pipelines; the [`runtime`] runs each as a source, bounded
//! channels and sink tasks; [`connectors`] hold one folder per system;
//! [`ack`] carries sink confirmations back to the source.

pub mod ack;
pub(crate) mod backoff;
pub mod check;
pub(crate) mod clock;
pub mod config;
pub mod connectors;
pub mod error;
pub mod jobs;
pub mod json_field;
pub mod message;
pub mod observe;
pub mod position;
pub mod problem;
pub mod runtime;
pub mod secret;
pub mod steps;
pub(crate) mod sync;
pub mod template;
pub mod values;
