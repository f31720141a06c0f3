//! Unit tests of `reconcile.rs`.

use super::*;
use bytes::Bytes;

#[test]
fn sides_are_named_by_url() {
    assert_eq!(
        Side::parse("kafka://127.0.0.1:9092,b:9092/ORDER").unwrap(),
        Side::Kafka {
            brokers: "127.0.0.1:9092,b:9092".into(),
            topic: "ORDER".into()
        }
    );
    assert_eq!(
        Side::parse("redis://127.0.0.1:6379/2?keys=order:*&protocol=resp3").unwrap(),
        Side::Keys {
            url: "redis://127.0.0.1:6379/2?protocol=resp3".into(),
            pattern: "order:*".into()
        }
    );
    assert_eq!(
        Side::parse("redis://h/0?stream=orders").unwrap(),
        Side::Stream {
            url: "redis://h/0".into(),
            stream: "orders".into()
        }
    );
    assert_eq!(
        Side::parse("file:dump.jsonl").unwrap(),
        Side::File {
            path: "dump.jsonl".into()
        }
    );
    assert!(Side::parse("redis://h/0").unwrap_err().contains("?keys="));
    assert!(
        Side::parse("kafka://h")
            .unwrap_err()
            .contains("BROKERS/TOPIC")
    );
    assert!(Side::parse("amqp://h/q").unwrap_err().contains("file:PATH"));
}

fn extract(key: &str, normalize: Option<&str>) -> Extract {
    Extract {
        key: Jq::compile(key).unwrap(),
        normalize: normalize.map(|n| Jq::compile(n).unwrap()),
    }
}

#[test]
fn keys_come_from_jq_or_the_message_key_and_values_are_normalised() {
    let mut m = Message::from_payload(r#"{"id":7,"status":"paid","at":123}"#);
    m.key = Some(Bytes::from("o7"));
    assert_eq!(
        extract("$key", None).apply(&m).unwrap(),
        (
            Some("o7".into()),
            r#"{"at":123,"id":7,"status":"paid"}"#.into()
        )
    );
    assert_eq!(
        extract(".id", Some("del(.at)")).apply(&m).unwrap(),
        (Some("7".into()), r#"{"id":7,"status":"paid"}"#.into())
    );
    assert_eq!(extract(".missing", None).apply(&m).unwrap().0, None);
    let text = Message::from_payload("not json");
    assert_eq!(
        extract(".", None).apply(&text).unwrap(),
        (Some("not json".into()), "\"not json\"".into())
    );
}

#[test]
fn the_summary_says_whether_the_sides_agree_and_shows_the_differences() {
    let report = Report {
        different: 1,
        examples_different: vec![Different {
            key: "o5".into(),
            differences: diff::differences(
                &serde_json::json!({"status": "paid"}),
                &serde_json::json!({"status": "refunded"}),
                10,
            ),
        }],
        missing_on_right: 1,
        examples_missing_on_right: vec!["o9".into()],
        memory_rows: 10,
        ..Report::default()
    };
    let s = summary(&report);
    assert!(s.contains("missing on the right (first 1): o9"), "{s}");
    assert!(
        s.contains("  o5\n    .status: left \"paid\", right \"refunded\""),
        "{s}"
    );
    assert!(
        s.contains("the sides differ (at most 10 rows in memory per side"),
        "{s}"
    );
}
