//! Redis over TLS and with ACL users, against a private `redis-server`
//! with a TLS port and certificates made by the test (openssl).

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod secure;
mod support;

use std::time::Duration;

use secure::sentinel::{NAME, TlsSentinels};
use secure::{Certs, TlsCluster, TlsRedis, check_connect, ferry};
use support::Ferry;

/// A pipeline of `count` generated orders into `SET order:{id}` on `url`,
/// with the connection settings `access` (TOML lines).
fn sink_config(url: &str, access: &str, count: u64) -> String {
    format!(
        r#"
[[pipeline]]
name = "tls"
source = {{ type = "generate", count = {count} }}
[[pipeline.sink]]
type = "redis"
url = "{url}"
write = "set"
key = "order:{{order_id}}"
{access}
"#
    )
}

fn run(config: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferry.toml");
    std::fs::write(&path, config).unwrap();
    ferry(&["run", path.to_str().unwrap()], env)
}

#[test]
fn a_redis_sink_writes_over_tls_trusting_a_private_ca() {
    let certs = Certs::make();
    let redis = TlsRedis::start(&certs, false);
    let access = format!("tls = {{ ca = \"{}\" }}", certs.path("ca.pem"));
    let (code, _, stderr) = run(&sink_config(&redis.tls_url(), &access, 20), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(redis.get("order:20").is_some(), "{stderr}");
}

#[test]
fn mutual_tls_needs_the_client_certificate() {
    let certs = Certs::make();
    let redis = TlsRedis::start(&certs, true);
    let with_cert = format!(
        "tls = {{ ca = \"{}\", cert = \"{}\", key = \"{}\" }}",
        certs.path("ca.pem"),
        certs.path("client.pem"),
        certs.path("client.key")
    );
    let (code, _, stderr) = run(&sink_config(&redis.tls_url(), &with_cert, 5), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(redis.get("order:5").is_some());

    // Without one, the dry run says what to add.
    let dir = tempfile::tempdir().unwrap();
    let without = format!("tls = {{ ca = \"{}\" }}", certs.path("ca.pem"));
    let (code, stdout, _) = check_connect(dir.path(), &sink_config(&redis.tls_url(), &without, 5));
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("FAILED: pipeline `tls` sink"), "{stdout}");
}

#[test]
fn a_server_signed_by_an_unknown_ca_is_refused_once_with_the_fix() {
    let certs = Certs::make();
    let redis = TlsRedis::start(&certs, false);
    let access = format!("tls = {{ ca = \"{}\" }}", certs.path("other-ca.pem"));
    let config = sink_config(&redis.tls_url(), &access, 5);
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, _) = check_connect(dir.path(), &config);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("UnknownIssuer"), "{stdout}");
    assert!(
        stdout.contains(
            "fix: the server's TLS certificate is not signed by a CA ferry trusts: set `tls.ca`"
        ),
        "{stdout}"
    );

    // The pipeline stops instead of retrying forever, and says why.
    let started = std::time::Instant::now();
    let (code, _, stderr) = run(&config, &[]);
    assert!(code > 0, "exit {code}: {stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "gave up in {:?}",
        started.elapsed()
    );
    assert!(
        stderr.contains("fix: the server's TLS certificate is not signed"),
        "{stderr}"
    );
    assert_eq!(redis.get("order:1"), None);
}

#[test]
fn plaintext_to_the_tls_port_and_tls_to_the_plaintext_port_are_told_apart() {
    let certs = Certs::make();
    let redis = TlsRedis::start(&certs, false);
    let dir = tempfile::tempdir().unwrap();
    let tls_to_plain = sink_config(
        &format!("rediss://127.0.0.1:{}", redis.port),
        &format!("tls = {{ ca = \"{}\" }}", certs.path("ca.pem")),
        1,
    );
    let (code, stdout, _) = check_connect(dir.path(), &tls_to_plain);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("no answer to the TLS handshake"),
        "{stdout}"
    );
    assert!(stdout.contains("TLS port (tls-port)"), "{stdout}");
    let plain_to_tls = sink_config(&format!("redis://127.0.0.1:{}", redis.tls_port), "", 1);
    let (code, stdout, _) = check_connect(dir.path(), &plain_to_tls);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("FAIL"), "{stdout}");
}

#[test]
fn an_acl_user_with_the_pipelines_commands_passes_and_one_without_is_named() {
    let certs = Certs::make();
    let redis = TlsRedis::start(&certs, false);
    redis.acl_user(
        "writer",
        "w-pass",
        &[
            "~order:*", "+set", "+ping", "+multi", "+discard", "+hello", "+client",
        ],
    );
    redis.acl_user(
        "reader",
        "r-pass",
        &[
            "~order:*", "+get", "+ping", "+multi", "+discard", "+hello", "+client",
        ],
    );
    let access = |user: &str| {
        format!(
            "username = \"{user}\"\npassword = \"${{REDIS_PASSWORD}}\"\ntls = {{ ca = \"{}\" }}",
            certs.path("ca.pem")
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let write = |user: &str| sink_config(&redis.tls_url(), &access(user), 10);
    let path = dir.path().join("w.toml");
    std::fs::write(&path, write("writer")).unwrap();
    let (code, stdout, stderr) = ferry(
        &["check", "--connect", path.to_str().unwrap()],
        &[("REDIS_PASSWORD", "w-pass")],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("as ACL user `writer`"), "{stdout}");
    assert!(
        stdout.contains("the user may run what this part sends: SET order:ferry-check"),
        "{stdout}"
    );
    let (code, _, stderr) = run(&write("writer"), &[("REDIS_PASSWORD", "w-pass")]);
    assert_eq!(code, 0, "{stderr}");
    assert!(redis.get("order:10").is_some());

    std::fs::write(&path, write("reader")).unwrap();
    let (code, stdout, _) = ferry(
        &["check", "--connect", path.to_str().unwrap()],
        &[("REDIS_PASSWORD", "r-pass")],
    );
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("the user may not run: SET order:ferry-check"),
        "{stdout}"
    );
    assert!(stdout.contains("ACL SETUSER"), "{stdout}");
    assert_eq!(
        redis.get("order:ferry-check"),
        None,
        "the dry run wrote nothing"
    );

    // Running it anyway stops at the first write with the same advice.
    let (code, _, stderr) = run(&write("reader"), &[("REDIS_PASSWORD", "r-pass")]);
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains("no permissions to run the 'set' command"),
        "{stderr}"
    );
    assert!(stderr.contains("fix: the user is not allowed"), "{stderr}");

    // And a wrong password is said to be one.
    std::fs::write(&path, write("writer")).unwrap();
    let (code, stdout, _) = ferry(
        &["check", "--connect", path.to_str().unwrap()],
        &[("REDIS_PASSWORD", "wrong")],
    );
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("fix: wrong user name or password"),
        "{stdout}"
    );
}

/// A server whose certificate names it `redis.test` only (neither
/// 127.0.0.1 nor localhost).
fn named_server() -> (Certs, TlsRedis) {
    let certs = Certs::make();
    certs.server_named("named", "redis.test");
    let redis = TlsRedis::start_as(&certs, "named", false);
    (certs, redis)
}

/// The `tls` table trusting the test CA, under `server_name` if given.
fn tls(certs: &Certs, server_name: Option<&str>) -> String {
    let name = server_name.map_or(String::new(), |n| format!(", server_name = \"{n}\""));
    format!("tls = {{ ca = \"{}\"{name} }}", certs.path("ca.pem"))
}

#[test]
fn a_certificate_for_another_name_is_refused_unless_server_name_names_it() {
    let (certs, redis) = named_server();
    let dir = tempfile::tempdir().unwrap();

    // rediss://127.0.0.1: the certificate does not carry 127.0.0.1.
    let config = sink_config(&redis.tls_url(), &tls(&certs, None), 5);
    let (code, stdout, _) = check_connect(dir.path(), &config);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("not valid for name"), "{stdout}");
    assert!(
        stdout.contains("fix: the server's TLS certificate does not carry"),
        "{stdout}"
    );
    let (code, _, stderr) = run(&config, &[]);
    assert!(code > 0, "exit {code}: {stderr}");
    assert!(stderr.contains("does not carry"), "{stderr}");
    assert_eq!(redis.get("order:1"), None);

    // The same address under the name it carries: checked, and written.
    let config = sink_config(&redis.tls_url(), &tls(&certs, Some("redis.test")), 20);
    let (code, stdout, _) = check_connect(dir.path(), &config);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("connected with TLS"), "{stdout}");
    let (code, _, stderr) = run(&config, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(redis.get("order:20").is_some(), "{stderr}");

    // A name the certificate does not carry is refused like an address.
    let config = sink_config(&redis.tls_url(), &tls(&certs, Some("other.test")), 1);
    let (code, stdout, _) = check_connect(dir.path(), &config);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("not valid for name"), "{stdout}");
}

#[test]
fn stream_pubsub_and_keyspace_sources_reach_the_server_by_its_name() {
    let (certs, redis) = named_server();
    let (url, tls) = (redis.tls_url(), tls(&certs, Some("redis.test")));
    let sink = |list: &str| {
        format!(
            "[[pipeline.sink]]\ntype = \"redis\"\nurl = \"{url}\"\nwrite = \"rpush\"\nkey = \"{list}\"\n{tls}\n"
        )
    };
    let source = |fields: &str| format!("source = {{ url = \"{url}\", {tls}, {fields} }}");
    let config = format!(
        "[[pipeline]]\nname = \"stream\"\n{}\n{}\n\
         [[pipeline]]\nname = \"pubsub\"\n{}\n{}\n\
         [[pipeline]]\nname = \"keyspace\"\n{}\n{}",
        source(r#"type = "redis-stream", streams = ["orders"], group = "g", block = "200ms""#),
        sink("copied"),
        source(r#"type = "redis-pubsub", channels = ["news"]"#),
        sink("heard"),
        source(
            r#"type = "redis-keyspace", pattern = "watched:*", snapshot = false, configure_notifications = true"#
        ),
        sink("changed"),
    );
    let mut running = Ferry::start(&config);
    let mut admin = redis.admin();
    let len = |admin: &mut redis::Connection, list: &str| -> u64 {
        redis::cmd("LLEN").arg(list).query(admin).unwrap()
    };
    let _: String = redis::cmd("XADD")
        .arg("orders")
        .arg("*")
        .arg("payload")
        .arg(ferry::connectors::generate::order(1))
        .query(&mut admin)
        .unwrap();
    // Pub/sub and notifications are heard once subscribed: sent until heard.
    let started = std::time::Instant::now();
    let delivered = loop {
        let _: u64 = redis::cmd("PUBLISH")
            .arg("news")
            .arg("hello")
            .query(&mut admin)
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg("watched:1")
            .arg("v")
            .query(&mut admin)
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let lists = ["copied", "heard", "changed"].map(|list| len(&mut admin, list));
        if lists.iter().all(|&n| n > 0) || started.elapsed() > Duration::from_secs(30) {
            break lists;
        }
    };
    assert!(
        delivered.iter().all(|&n| n > 0),
        "copied, heard, changed: {delivered:?}\n{}",
        running.log()
    );
    running.stop(Duration::from_secs(10));
}

#[test]
fn on_a_cluster_server_name_names_the_node_in_the_url() {
    let certs = Certs::make();
    certs.server_named("named", "redis.test");
    // The node in url carries the name only; the others their address.
    let cluster = TlsCluster::start(&certs, &["named", "server", "server"]);
    let url = cluster.nodes[0].tls_url();
    let config = |tls: &str| sink_config(&url, &format!("cluster = true\n{tls}"), 30);
    let (code, _, stderr) = run(&config(&tls(&certs, None)), &[]);
    assert!(code > 0, "exit {code}: {stderr}");
    assert!(stderr.contains("does not carry"), "{stderr}");
    let named = tls(&certs, Some("redis.test"));
    let (code, _, stderr) = run(&config(&named), &[]);
    assert_eq!(code, 0, "{stderr}");
    let sizes = cluster.dbsizes();
    assert_eq!(sizes.iter().sum::<u64>(), 30, "{sizes:?}");
    assert!(
        sizes.iter().all(|&n| n > 0),
        "every node written: {sizes:?}"
    );

    // Keyspace notifications are heard on every primary, the renamed one
    // among them: changes of keys on the node in url arrive.
    let source = format!(
        "source = {{ type = \"redis-keyspace\", url = \"{url}\", cluster = true, {named}, \
         pattern = \"watched:*\", snapshot = false, configure_notifications = true }}"
    );
    let config = format!(
        "[[pipeline]]\nname = \"keyspace\"\n{source}\n[[pipeline.sink]]\ntype = \"redis\"\n\
         url = \"{url}\"\ncluster = true\nwrite = \"rpush\"\nkey = \"changed\"\n{named}\n"
    );
    let mut running = Ferry::start(&config);
    let mut first = cluster.nodes[0].admin();
    let started = std::time::Instant::now();
    let heard = loop {
        // Keys the node in url holds (the others answer MOVED).
        for i in 0..20 {
            let _ = redis::cmd("SET")
                .arg(format!("watched:{i}"))
                .arg("v")
                .query::<()>(&mut first);
        }
        std::thread::sleep(Duration::from_millis(300));
        let heard: u64 = cluster
            .nodes
            .iter()
            // The nodes that do not hold the list answer MOVED.
            .map(|n| {
                redis::cmd("LLEN")
                    .arg("changed")
                    .query::<u64>(&mut n.admin())
                    .unwrap_or(0)
            })
            .sum();
        if heard > 0 || started.elapsed() > Duration::from_secs(30) {
            break heard;
        }
    };
    assert!(heard > 0, "{}", running.log());
    running.stop(Duration::from_secs(10));
}

/// A sink writing `{prefix}:{order_id}` to the primary that the sentinels
/// `nodes` name, with the `tls` table `tls`.
fn sentinel_sink(nodes: &str, tls: &str, prefix: &str, count: u64) -> String {
    let access = format!("sentinel = {{ primary = \"{NAME}\", nodes = {nodes} }}\n{tls}");
    sink_config(&format!("rediss://{NAME}/0"), &access, count)
        .replace("key = \"order:", &format!("key = \"{prefix}:"))
}

/// The test CA and the client certificate.
fn mutual_tls(certs: &Certs, ca: bool) -> String {
    let ca = match ca {
        true => format!("ca = \"{}\", ", certs.path("ca.pem")),
        false => String::new(),
    };
    format!(
        "tls = {{ {ca}cert = \"{}\", key = \"{}\" }}",
        certs.path("client.pem"),
        certs.path("client.key")
    )
}

#[test]
fn under_sentinel_the_tls_files_reach_the_sentinels_and_the_servers_they_name() {
    let certs = Certs::make();
    let set = TlsSentinels::start(&certs);
    let tls = mutual_tls(&certs, true);
    let dir = tempfile::tempdir().unwrap();

    // Sentinels with TLS, as the servers they name.
    let config = sentinel_sink(&set.nodes(true), &tls, "a", 20);
    let (code, stdout, _) = check_connect(dir.path(), &config);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("connected with TLS"), "{stdout}");
    let (code, _, stderr) = run(&config, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(set.primary.get("a:20").is_some(), "{stderr}");

    // Sentinels without TLS in front of servers with it.
    let config = sentinel_sink(&set.nodes(false), &tls, "b", 20);
    let (code, _, stderr) = run(&config, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(set.primary.get("b:20").is_some(), "{stderr}");

    // After a failover the new primary (the replica) is reached with the
    // same files.
    set.fail_over();
    let config = sentinel_sink(&set.nodes(true), &tls, "c", 20);
    let (code, _, stderr) = run(&config, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(set.replica.get("c:20").is_some(), "{stderr}");
}

#[test]
fn under_sentinel_servers_signed_by_an_unknown_ca_are_refused_with_the_fix() {
    let certs = Certs::make();
    let set = TlsSentinels::start(&certs);
    // The client certificate, but the system's CAs.
    let tls = mutual_tls(&certs, false);
    let dir = tempfile::tempdir().unwrap();
    for sentinels_with_tls in [true, false] {
        let config = sentinel_sink(&set.nodes(sentinels_with_tls), &tls, "x", 5);
        let (code, stdout, _) = check_connect(dir.path(), &config);
        assert_eq!(code, 1, "{stdout}");
        assert!(stdout.contains("UnknownIssuer"), "{stdout}");
        assert!(
            stdout.contains("fix: the server's TLS certificate is not signed by a CA ferry trusts"),
            "{stdout}"
        );
        let started = std::time::Instant::now();
        let (code, _, stderr) = run(&config, &[]);
        assert!(code > 0, "exit {code}: {stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "gave up in {:?}",
            started.elapsed()
        );
        assert!(
            stderr.contains("fix: the server's TLS certificate is not signed"),
            "{stderr}"
        );
    }
    assert_eq!(set.primary.get("x:1"), None);
}
