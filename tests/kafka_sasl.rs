//! Kafka SASL PLAIN and OAUTHBEARER against a broker that checks them:
//! tansu behind the test SASL gate (tests/secure/sasl_gate.rs), which
//! does the logins tansu 0.6.0 cannot check and forwards everything else.
//! Every client connection, ferry's and the test's own, goes through the
//! gate, so a whole `ferry run` only works with a login the gate accepted.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod secure;
mod support;

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secure::{Certs, Credentials, GatedKafka, TokenEndpoint, ferry};
use support::{Ferry, RedisServer, wait_until};

fn sink_config(brokers: &str, access: &str) -> String {
    format!(
        r#"
[[pipeline]]
name = "to-kafka"
source = {{ type = "generate", count = 20 }}
[[pipeline.sink]]
type = "kafka"
brokers = "{brokers}"
topic = "orders"
create_topic = {{ partitions = 2 }}
{access}
"#
    )
}

/// Kafka -> Redis; `until`: `until = "end"` to stop at the end offsets.
fn source_config(brokers: &str, access: &str, redis: &str, until: &str) -> String {
    format!(
        r#"
[[pipeline]]
name = "from-kafka"
[pipeline.source]
type = "kafka"
brokers = "{brokers}"
topics = ["orders"]
group = "ferry-orders"
{until}
{access}
[[pipeline.sink]]
type = "redis"
url = "{redis}"
write = "set"
key = "order:{{order_id}}"
"#
    )
}

/// `ferry ARGS... FILE` with `config` written to FILE in `dir`.
fn ferry_on(
    dir: &Path,
    args: &[&str],
    config: &str,
    env: &[(&str, &str)],
) -> (i32, String, String) {
    let path = dir.join(format!("{}.toml", args.join("-").replace("--", "")));
    std::fs::write(&path, config).unwrap();
    let mut all = args.to_vec();
    all.push(path.to_str().unwrap());
    ferry(&all, env)
}

fn run(dir: &Path, config: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    ferry_on(dir, &["run"], config, env)
}

fn check_connect(dir: &Path, config: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    ferry_on(dir, &["check", "--connect"], config, env)
}

/// The PLAIN login the test's own client uses where ferry logs in with a
/// token: ferry cannot create topics with a token of its own.
const ADMIN: (&str, &str) = ("admin", "admin-pass");

/// Creates `topic` through the gate, logged in as [`ADMIN`].
fn create_topic(kafka: &GatedKafka, topic: &str, partitions: usize) {
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("bootstrap.servers", kafka.brokers())
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanism", "PLAIN")
        .set("sasl.username", ADMIN.0)
        .set("sasl.password", ADMIN.1);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(ferry::connectors::kafka::admin::create_topic(
            &config, topic, partitions, 1,
        ))
        .unwrap();
}

fn with_admin(tokens: Vec<String>) -> Credentials {
    Credentials {
        plain: Some((ADMIN.0.to_owned(), ADMIN.1.to_owned())),
        tokens,
    }
}

/// A JWT with these claims (nothing checks its signature: the gate compares
/// the whole token, ferry reads `exp` and `sub`).
fn jwt(claims: &str) -> String {
    format!(
        "eyJhbGciOiJSUzI1NiJ9.{}.c2lnbmF0dXJl",
        URL_SAFE_NO_PAD.encode(claims)
    )
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn plain_over_tls_carries_a_sink_and_a_source_and_a_wrong_password_is_refused_with_the_fix() {
    let certs = Certs::make();
    let kafka = GatedKafka::start(
        Credentials {
            plain: Some(("ferry".into(), "good-pass".into())),
            ..Credentials::default()
        },
        Some(&certs),
    );
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("kafka-password");
    std::fs::write(&secret, "good-pass\n").unwrap();
    let tls = format!("tls = {{ ca = \"{}\" }}", certs.path("ca.pem"));
    let access = format!(
        "{tls}\nsasl = {{ mechanism = \"PLAIN\", username = \"ferry\", password = \"${{file:{}}}\" }}",
        secret.display()
    );
    let sink = sink_config(&kafka.brokers(), &access);
    let source = source_config(&kafka.brokers(), &access, &redis.url(), "until = \"end\"");

    // Without a login the gate lets nothing through.
    let (code, stdout, _) = check_connect(dir.path(), &sink_config(&kafka.brokers(), &tls), &[]);
    assert_eq!(code, 1, "{stdout}");
    assert!(kafka.gate.refused_before_login() > 0);

    let (code, _, stderr) = run(dir.path(), &sink, &[]);
    assert_eq!(code, 0, "{stderr}\n{}", kafka.log());
    let (code, _, stderr) = run(dir.path(), &source, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        redis.dbsize(),
        20,
        "every order went through the gate both ways"
    );
    let (code, stdout, _) = check_connect(dir.path(), &source, &[]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("connected (SASL_SSL, PLAIN as `ferry`)"),
        "{stdout}"
    );
    let logins = kafka.gate.logins();
    assert!(
        !logins.is_empty() && logins.iter().all(|l| l.accepted && l.who == "ferry"),
        "{logins:?}"
    );
    assert!(
        kafka.gate.api_versions_rewritten() > 0,
        "the gate parsed tansu's ApiVersions answers and offered its own SASL versions"
    );

    std::fs::write(&secret, "wrong-pass\n").unwrap();
    let (code, stdout, _) = check_connect(dir.path(), &sink, &[]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("fix: the broker refused the SASL login"),
        "{stdout}"
    );
    assert!(stdout.contains("`sasl.password`"), "{stdout}");
    for config in [&sink, &source] {
        let started = std::time::Instant::now();
        let (code, _, stderr) = run(dir.path(), config, &[]);
        println!("a refused login reported in {:?}", started.elapsed());
        assert_eq!(code, 1, "a refused login stops the run: {stderr}");
        assert!(stderr.contains("`sasl.password`"), "{stderr}");
        assert!(!stderr.contains("wrong-pass"), "{stderr}");
    }
    assert!(
        kafka.gate.logins().iter().any(|l| !l.accepted),
        "the gate refused the wrong password"
    );
}

#[test]
fn oauthbearer_tokens_from_config_and_file_log_in_and_a_wrong_token_is_refused_with_the_fix() {
    let fixed = "opaque-token-7f3a";
    let file_token = jwt(&format!(
        r#"{{"sub":"svc-ferry","exp":{}}}"#,
        now_s() + 3600
    ));
    let kafka = GatedKafka::start(with_admin(vec![fixed.to_owned(), file_token.clone()]), None);
    create_topic(&kafka, "orders", 2);
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();

    // `sasl.token` from the environment: the sink.
    let env = [("KAFKA_TOKEN", fixed)];
    let by_env = "sasl = { mechanism = \"OAUTHBEARER\", token = \"${KAFKA_TOKEN}\" }";
    let sink = sink_config(&kafka.brokers(), by_env);
    let (code, _, stderr) = run(dir.path(), &sink, &env);
    assert_eq!(code, 0, "{stderr}\n{}", kafka.log());
    let (code, stdout, _) = check_connect(dir.path(), &sink, &env);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("connected (SASL_PLAINTEXT, OAUTHBEARER)"),
        "{stdout}"
    );

    // `sasl.token_file`: the source reads back what the sink wrote.
    let token = dir.path().join("kafka-token");
    std::fs::write(&token, format!("{file_token}\n")).unwrap();
    let by_file = format!(
        "sasl = {{ mechanism = \"OAUTHBEARER\", token_file = \"{}\" }}",
        token.display()
    );
    let source = source_config(&kafka.brokers(), &by_file, &redis.url(), "until = \"end\"");
    let (code, _, stderr) = run(dir.path(), &source, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(redis.dbsize(), 20);
    let logins = kafka.gate.logins();
    let ferrys: Vec<_> = logins
        .iter()
        .filter(|l| l.mechanism == "OAUTHBEARER")
        .collect();
    assert!(ferrys.iter().all(|l| l.accepted), "{logins:?}");
    assert!(ferrys.iter().any(|l| l.who == fixed));
    assert!(ferrys.iter().any(|l| l.who == file_token));

    // librdkafka's admin client never asks for a token: a missing topic
    // cannot be created, and ferry says so instead of timing out.
    let missing = sink.replace("topic = \"orders\"", "topic = \"invoices\"");
    let (code, _, stderr) = run(dir.path(), &missing, &env);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("create the topic beforehand"), "{stderr}");

    // A token the broker does not take: named, never shown.
    let wrong = jwt(&format!(
        r#"{{"sub":"svc-ferry","exp":{}}}"#,
        now_s() + 7200
    ));
    std::fs::write(&token, format!("{wrong}\n")).unwrap();
    let (code, stdout, _) = check_connect(dir.path(), &source, &[]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("OAUTHBEARER token"), "{stdout}");
    assert!(stdout.contains("`sasl.token_file`"), "{stdout}");
    assert!(!stdout.contains(&wrong), "{stdout}");
    let (code, _, stderr) = run(dir.path(), &source, &[]);
    assert_eq!(code, 1, "a refused token stops the run: {stderr}");
    assert!(stderr.contains("`sasl.token_file`"), "{stderr}");
    assert!(!stderr.contains(&wrong), "{stderr}");
    let (code, _, stderr) = run(dir.path(), &sink, &[("KAFKA_TOKEN", "not-the-token")]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("`sasl.token`"), "{stderr}");
    assert!(
        kafka
            .gate
            .logins()
            .iter()
            .any(|l| l.who == wrong && !l.accepted),
        "the gate refused the wrong token"
    );
}

/// `sasl.oidc`: librdkafka fetches the token from the provider itself
/// (client-credentials grant), refreshes it, and sends the extensions
/// with it; its admin client asks too, so `create_topic` works here.
#[test]
fn oidc_client_credentials_log_in_with_the_providers_token_and_extensions() {
    let token = jwt(&format!(
        r#"{{"sub":"svc-ferry","exp":{}}}"#,
        now_s() + 3600
    ));
    let provider = TokenEndpoint::start("ferry", "client-secret", &token);
    let kafka = GatedKafka::start(with_admin(vec![token.clone()]), None);
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let access = format!(
        "sasl = {{ mechanism = \"OAUTHBEARER\", oidc = {{ token_url = \"{}\", client_id = \"ferry\", \
         client_secret = \"${{KAFKA_CLIENT_SECRET}}\", scope = \"kafka\", \
         extensions = {{ logicalCluster = \"lkc-1\" }} }} }}",
        provider.url()
    );
    let env = [("KAFKA_CLIENT_SECRET", "client-secret")];
    let sink = sink_config(&kafka.brokers(), &access);
    let source = source_config(&kafka.brokers(), &access, &redis.url(), "until = \"end\"");
    let (code, _, stderr) = run(dir.path(), &sink, &env);
    assert_eq!(code, 0, "{stderr}\n{}", kafka.log());
    let (code, _, stderr) = run(dir.path(), &source, &env);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(redis.dbsize(), 20);
    let (code, stdout, _) = check_connect(dir.path(), &source, &env);
    assert_eq!(code, 0, "{stdout}");
    assert!(provider.issued() > 0);
    let logins = kafka.gate.logins();
    assert!(
        logins
            .iter()
            .all(|l| l.accepted && l.who == token && l.extensions == ["logicalCluster=lkc-1"]),
        "{logins:?}"
    );

    // The provider refuses a wrong client secret: named, never shown.
    let wrong = [("KAFKA_CLIENT_SECRET", "not-the-secret")];
    let (code, stdout, _) = check_connect(dir.path(), &source, &wrong);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("`sasl.oidc.client_secret`"), "{stdout}");
    assert!(!stdout.contains("not-the-secret"), "{stdout}");
    let (code, _, stderr) = run(dir.path(), &sink, &wrong);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("`sasl.oidc.client_secret`"), "{stderr}");
    assert!(!stderr.contains("not-the-secret"), "{stderr}");
}

/// A token file rotated under a running ferry: librdkafka asks ferry for a
/// token again before the old one expires (at 80% of its lifetime; here a
/// JWT of 30 seconds), ferry reads the file again, and the connections made
/// after that log in with the new token: once the broker takes only the new
/// token and every connection is cut, records still flow both ways.
#[test]
fn a_rotated_token_file_is_used_for_the_logins_after_it() {
    let lifetime = 30;
    let old_expires = std::time::Instant::now() + Duration::from_secs(lifetime);
    let old = jwt(&format!(
        r#"{{"sub":"svc-ferry","exp":{}}}"#,
        now_s() + lifetime
    ));
    let new = jwt(&format!(
        r#"{{"sub":"svc-ferry","exp":{}}}"#,
        now_s() + 3600
    ));
    let kafka = GatedKafka::start(with_admin(vec![old.clone(), new.clone()]), None);
    create_topic(&kafka, "orders", 2);
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("kafka-token");
    std::fs::write(&token, &old).unwrap();
    let access = format!(
        "sasl = {{ mechanism = \"OAUTHBEARER\", token_file = \"{}\" }}",
        token.display()
    );
    // Endless orders, 20 a second, to Kafka and back out to Redis.
    let sink = sink_config(&kafka.brokers(), &access).replace("count = 20", "rate = 20");
    let source = source_config(&kafka.brokers(), &access, &redis.url(), "");
    let mut ferry = Ferry::start(&format!("{sink}\n{source}"));
    wait_until(Duration::from_secs(25), "orders to reach Redis", || {
        redis.dbsize() > 20
    });
    let logins = kafka.gate.logins();
    assert!(
        logins
            .iter()
            .filter(|l| l.mechanism == "OAUTHBEARER")
            .all(|l| l.who == old),
        "{logins:?}"
    );

    // Rotate. Every client asked for its token in the first seconds, so
    // by a second before the old token expires all have asked again.
    std::fs::write(&token, &new).unwrap();
    let refreshed = old_expires - Duration::from_secs(1);
    std::thread::sleep(refreshed.saturating_duration_since(std::time::Instant::now()));
    kafka.gate.accept_tokens(&[&new]);
    let rotated = kafka.gate.logins().len();
    kafka.gate.cut();
    let before = redis.dbsize();
    wait_until(
        Duration::from_secs(30),
        "orders to flow on the new token",
        || redis.dbsize() > before + 40,
    );
    let after = kafka.gate.logins().split_off(rotated);
    assert!(
        !after.is_empty() && after.iter().all(|l| l.accepted && l.who == new),
        "after the rotation only the new token is sent: {after:?}"
    );
    ferry.stop(Duration::from_secs(30));
}

/// The gate's encodings, byte by byte against the layouts of Apache Kafka's
/// message definitions: librdkafka uses SaslAuthenticate v1 and
/// ApiVersions v3, so the flexible SaslAuthenticate v2 and the classic
/// ApiVersions v0 are only checked here.
mod wire {
    use crate::secure::kafka_wire::*;

    #[test]
    fn sasl_authenticate_v2_is_flexible_and_v1_classic() {
        let v2 = authenticate_response(7, 2, 58, Some("no"), b"");
        assert_eq!(
            v2,
            [
                0, 0, 0, 7, // correlation id
                0, // response header v1: no tagged fields
                0, 58, // error code
                3, b'n', b'o', // compact string: length + 1
                1,    // compact bytes: empty
                0, 0, 0, 0, 0, 0, 0, 0, // session lifetime ms
                0, // no tagged fields
            ]
        );
        let v1 = authenticate_response(7, 1, 0, None, b"ok");
        assert_eq!(
            v1,
            [
                0, 0, 0, 7, 0, 0, 0xff, 0xff, 0, 0, 0, 2, b'o', b'k', 0, 0, 0, 0, 0, 0, 0, 0
            ]
        );
        // A v2 request: header v2 (client id, tagged fields), compact bytes.
        let frame = [0, 36, 0, 2, 0, 0, 0, 9, 0, 1, b'c', 0, 3, b'h', b'i', 0];
        let (header, body) = request(&frame).unwrap();
        assert_eq!(
            (header.api_key, header.api_version, header.correlation_id),
            (36, 2, 9)
        );
        assert_eq!(authenticate_bytes(2, body).unwrap(), b"hi");
    }

    #[test]
    fn api_versions_offer_the_gates_sasl_versions_in_both_encodings() {
        // v3: compact array of (key, min, max, tags), throttle, tags.
        let v3 = [
            0, 0, 0, 1, 0, 0, // correlation id, error
            4, // three entries
            0, 0, 0, 0, 0, 9, 0, // Produce 0-9
            0, 17, 0, 0, 0, 1, 0, // SaslHandshake 0-1
            0, 36, 0, 0, 0, 2, 1, 0, 1, 0xaa, // SaslAuthenticate 0-2, one tag
            0, 0, 0, 0, 0, // throttle, no tags
        ];
        let out = offer_gate_versions(3, &v3).unwrap();
        assert_eq!(
            out,
            [
                0, 0, 0, 1, 0, 0, 4, 0, 0, 0, 0, 0, 9, 0, // Produce kept
                0, 17, 0, 1, 0, 1, 0, // SaslHandshake 1-1
                0, 36, 0, 0, 0, 2, 0, // SaslAuthenticate 0-2
                0, 0, 0, 0, 0,
            ]
        );
        // v0: i32 count, no tags, no throttle; a broker without SASL gets
        // the gate's entries added.
        let v0 = [0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0, 3, 0, 0, 0, 12];
        let out = offer_gate_versions(0, &v0).unwrap();
        assert_eq!(
            out,
            [
                0, 0, 0, 2, 0, 0, 0, 0, 0, 3, 0, 3, 0, 0, 0, 12, 0, 17, 0, 1, 0, 1, 0, 36, 0, 0, 0,
                2
            ]
        );
        // An error answer is left alone.
        assert!(offer_gate_versions(3, &[0, 0, 0, 1, 0, 35, 0, 0, 0, 0]).is_none());
    }
}
