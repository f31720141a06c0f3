//! A private RabbitMQ node with a TLS listener and the EXTERNAL login
//! (rabbitmq_auth_mechanism_ssl), beside the machine's own node, which is
//! left alone: its own node name, ports, data directory and Erlang cookie.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::Certs;
use crate::support::{free_port, wait_until};

/// Debian's RabbitMQ scripts, run directly so the node runs as this user.
const BIN: &str = "/usr/lib/rabbitmq/bin";

pub struct TlsRabbit {
    pub port: u16,
    pub tls_port: u16,
    node: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl TlsRabbit {
    /// A node whose TLS listener trusts the test CA; it asks for a client
    /// certificate but does not require one (EXTERNAL needs it, a password
    /// login does not).
    pub fn start(certs: &Certs) -> Self {
        let (port, tls_port, dist_port) = (free_port(), free_port(), free_port());
        let node = format!("ferry-tls-{port}@localhost");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("rabbit.conf"),
            format!(
                "listeners.tcp.default = {port}\n\
                 listeners.ssl.default = {tls_port}\n\
                 ssl_options.cacertfile = {ca}\n\
                 ssl_options.certfile = {cert}\n\
                 ssl_options.keyfile = {key}\n\
                 ssl_options.verify = verify_peer\n\
                 ssl_options.fail_if_no_peer_cert = false\n\
                 auth_mechanisms.1 = PLAIN\n\
                 auth_mechanisms.2 = AMQPLAIN\n\
                 auth_mechanisms.3 = EXTERNAL\n\
                 ssl_cert_login_from = common_name\n\
                 loopback_users = none\n",
                ca = certs.path("ca.pem"),
                cert = certs.path("server.pem"),
                key = certs.path("server.key"),
            ),
        )
        .unwrap();
        std::fs::write(d.join("plugins"), "[rabbitmq_auth_mechanism_ssl].\n").unwrap();
        let child = Command::new(format!("{BIN}/rabbitmq-server"))
            .envs(node_env(d, &node))
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbit"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("plugins"))
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_PID_FILE", d.join("pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rabbitmq-server must be installed (scripts/setup.sh installs it)");
        let rabbit = Self {
            port,
            tls_port,
            node,
            dir,
            child: Some(child),
        };
        wait_until(
            Duration::from_secs(90),
            "a private RabbitMQ node with TLS to start",
            || std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_ok(),
        );
        rabbit
    }

    /// Runs `rabbitmqctl` against this node.
    pub fn ctl(&self, args: &[&str]) {
        let out = Command::new(format!("{BIN}/rabbitmqctl"))
            .envs(node_env(self.dir.path(), &self.node))
            .args(["-n", &self.node, "-q"])
            .args(args)
            .output()
            .expect("rabbitmqctl");
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A user with every permission on the default vhost; for EXTERNAL,
    /// named like the client certificate's common name.
    pub fn add_user(&self, name: &str, password: &str) {
        self.ctl(&["add_user", name, password]);
        self.ctl(&["set_permissions", name, ".*", ".*", ".*"]);
    }

    /// Messages in `queue`, read over the plaintext port.
    pub async fn queue_len(&self, queue: &str) -> u32 {
        let url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port);
        let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let q = ch
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap();
        q.message_count()
    }

    pub fn tls_url(&self) -> String {
        format!("amqps://localhost:{}/%2f", self.tls_port)
    }
}

/// The environment that makes the scripts talk to this node: its name and
/// its own Erlang cookie (in `HOME`), not the machine node's.
fn node_env(dir: &Path, node: &str) -> Vec<(&'static str, String)> {
    vec![
        ("HOME", dir.display().to_string()),
        ("RABBITMQ_NODENAME", node.to_owned()),
    ]
}

impl Drop for TlsRabbit {
    fn drop(&mut self) {
        let _ = Command::new(format!("{BIN}/rabbitmqctl"))
            .envs(node_env(self.dir.path(), &self.node))
            .args(["-n", &self.node, "-q", "shutdown"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
