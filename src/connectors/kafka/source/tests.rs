//! Unit tests of `source.rs`.

use super::*;
use rdkafka::statistics::{Broker, Partition as PartitionStats, Topic};

fn partition(id: i32, desired: bool, lag: i64) -> (i32, PartitionStats) {
    let p = PartitionStats {
        partition: id,
        desired,
        consumer_lag: lag,
        ..PartitionStats::default()
    };
    (id, p)
}

fn broker(nodeid: i32, state: &str) -> (String, Broker) {
    let b = Broker {
        nodeid,
        state: state.to_owned(),
        ..Broker::default()
    };
    (format!("b{nodeid}"), b)
}

#[test]
fn stats_give_the_lag_of_owned_partitions_only() {
    let mut statistics = Statistics::default();
    let topic = Topic {
        partitions: [
            partition(0, true, 12),
            partition(1, false, 40), // not ours (any more)
            partition(2, true, -1),  // lag not known yet
            partition(-1, false, 0), // librdkafka's internal UA partition
            partition(3, true, 0),
        ]
        .into_iter()
        .collect(),
        ..Topic::default()
    };
    statistics.topics.insert("orders".into(), topic);
    let view = StatsView::of(&statistics);
    assert_eq!(view.lags, vec![("orders", 0, 12), ("orders", 3, 0)]);
}

#[test]
fn only_a_real_broker_counts_as_up() {
    let mut statistics = Statistics {
        brokers: [broker(-1, "UP"), broker(1, "DOWN")].into_iter().collect(),
        ..Statistics::default()
    };
    assert!(!StatsView::of(&statistics).broker_up, "a bootstrap entry");
    statistics.brokers.extend([broker(2, "UP")]);
    assert!(StatsView::of(&statistics).broker_up);
}
