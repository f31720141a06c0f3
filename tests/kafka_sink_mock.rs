//! What tansu cannot do (snappy batches, several brokers) is checked against
//! librdkafka's in-process mock cluster, through ferry's own Kafka sink.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

use std::collections::HashMap;
use std::time::Duration;

use ferry::connectors::Sink;
use ferry::connectors::kafka::{KafkaSink, KafkaSinkConfig};
use ferry::message::{Headers, Message};
use futures::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers as _;
use rdkafka::mocking::MockCluster;

fn order(codec: &str, n: u64) -> Message {
    Message {
        key: Some(format!("customer-{}", n % 7).into()),
        headers: [("codec", codec.to_owned()), ("trace", "t-1".to_owned())]
            .into_iter()
            .collect::<Headers>(),
        timestamp: Some(1_700_000_000_000 + n as i64),
        ..Message::from_payload(format!(
            r#"{{"order_id":{n},"codec":"{codec}","pad":"{}"}}"#,
            "x".repeat(200)
        ))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_compression_codec_reaches_a_three_broker_cluster_with_keys_headers_and_timestamps() {
    let cluster = MockCluster::new(3).unwrap();
    cluster.create_topic("orders", 4, 3).unwrap();
    let brokers = cluster.bootstrap_servers();
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    for codec in codecs {
        let config: KafkaSinkConfig = toml::from_str(&format!(
            "brokers = \"{brokers}\"\ntopic = \"orders\"\ncompression = \"{codec}\""
        ))
        .unwrap();
        let mut sink = KafkaSink::open(
            "mock",
            &config,
            &ferry::observe::Probe::detached("mock", "sink"),
        )
        .await
        .unwrap();
        let batch: Vec<_> = (0..100)
            .map(|n| sink.prepare(&order(codec, n)).unwrap())
            .collect();
        let results = sink.write(batch.into()).await.unwrap();
        assert!(results.iter().all(Result::is_ok), "{codec}: {results:?}");
    }

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "check")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["orders"]).unwrap();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut partition_of_key: HashMap<Vec<u8>, i32> = HashMap::new();
    let mut stream = consumer.stream();
    while seen.values().sum::<usize>() < 500 {
        let record = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("records arrive")
            .unwrap()
            .unwrap();
        use rdkafka::Message as _;
        let payload: serde_json::Value = serde_json::from_slice(record.payload().unwrap()).unwrap();
        let codec = payload["codec"].as_str().unwrap().to_owned();
        let headers = record.headers().unwrap();
        let header = |name: &str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(header("codec").as_deref(), Some(codec.as_str()));
        assert_eq!(header("trace").as_deref(), Some("t-1"));
        let n = payload["order_id"].as_i64().unwrap();
        assert_eq!(record.timestamp().to_millis(), Some(1_700_000_000_000 + n));
        let key = record.key().unwrap().to_vec();
        let p = *partition_of_key
            .entry(key.clone())
            .or_insert(record.partition());
        assert_eq!(p, record.partition(), "one key, one partition");
        *seen.entry(codec).or_default() += 1;
    }
    for codec in codecs {
        assert_eq!(seen.get(codec), Some(&100), "{codec}");
    }
}
