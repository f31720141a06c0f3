//! The conformance suite: every source and every sink, against its real
//! system, shows the same behaviours: delivery and acknowledgement,
//! resuming after a restart and after a crash (SIGKILL) without loss where
//! the system allows it (duplicates are printed), dead-lettering invalid
//! input, and surviving a broker restart.
//!
//! A new connector gets the whole suite by writing a kit (kits.rs) and
//! adding one line to `sources!` or `sinks!` below.
#![allow(async_fn_in_trait)]

#[path = "../support/mod.rs"]
mod support;

mod kits;
mod suite;

use kits::*;

/// For each `name => Kit`, one test module with every source behaviour.
macro_rules! sources {
    ($($name:ident => $kit:ty),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread")]
            async fn delivers_and_acknowledges() {
                suite::source_delivers_and_acknowledges::<$kit>(stringify!($name)).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn resumes_after_a_graceful_restart_without_loss() {
                suite::source_resumes_after_a_graceful_restart::<$kit>(stringify!($name)).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn resumes_after_a_crash_without_loss() {
                suite::source_resumes_after_a_crash::<$kit>(stringify!($name)).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn sends_invalid_input_to_the_dead_letter_sink() {
                suite::source_sends_invalid_input_to_the_dead_letter_sink::<$kit>(stringify!($name)).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn survives_a_broker_restart() {
                suite::source_survives_a_broker_restart::<$kit>(stringify!($name)).await;
            }
        }
    )*};
}

/// For each `name => Kit`, one test module with every sink behaviour.
macro_rules! sinks {
    ($($name:ident => $kit:ty),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread")]
            async fn receives_every_message() {
                suite::sink_receives_every_message::<$kit>(stringify!($name)).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn sends_invalid_input_to_the_dead_letter_sink() {
                suite::sink_sends_invalid_input_to_the_dead_letter_sink::<$kit>(stringify!($name)).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn survives_a_broker_restart() {
                suite::sink_survives_a_broker_restart::<$kit>(stringify!($name)).await;
            }
        }
    )*};
}

mod source {
    use super::*;

    sources! {
        kafka => KafkaSourceKit,
        redis_stream => RedisStreamSourceKit,
        redis_list => RedisListSourceKit,
        redis_pubsub => RedisPubSubSourceKit,
        redis_keyspace => RedisKeyspaceSourceKit,
        amqp => AmqpSourceKit,
    }
}

mod sink {
    use super::*;

    sinks! {
        redis => RedisSinkKit,
        kafka => KafkaSinkKit,
        amqp => AmqpSinkKit,
    }
}
