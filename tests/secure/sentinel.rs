//! Sentinel over TLS: a primary and its replica with TLS ports that require
//! a client certificate (they replicate over TLS), and three sentinels that
//! listen with and without TLS and reach the servers (and each other) over
//! TLS. The sentinels name the servers by their TLS ports.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{Certs, TlsRedis};
use crate::support::{free_port, wait_until};

pub const NAME: &str = "mymaster";

pub struct TlsSentinels {
    pub primary: TlsRedis,
    pub replica: TlsRedis,
    /// (plaintext port, TLS port, process, directory) of each sentinel.
    sentinels: Vec<(u16, u16, Child, tempfile::TempDir)>,
}

fn replication(server: &TlsRedis, field: &str) -> Option<String> {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut server.admin())
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

impl TlsSentinels {
    pub fn start(certs: &Certs) -> Self {
        let primary = TlsRedis::start(certs, true);
        let upstream = primary.tls_port.to_string();
        let replica = TlsRedis::start_with(
            certs,
            "server",
            true,
            &[
                "--replicaof",
                "127.0.0.1",
                &upstream,
                "--tls-replication",
                "yes",
            ],
        );
        wait_until(
            Duration::from_secs(20),
            "the replica to sync over TLS",
            || replication(&replica, "master_link_status").as_deref() == Some("up"),
        );
        let sentinels = (0..3)
            .map(|_| {
                let (port, tls_port) = (free_port(), free_port());
                let dir = tempfile::tempdir().unwrap();
                let conf = dir.path().join("sentinel.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\ntls-port {tls_port}\nbind 127.0.0.1\ndir {dir}\n\
                         tls-cert-file {cert}\ntls-key-file {key}\ntls-ca-cert-file {ca}\n\
                         tls-auth-clients yes\ntls-replication yes\n\
                         sentinel monitor {NAME} 127.0.0.1 {upstream} 2\n\
                         sentinel down-after-milliseconds {NAME} 1000\n\
                         sentinel failover-timeout {NAME} 5000\n",
                        dir = dir.path().display(),
                        cert = certs.path("server.pem"),
                        key = certs.path("server.key"),
                        ca = certs.path("ca.pem"),
                    ),
                )
                .unwrap();
                let child = Command::new("redis-server")
                    .arg(&conf)
                    .arg("--sentinel")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                (port, tls_port, child, dir)
            })
            .collect();
        let s = TlsSentinels {
            primary,
            replica,
            sentinels,
        };
        wait_until(
            Duration::from_secs(20),
            "the sentinels to see the replica",
            || {
                s.sentinel().is_some_and(|mut c| {
                    redis::cmd("SENTINEL")
                        .arg("REPLICAS")
                        .arg(NAME)
                        .query::<Vec<redis::Value>>(&mut c)
                        .is_ok_and(|r| !r.is_empty())
                })
            },
        );
        s
    }

    /// A plaintext connection to the first sentinel, for set-up.
    fn sentinel(&self) -> Option<redis::Connection> {
        Self::sentinel_at(self.sentinels.first()?.0)
    }

    fn sentinel_at(port: u16) -> Option<redis::Connection> {
        redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .ok()?
            .get_connection()
            .ok()
    }

    /// The sentinels' urls, for `sentinel = { nodes = [...] }`: `rediss://`
    /// to their TLS ports, or `redis://` to their plaintext ones.
    pub fn nodes(&self, tls: bool) -> String {
        let urls: Vec<String> = self
            .sentinels
            .iter()
            .map(|(port, tls_port, _, _)| match tls {
                true => format!("\"rediss://127.0.0.1:{tls_port}\""),
                false => format!("\"redis://127.0.0.1:{port}\""),
            })
            .collect();
        format!("[{}]", urls.join(", "))
    }

    /// The port the sentinel on `port` names as the primary (a TLS port).
    fn primary_named_by(port: u16) -> Option<u16> {
        let (_, port): (String, String) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(NAME)
            .query(&mut Self::sentinel_at(port)?)
            .ok()?;
        port.parse().ok()
    }

    /// `SENTINEL FAILOVER`: the replica takes over; waits until the
    /// sentinels name it and it takes writes.
    pub fn fail_over(&self) {
        let _: () = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(NAME)
            .query(&mut self.sentinel().unwrap())
            .unwrap();
        // Every sentinel, not only the first: a client may ask any of them,
        // and one that still names the old primary sends writes there while
        // it takes them, which its demotion then throws away (a CI run
        // lost its 20 keys so).
        wait_until(Duration::from_secs(30), "the sentinel failover", || {
            self.sentinels
                .iter()
                .all(|(port, ..)| Self::primary_named_by(*port) == Some(self.replica.tls_port))
                && replication(&self.replica, "role").as_deref() == Some("master")
                && replication(&self.primary, "role").as_deref() == Some("slave")
        });
    }
}

impl Drop for TlsSentinels {
    fn drop(&mut self) {
        for (_, _, child, _) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
