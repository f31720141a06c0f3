//! RabbitMQ over TLS, with a password or with the EXTERNAL login by client
//! certificate, against a private RabbitMQ node with a TLS listener and
//! certificates made by the test (openssl). One node for every case: it
//! takes seconds to start.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod secure;
mod support;

use std::time::{Duration, Instant};

use secure::{Certs, TlsRabbit, check_connect, ferry};

fn run(config: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferry.toml");
    std::fs::write(&path, config).unwrap();
    ferry(&["run", path.to_str().unwrap()], &[])
}

/// `count` generated orders published over `url` into `queue` (declared),
/// with the connection settings `access` (TOML lines).
fn publish(url: &str, queue: &str, access: &str, count: u64) -> String {
    format!(
        r#"
[[pipeline]]
name = "tls"
source = {{ type = "generate", count = {count} }}
[[pipeline.sink]]
type = "amqp"
url = "{url}"
exchange = ""
routing_key = "{queue}"
declare = {{ queues = [{{ name = "{queue}" }}] }}
{access}
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_over_tls_by_password_or_client_certificate_and_an_unknown_ca_refused() {
    let certs = Certs::make();
    let rabbit = TlsRabbit::start(&certs);
    rabbit.add_user("alice", "s3cret-pw");
    // EXTERNAL logs in as the client certificate's common name.
    rabbit.add_user("ferry", "not-used-by-external");
    let ca = certs.path("ca.pem");

    // A password over TLS, trusting the test CA.
    let by_password =
        format!("username = \"alice\"\npassword = \"s3cret-pw\"\ntls = {{ ca = \"{ca}\" }}");
    let (code, _, stderr) = run(&publish(&rabbit.tls_url(), "by-password", &by_password, 50));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(rabbit.queue_len("by-password").await, 50);

    // Mutual TLS, the certificate as the login.
    let by_cert = format!(
        "mechanism = \"external\"\ntls = {{ ca = \"{ca}\", cert = \"{}\", key = \"{}\" }}",
        certs.path("client.pem"),
        certs.path("client.key")
    );
    let (code, _, stderr) = run(&publish(&rabbit.tls_url(), "by-cert", &by_cert, 50));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(rabbit.queue_len("by-cert").await, 50);

    // A source over TLS too: the queue drained into another, all confirmed.
    let copy = format!(
        r#"
[[pipeline]]
name = "copy"
source = {{ type = "amqp", url = "{url}", queue = "by-cert", until = "end", {inline_cert} }}
[[pipeline.sink]]
type = "amqp"
url = "{url}"
exchange = ""
routing_key = "copied"
declare = {{ queues = [{{ name = "copied" }}] }}
{by_password}
"#,
        url = rabbit.tls_url(),
        inline_cert = by_cert.replace('\n', ", "),
    );
    let (code, _, stderr) = run(&copy);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(rabbit.queue_len("copied").await, 50);
    assert_eq!(rabbit.queue_len("by-cert").await, 0, "acknowledged");

    // The dry run logs in both ways.
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, _) = check_connect(
        dir.path(),
        &publish(&rabbit.tls_url(), "by-cert", &by_cert, 1),
    );
    assert_eq!(code, 0, "{stdout}");

    // Reached by an address the certificate does not list (127.0.0.2 is
    // this machine too): refused, unless `server_name` names what it lists.
    let by_address = rabbit.tls_url().replace("localhost", "127.0.0.2");
    let (code, _, stderr) = run(&publish(&by_address, "by-name", &by_password, 5));
    assert!(code > 0, "exit {code}: {stderr}");
    assert!(
        stderr.contains("fix: the server's TLS certificate does not carry"),
        "{stderr}"
    );
    let named = by_password.replace("tls = {", "tls = { server_name = \"localhost\",");
    let (code, _, stderr) = run(&publish(&by_address, "by-name", &named, 5));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(rabbit.queue_len("by-name").await, 5);

    // `insecure_skip_verify` (tests only): any certificate, loudly.
    let insecure =
        "username = \"alice\"\npassword = \"s3cret-pw\"\ntls = { insecure_skip_verify = true }";
    let (code, _, stderr) = run(&publish(&rabbit.tls_url(), "insecure", insecure, 5));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("TLS certificate verification is OFF"),
        "{stderr}"
    );
    assert_eq!(rabbit.queue_len("insecure").await, 5);

    // A server certificate from a CA ferry does not trust: refused once,
    // with the setting to change, instead of retrying forever.
    let wrong_ca = format!(
        "username = \"alice\"\npassword = \"s3cret-pw\"\ntls = {{ ca = \"{}\" }}",
        certs.path("other-ca.pem")
    );
    let started = Instant::now();
    let (code, _, stderr) = run(&publish(&rabbit.tls_url(), "never", &wrong_ca, 5));
    assert!(code > 0, "exit {code}: {stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "gave up after {:?}",
        started.elapsed()
    );
    assert!(
        stderr.contains("fix: the server's TLS certificate is not signed"),
        "{stderr}"
    );
}
