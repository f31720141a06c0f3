//! The retail example (examples/retail.toml) end to end: a mixed stream of
//! payment, inventory and web-log events, and what each destination must
//! receive, exactly.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use support::*;

const WAIT: Duration = Duration::from_secs(60);

fn stream(redis: &RedisServer, key: &str) -> Vec<BTreeMap<String, String>> {
    redis
        .xrange(key)
        .iter()
        .map(|e| {
            e.map
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        redis::from_redis_value::<String>(v.clone()).unwrap(),
                    )
                })
                .collect()
        })
        .collect()
}

fn hash(redis: &RedisServer, key: &str) -> BTreeMap<String, String> {
    redis::cmd("HGETALL")
        .arg(key)
        .query(&mut redis.conn())
        .unwrap()
}

fn keys(redis: &RedisServer, pattern: &str) -> Vec<String> {
    let mut k: Vec<String> = redis::cmd("KEYS")
        .arg(pattern)
        .query(&mut redis.conn())
        .unwrap();
    k.sort();
    k
}

#[tokio::test(flavor = "multi_thread")]
async fn every_destination_of_the_retail_example_receives_exactly_its_events() {
    let tansu = TansuServer::start();
    let brokers = tansu.brokers();
    create_topic_at(&brokers, "shop-events", 3).await;
    create_topic_at(&brokers, "inventory.validated", 3).await;
    let redis = RedisServer::start();
    let vhost = RabbitVhost::create();

    let events = [
        (
            "o1",
            r#"{"type":"payment","order_id":"o1","amount":120.5,"status":"paid","email":"ada@example.com"}"#,
        ),
        (
            "o1",
            r#"{"type":"inventory","order_id":"o1","sku":"sku-7","qty":2,"payment":{"id":"p1","status":"paid"}}"#,
        ),
        (
            "o1",
            r#"{"type":"inventory","order_id":"o1","sku":"sku-9","qty":1,"payment":{"id":"p1","status":"paid"}}"#,
        ),
        (
            "o2",
            r#"{"type":"payment","order_id":"o2","amount":35,"status":"declined","email":"bob@example.com"}"#,
        ),
        (
            "o2",
            r#"{"type":"inventory","order_id":"o2","sku":"sku-7","qty":5,"payment":{"id":"p2","status":"declined"}}"#,
        ),
        (
            "o3",
            r#"{"type":"payment","order_id":"o3","amount":9.99,"status":"paid","email":"cy@example.com"}"#,
        ),
        ("s1", r#"{"type":"weblog","session":"s1","path":"/cart"}"#),
        (
            "s2",
            r#"{"type":"weblog","session":"s2","path":"/checkout"}"#,
        ),
    ];
    produce_at(
        &brokers,
        "shop-events",
        events
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())),
    )
    .await;

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/retail.toml");
    let log = tempfile::NamedTempFile::new().unwrap();
    let child = Command::new(ferry_bin())
        .args(["run", example, "--progress-every", "1s"])
        .env("KAFKA_BROKERS", &brokers)
        .env("REDIS_URL", redis.url())
        .env("AMQP_URL", vhost.url())
        .env("FERRY_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    // Killed when the test ends, even when it fails.
    let mut child = KillOnDrop(child);
    let read_log = || std::fs::read_to_string(log.path()).unwrap_or_default();

    wait_until(WAIT, "every destination", || {
        stream(&redis, "crm").len() == 5
            && stream(&redis, "weblog").len() == 2
            && keys(&redis, "inventory:*").len() == 2
            && stream(&redis, "retail:dead-letters").len() == 1
            && keys(&redis, "order:*").len() == 3
    });
    let mut emails = Vec::new();
    for _ in 0..100 {
        emails.extend(vhost.drain("emails").await);
        if emails.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let anything that should not come arrive, then stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    emails.extend(vhost.drain("emails").await);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.0.wait().unwrap().success(), "{}", read_log());

    // The order database: every payment, paid or not.
    assert_eq!(
        keys(&redis, "order:*"),
        ["order:o1", "order:o2", "order:o3"]
    );
    assert_eq!(hash(&redis, "order:o2")["status"], "declined");
    assert_eq!(hash(&redis, "order:o1")["amount"], "120.5");
    // Emails: one per payment.
    let mut emails: Vec<String> = emails
        .into_iter()
        .map(|e| {
            serde_json::from_slice::<serde_json::Value>(&e).unwrap()["email"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    emails.sort();
    assert_eq!(
        emails,
        ["ada@example.com", "bob@example.com", "cy@example.com"]
    );
    // The CRM: the 3 payments, then the 2 inventory events of paid orders.
    let crm = stream(&redis, "crm");
    let kinds: Vec<(&str, &str)> = crm
        .iter()
        .map(|e| (e["type"].as_str(), e["order_id"].as_str()))
        .collect();
    assert_eq!(kinds.iter().filter(|(t, _)| *t == "payment").count(), 3);
    let mut inventory: Vec<&str> = crm
        .iter()
        .filter(|e| e["type"] == "inventory")
        .map(|e| e["sku"].as_str())
        .collect();
    inventory.sort();
    assert_eq!(
        inventory,
        ["sku-7", "sku-9"],
        "only inventory whose payment was validated"
    );
    // The web-log database: web-log events only.
    let weblog = stream(&redis, "weblog");
    assert!(weblog.iter().all(|e| e["type"] == "weblog"));
    // The inventory database: validated inventory only.
    assert_eq!(
        keys(&redis, "inventory:*"),
        ["inventory:o1:sku-7", "inventory:o1:sku-9"]
    );
    assert_eq!(hash(&redis, "inventory:o1:sku-7")["qty"], "2");
    assert_eq!(hash(&redis, "inventory:o1:sku-7")["payment.id"], "p1");
    // The declined order's inventory was set aside with the reason.
    let dead = stream(&redis, "retail:dead-letters");
    assert!(dead[0]["payload"].contains(r#""order_id":"o2""#));
    assert!(dead[0]["header.ferry.error"].contains("no route matched"));
    // The chaining topic holds exactly the validated inventory.
    let validated = read_topic(&brokers, "inventory.validated", 3).await;
    assert_eq!(validated.len(), 2);
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
