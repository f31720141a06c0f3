//! The conformance suite: every source and every sink, against its real
//! system, through a proxy that injects network faults.
//!
//! Each guarantee is one named scenario (sources.rs, sinks.rs), written
//! once. Each kit (kits.rs) opts into the scenarios its connector promises,
//! below: a test exists only where the promise does, so a kit never
//! "passes" a scenario by skipping it (an at-most-once source has no crash
//! scenario to pass). Scenarios that need more than a kit (several
//! consumers in a group) ask for it in their signature, so opting a kit in
//! that cannot do it does not compile.
//!
//! A new connector gets the suite by writing a kit and one line below.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]
#![allow(async_fn_in_trait)]

#[path = "../support/mod.rs"]
mod support;

mod common;
mod kits;
mod sink_kits;
mod sinks;
mod sources;

use kits::*;
use sink_kits::*;

/// `name => Kit: [scenario, ...]`: one test module per kit, one test per
/// scenario it opts into, named after the scenario.
macro_rules! sources {
    ($($name:ident => $kit:ty: [$($scenario:ident),* $(,)?]),* $(,)?) => {$(
        mod $name {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $scenario() {
                    sources::$scenario::<$kit>(stringify!($name)).await;
                }
            )*
        }
    )*};
}

macro_rules! sinks {
    ($($name:ident => $kit:ty: [$($scenario:ident),* $(,)?]),* $(,)?) => {$(
        mod $name {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $scenario() {
                    sinks::$scenario::<$kit>(stringify!($name)).await;
                }
            )*
        }
    )*};
}

mod source {
    use super::*;

    sources! {
        // At least once: everything survives crashes, restarts and cuts;
        // acknowledgements never run ahead of confirmations.
        kafka => KafkaSourceKit: [
            delivers_and_acknowledges,
            resumes_after_a_graceful_restart_without_loss,
            resumes_after_a_crash_without_loss,
            sends_invalid_input_to_the_dead_letter_sink,
            survives_a_broker_restart,
            survives_connection_cuts_mid_read,
            is_ready_again_once_a_read_works,
            never_acknowledges_past_an_unconfirmed_message,
            several_consumers_in_one_group,
        ],
        redis_stream => RedisStreamSourceKit: [
            delivers_and_acknowledges,
            resumes_after_a_graceful_restart_without_loss,
            resumes_after_a_crash_without_loss,
            sends_invalid_input_to_the_dead_letter_sink,
            survives_a_broker_restart,
            survives_connection_cuts_mid_read,
            is_ready_again_once_a_read_works,
            never_acknowledges_past_an_unconfirmed_message,
            several_consumers_in_one_group,
        ],
        redis_list => RedisListSourceKit: [
            delivers_and_acknowledges,
            resumes_after_a_graceful_restart_without_loss,
            resumes_after_a_crash_without_loss,
            sends_invalid_input_to_the_dead_letter_sink,
            survives_a_broker_restart,
            survives_connection_cuts_mid_read,
            is_ready_again_once_a_read_works,
            never_acknowledges_past_an_unconfirmed_message,
        ],
        amqp => AmqpSourceKit: [
            delivers_and_acknowledges,
            resumes_after_a_graceful_restart_without_loss,
            resumes_after_a_crash_without_loss,
            sends_invalid_input_to_the_dead_letter_sink,
            survives_a_broker_restart,
            survives_connection_cuts_mid_read,
            is_ready_again_once_a_read_works,
            never_acknowledges_past_an_unconfirmed_message,
            several_consumers_in_one_group,
        ],
        // The latest value of every key: a restart scans again, so nothing
        // is missed; there is nothing to acknowledge.
        redis_keyspace => RedisKeyspaceSourceKit: [
            delivers_and_acknowledges,
            resumes_after_a_graceful_restart_without_loss,
            resumes_after_a_crash_without_loss,
            sends_invalid_input_to_the_dead_letter_sink,
            survives_a_broker_restart,
            survives_connection_cuts_mid_read,
            is_ready_again_once_a_read_works,
        ],
        // At most once: what is published while ferry is not subscribed is
        // lost by nature, so no restart or crash scenario.
        redis_pubsub => RedisPubSubSourceKit: [
            delivers_and_acknowledges,
            sends_invalid_input_to_the_dead_letter_sink,
            survives_a_broker_restart,
            survives_connection_cuts_mid_read,
            is_ready_again_once_a_read_works,
        ],
    }
}

mod sink {
    use super::*;

    sinks! {
        redis => RedisSinkKit: [
            receives_every_message,
            sends_invalid_input_to_the_dead_letter_sink,
            survives_a_broker_restart,
            survives_connection_cuts_mid_write,
        ],
        kafka => KafkaSinkKit: [
            receives_every_message,
            sends_invalid_input_to_the_dead_letter_sink,
            survives_a_broker_restart,
            survives_connection_cuts_mid_write,
        ],
        amqp => AmqpSinkKit: [
            receives_every_message,
            sends_invalid_input_to_the_dead_letter_sink,
            survives_a_broker_restart,
            survives_connection_cuts_mid_write,
        ],
    }
}
