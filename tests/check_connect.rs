//! `ferry check --connect`: a good config passes part by part; each kind of
//! broken one fails with the part named and the fix, and exits non-zero.
//! RabbitMQ is the shared node (a vhost of the test's own; a wrong password
//! only fails a login), Redis and Kafka are private servers.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod secure;
mod support;

use secure::check_connect;
use support::topology::RedisCluster;
use support::{RabbitVhost, RedisServer, TansuServer};

fn pipeline(source: &str, sink: &str) -> String {
    format!("[[pipeline]]\nname = \"p\"\nsource = {source}\n[[pipeline.sink]]\n{sink}\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_good_config_passes_every_part_and_writes_nothing() {
    let kafka = TansuServer::start();
    support::create_topic_at(&kafka.brokers(), "orders", 3).await;
    let redis = RedisServer::start();
    let vhost = RabbitVhost::create();
    vhost.declare_queue("out").await;
    let config = pipeline(
        &format!(
            "{{ type = \"kafka\", brokers = \"{}\", topics = [\"orders\"], group = \"g\" }}",
            kafka.brokers()
        ),
        &format!(
            "type = \"redis\"\nurl = \"{}\"\nwrite = \"set\"\nkey = \"order:{{order_id}}\"\n\
             [[pipeline.sink]]\ntype = \"amqp\"\nurl = \"{}\"\nrouting_key = \"out\"",
            redis.url(),
            vhost.url()
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = check_connect(dir.path(), &config);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("topic `orders`: 3 partitions"), "{stdout}");
    assert!(stdout.contains("consumer group `g`: readable"), "{stdout}");
    assert!(stdout.contains("queue `out` exists"), "{stdout}");
    assert!(stdout.contains("3 parts checked, 0 failed"), "{stdout}");
    assert!(
        stdout.contains("amqp://guest:<redacted>@127.0.0.1"),
        "{stdout}"
    );
    assert_eq!(redis.dbsize(), 0, "nothing written");
    assert_eq!(
        support::committed_at(&kafka.brokers(), "g", "orders", 3),
        vec![-1, -1, -1],
        "nothing committed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_rabbitmq_password_and_a_missing_queue_fail_with_their_fixes() {
    let vhost = RabbitVhost::create();
    let wrong = vhost
        .url()
        .replace("guest:guest@", "guest:not-the-password@");
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(
        &format!("{{ type = \"amqp\", url = \"{wrong}\", queue = \"in\" }}"),
        &format!(
            "type = \"amqp\"\nurl = \"{}\"\nrouting_key = \"missing\"",
            vhost.url()
        ),
    );
    let (code, stdout, _) = check_connect(dir.path(), &config);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("FAILED: pipeline `p` source (amqp queue `in`)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("fix: RabbitMQ refused the login"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAILED: pipeline `p` sink (amqp queue missing)"),
        "{stdout}"
    );
    assert!(stdout.contains("add it to `declare.queues`"), "{stdout}");
    assert!(!stdout.contains("not-the-password"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_topic_group_and_keyspace_notifications_are_each_reported() {
    let kafka = TansuServer::start();
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}{}",
        pipeline(
            &format!(
                "{{ type = \"kafka\", brokers = \"{}\", topics = [\"absent\"], group = \"g\" }}",
                kafka.brokers()
            ),
            &format!(
                "type = \"redis\"\nurl = \"{}\"\nwrite = \"set\"\nkey = \"k\"",
                redis.url()
            ),
        ),
        pipeline(
            &format!(
                "{{ type = \"redis-keyspace\", url = \"{}\", pattern = \"user:*\" }}",
                redis.url()
            ),
            &format!(
                "type = \"kafka\"\nbrokers = \"{}\"\ntopic = \"also-absent\"",
                kafka.brokers()
            ),
        )
        .replace("name = \"p\"", "name = \"q\""),
    );
    let (code, stdout, stderr) = check_connect(dir.path(), &config);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("topic `absent` does not exist"), "{stdout}");
    assert!(
        stdout.contains("topic `also-absent` does not exist"),
        "{stdout}"
    );
    assert!(stdout.contains("create_topic"), "{stdout}");
    assert!(stdout.contains("no keyspace notifications"), "{stdout}");
    assert!(
        stdout.contains("CONFIG SET notify-keyspace-events KA"),
        "{stdout}"
    );
    assert!(stdout.contains("4 parts checked, 3 failed"), "{stdout}");
}

/// `ACL SETUSER name on >password rules...` on every node of `cluster`: a
/// cluster keeps its users per node.
fn cluster_user(cluster: &RedisCluster, name: &str, password: &str, rules: &[&str]) {
    for node in &cluster.nodes {
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER")
            .arg(name)
            .arg("on")
            .arg(format!(">{password}"));
        for r in rules {
            cmd.arg(*r);
        }
        cmd.query::<()>(&mut node.conn()).unwrap();
    }
}

#[test]
fn on_a_cluster_each_probe_goes_to_the_node_of_its_key_and_a_missing_right_is_named() {
    let cluster = RedisCluster::start();
    let other = RedisServer::start();
    let url = cluster.url();
    // The sample keys of these parts live on different primaries; the node
    // in `url` answers the others with MOVED.
    let good = format!(
        "{}{}",
        pipeline(
            &format!(
                "{{ type = \"redis-stream\", url = \"{url}\", cluster = true, streams = [\"orders\"], group = \"g\", create_group = true }}"
            ),
            &format!(
                "type = \"redis\"\nurl = \"{url}\"\ncluster = true\nwrite = \"set\"\nkey = \"order:{{order_id}}\""
            ),
        ),
        pipeline(
            &format!(
                "{{ type = \"redis-keyspace\", url = \"{url}\", cluster = true, pattern = \"user:*\", configure_notifications = true }}"
            ),
            &format!(
                "type = \"redis\"\nurl = \"{}\"\nwrite = \"hset\"\nkey = \"customer:{{customer_id}}\"",
                other.url()
            ),
        )
        .replace("name = \"p\"", "name = \"q\""),
    );
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = check_connect(dir.path(), &good);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(!stdout.contains("MOVED"), "{stdout}");
    assert!(
        stdout.contains("the user may run what this part sends: SET order:ferry-check"),
        "{stdout}"
    );
    assert!(stdout.contains("`orders` does not exist yet"), "{stdout}");
    // Each primary is asked for its notifications.
    assert_eq!(
        stdout.matches("notify-keyspace-events is").count(),
        3,
        "{stdout}"
    );
    assert!(stdout.contains("4 parts checked, 0 failed"), "{stdout}");
    assert_eq!(cluster.dbsize(), 0, "nothing written");

    // An ACL user with the sink's write passes; one without it fails, for
    // the right reason.
    let common = [
        "~order:*",
        "+ping",
        "+multi",
        "+discard",
        "+hello",
        "+client",
        "+cluster|slots",
    ];
    cluster_user(
        &cluster,
        "writer",
        "w-pass",
        &[&common[..], &["+set"]].concat(),
    );
    cluster_user(
        &cluster,
        "reader",
        "r-pass",
        &[&common[..], &["+get"]].concat(),
    );
    let sink = |user: &str| {
        pipeline(
            "{ type = \"generate\" }",
            &format!(
                "type = \"redis\"\nurl = \"{url}\"\ncluster = true\nusername = \"{user}\"\npassword = \"pw-{user}\"\nwrite = \"set\"\nkey = \"order:{{order_id}}\""
            ),
        )
    };
    let (code, stdout, stderr) =
        check_connect(dir.path(), &sink("writer").replace("pw-writer", "w-pass"));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, stdout, _) =
        check_connect(dir.path(), &sink("reader").replace("pw-reader", "r-pass"));
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("the user may not run: SET order:ferry-check (")
            && stdout.contains("no permissions to run the 'set' command"),
        "{stdout}"
    );
    assert!(!stdout.contains("MOVED"), "{stdout}");

    // Without `cluster = true`, the node in `url` keeps other keys
    // elsewhere: said as such, not as a refusal.
    let (code, stdout, _) = check_connect(
        dir.path(),
        &pipeline(
            "{ type = \"generate\" }",
            &format!(
                "type = \"redis\"\nurl = \"{url}\"\nwrite = \"set\"\nkey = \"order:{{order_id}}\""
            ),
        ),
    );
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("is a Redis Cluster node"), "{stdout}");
    assert!(stdout.contains("set `cluster = true`"), "{stdout}");
    assert!(!stdout.contains("may not run"), "{stdout}");
}
