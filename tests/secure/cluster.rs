//! A Redis Cluster of private TLS nodes: three primaries, no replicas,
//! each with a certificate of the test's choice. The cluster bus speaks
//! TLS too (`tls-cluster yes`), so `CLUSTER SLOTS` asked over TLS names the
//! nodes' TLS ports.

use std::process::Command;
use std::time::Duration;

use super::{Certs, TlsRedis};
use crate::support::{free_port, wait_until};

pub struct TlsCluster {
    pub nodes: Vec<TlsRedis>,
}

impl TlsCluster {
    /// One node per name in `node_certs` (`{name}.pem`, `{name}.key`).
    pub fn start(certs: &Certs, node_certs: &[&str]) -> Self {
        let nodes: Vec<TlsRedis> = node_certs
            .iter()
            .map(|cert| {
                let bus = free_port().to_string();
                TlsRedis::start_with(
                    certs,
                    cert,
                    false,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-port",
                        &bus,
                        "--tls-cluster",
                        "yes",
                    ],
                )
            })
            .collect();
        // Made over the plaintext ports; the nodes meet over TLS.
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-yes"])
            .output()
            .expect("redis-cli must be installed");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        wait_until(Duration::from_secs(30), "the TLS cluster to be ok", || {
            nodes.iter().all(|n| {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut n.admin())
                    .unwrap_or_default();
                info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3")
            })
        });
        TlsCluster { nodes }
    }

    /// Keys on each node.
    pub fn dbsizes(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|n| redis::cmd("DBSIZE").query(&mut n.admin()).unwrap())
            .collect()
    }
}
