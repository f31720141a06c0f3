//! Kafka with SASL/SCRAM (a tansu broker with `--authentication` and users
//! made by `tansu user create`) and over TLS (tansu 0.6.0 does not serve
//! TLS itself, so `socat` terminates TLS in front of it and tansu
//! advertises socat's port: every connection goes through TLS).

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod secure;
mod support;

use secure::{Certs, SecureKafka, check_connect, ferry};

fn sink_config(brokers: &str, access: &str) -> String {
    format!(
        r#"
[[pipeline]]
name = "secure-kafka"
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

fn run(dir: &std::path::Path, config: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let path = dir.join("ferry.toml");
    std::fs::write(&path, config).unwrap();
    ferry(&["run", path.to_str().unwrap()], env)
}

#[test]
fn scram_logins_work_and_a_wrong_password_is_refused_with_the_fix() {
    let kafka = SecureKafka::start(&[("ferry", "good-pass", "scram512")], None);
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("kafka-password");
    std::fs::write(&secret, "good-pass\n").unwrap();
    let access = format!(
        "sasl = {{ mechanism = \"SCRAM-SHA-512\", username = \"ferry\", password = \"${{file:{}}}\" }}",
        secret.display()
    );
    let config = sink_config(&kafka.brokers(), &access);
    let (code, _, stderr) = run(dir.path(), &config, &[]);
    assert_eq!(code, 0, "{stderr}\n{}", kafka.log());
    let (code, stdout, _) = check_connect(dir.path(), &config);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("connected (SASL_PLAINTEXT, SCRAM-SHA-512 as `ferry`)"),
        "{stdout}"
    );
    assert!(stdout.contains("topic `orders`: 2 partitions"), "{stdout}");

    std::fs::write(&secret, "wrong-pass\n").unwrap();
    let (code, stdout, _) = check_connect(dir.path(), &config);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("fix: the broker refused the SASL login"),
        "{stdout}"
    );
    assert!(!stdout.contains("wrong-pass"), "{stdout}");
}

#[test]
fn kafka_over_tls_trusts_the_private_ca_and_refuses_an_unknown_one() {
    let certs = Certs::make();
    let kafka = SecureKafka::start(&[], Some((&certs, false)));
    let dir = tempfile::tempdir().unwrap();
    let good = sink_config(
        &kafka.brokers(),
        &format!("tls = {{ ca = \"{}\" }}", certs.path("ca.pem")),
    );
    let (code, stdout, _) = check_connect(dir.path(), &good);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("connected (SSL)"), "{stdout}");
    let (code, _, stderr) = run(dir.path(), &good, &[]);
    assert_eq!(code, 0, "{stderr}");

    let unknown = sink_config(
        &kafka.brokers(),
        &format!("tls = {{ ca = \"{}\" }}", certs.path("other-ca.pem")),
    );
    let (code, stdout, _) = check_connect(dir.path(), &unknown);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("set `tls.ca`"), "{stdout}");
}

#[test]
fn kafka_mutual_tls_with_a_client_certificate() {
    let certs = Certs::make();
    let kafka = SecureKafka::start(&[], Some((&certs, true)));
    let dir = tempfile::tempdir().unwrap();
    let with_cert = sink_config(
        &kafka.brokers(),
        &format!(
            "tls = {{ ca = \"{}\", cert = \"{}\", key = \"{}\" }}",
            certs.path("ca.pem"),
            certs.path("client.pem"),
            certs.path("client.key")
        ),
    );
    let (code, stdout, _) = check_connect(dir.path(), &with_cert);
    assert_eq!(code, 0, "{stdout}");
    let (code, _, stderr) = run(dir.path(), &with_cert, &[]);
    assert_eq!(code, 0, "{stderr}");
    let without = sink_config(
        &kafka.brokers(),
        &format!("tls = {{ ca = \"{}\" }}", certs.path("ca.pem")),
    );
    let (code, stdout, _) = check_connect(dir.path(), &without);
    assert_eq!(code, 1, "{stdout}");
}

/// OAUTHBEARER with a token file: librdkafka asks ferry for the token and
/// gets the file's token, or the file's problem as the reason. tansu 0.6.0
/// offers the mechanism but cannot check a token, so here the token goes as
/// far as the SASL handshake; tests/kafka_sasl.rs logs in with it at a
/// gate that checks it.
#[test]
fn an_oauthbearer_token_file_is_handed_to_librdkafka_or_its_problem_named() {
    let kafka = SecureKafka::start(&[], None);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("kafka-token");
    let access = format!(
        "sasl = {{ mechanism = \"OAUTHBEARER\", token_file = \"{}\" }}",
        token.display()
    );
    let config = sink_config(&kafka.brokers(), &access);

    let (code, stdout, _) = check_connect(dir.path(), &config);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("reading the OAUTHBEARER token file"),
        "{stdout}"
    );
    assert!(
        stdout.contains("fix: ferry could not hand librdkafka an OAUTHBEARER token"),
        "{stdout}"
    );

    // A JWT with an expiry (header.payload.signature; nothing is verified
    // on ferry's side): librdkafka takes it and goes on to the handshake.
    let secret = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJmZXJyeSIsImV4cCI6NDEwMjQ0NDgwMH0.c2VjcmV0";
    std::fs::write(&token, format!("{secret}\n")).unwrap();
    let (_, stdout, _) = check_connect(dir.path(), &config);
    assert!(!stdout.contains("token file"), "{stdout}");
    assert!(
        stdout.contains("SASL OAUTHBEARER mechanism handshake"),
        "{stdout}"
    );
    assert!(
        !stdout.contains(secret),
        "the token is never shown: {stdout}"
    );
}
