//! Redis as production runs it, made of private `redis-server` processes:
//! a 6-node Redis Cluster (3 primaries, 3 replicas) and a Sentinel set-up
//! (1 primary, 1 replica, 3 sentinels). Both fail over fast
//! (`cluster-node-timeout` 1 s, `down-after-milliseconds` 1 s).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{RedisServer, free_port, wait_until};

fn info_field(conn: &mut redis::Connection, section: &str, field: &str) -> Option<String> {
    let info: String = redis::cmd("INFO").arg(section).query(conn).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

/// A Redis Cluster of 6 private nodes made by `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

const CLUSTER_ARGS: &[&str] = &[
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "1000",
    // A replica promoted after its primary died is taken at once.
    "--cluster-replica-validity-factor",
    "0",
];

impl RedisCluster {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// With more `redis-server` arguments on every node.
    pub fn start_with(extra: &[&str]) -> Self {
        let args: Vec<&str> = CLUSTER_ARGS.iter().chain(extra).copied().collect();
        let nodes: Vec<RedisServer> = (0..6).map(|_| RedisServer::start_args(&args)).collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_ok();
        cluster
    }

    /// The url of one node, for `url` with `cluster = true`.
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// Every running node says `cluster_state:ok` and 3 primaries own
    /// every slot.
    pub fn wait_ok(&self) {
        wait_until(Duration::from_secs(30), "the cluster to be ok", || {
            self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                n.try_conn().is_some_and(|mut c| {
                    let info: String = redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query(&mut c)
                        .unwrap_or_default();
                    let replica_synced = info_field(&mut c, "replication", "role").as_deref()
                        != Some("slave")
                        || info_field(&mut c, "replication", "master_link_status").as_deref()
                            == Some("up");
                    info.contains("cluster_state:ok")
                        && info.contains("cluster_slots_ok:16384")
                        && replica_synced
                })
            }) && self.primaries().len() == 3
        });
    }

    /// The ports of the running nodes that are primaries.
    pub fn primaries(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .filter(|n| {
                n.try_conn().is_some_and(|mut c| {
                    info_field(&mut c, "replication", "role").as_deref() == Some("master")
                })
            })
            .map(|n| n.port)
            .collect()
    }

    fn node(&mut self, port: u16) -> &mut RedisServer {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster")
    }

    /// The port of the replica of the primary on `port`.
    pub fn replica_of(&self, port: u16) -> u16 {
        *self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .filter_map(|n| {
                let mut c = n.try_conn()?;
                let role = info_field(&mut c, "replication", "role")?;
                let primary = info_field(&mut c, "replication", "master_port")?;
                (role == "slave" && primary == port.to_string()).then_some(n.port)
            })
            .collect::<Vec<_>>()
            .first()
            .expect("the primary has a replica")
    }

    /// Kills the primary on `port` (SIGKILL) and waits until its replica
    /// took over and the cluster is ok again; returns how long that took.
    pub fn kill_primary(&mut self, port: u16) -> Duration {
        let replica = self.replica_of(port);
        let start = Instant::now();
        self.node(port).stop();
        wait_until(
            Duration::from_secs(30),
            "the replica to be promoted",
            || self.primaries().contains(&replica),
        );
        self.wait_ok();
        start.elapsed()
    }

    /// Starts a killed node again: it rejoins as a replica of the node
    /// that replaced it (its nodes.conf is kept).
    pub fn restart(&mut self, port: u16) {
        self.node(port).spawn();
        self.wait_ok();
    }

    /// A graceful failover: the replica on `replica` takes over from its
    /// primary (`CLUSTER FAILOVER`); returns how long it took.
    pub fn fail_over_to(&self, replica: u16) -> Duration {
        let start = Instant::now();
        let node = self.nodes.iter().find(|n| n.port == replica).unwrap();
        let _: () = redis::cmd("CLUSTER")
            .arg("FAILOVER")
            .query(&mut node.conn())
            .unwrap();
        wait_until(Duration::from_secs(30), "the failover", || {
            self.primaries().contains(&replica)
        });
        self.wait_ok();
        start.elapsed()
    }

    /// A connection to the whole cluster (follows redirects).
    pub fn conn(&self) -> redis::cluster::ClusterConnection {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.url())
            .collect();
        redis::cluster::ClusterClient::new(seeds)
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// Keys in the whole cluster (the sum over the primaries).
    pub fn dbsize(&self) -> u64 {
        self.primaries()
            .iter()
            .map(|p| {
                let n = self.nodes.iter().find(|n| n.port == *p).unwrap();
                redis::cmd("DBSIZE").query::<u64>(&mut n.conn()).unwrap()
            })
            .sum()
    }

    /// `CONFIG SET` on every running node.
    pub fn config_set(&self, name: &str, value: &str) {
        for n in self.nodes.iter().filter(|n| n.child.is_some()) {
            let _: () = redis::cmd("CONFIG")
                .arg("SET")
                .arg(name)
                .arg(value)
                .query(&mut n.conn())
                .unwrap();
        }
    }
}

/// One primary, one replica and three sentinels watching them as
/// `mymaster`.
pub struct RedisSentinels {
    pub primary: RedisServer,
    pub replica: RedisServer,
    sentinels: Vec<(u16, Child, tempfile::TempDir)>,
}

pub const SENTINEL_NAME: &str = "mymaster";

impl RedisSentinels {
    pub fn start() -> Self {
        let primary = RedisServer::start();
        let primary_port = primary.port.to_string();
        let replica = RedisServer::start_args(&["--replicaof", "127.0.0.1", &primary_port]);
        wait_until(Duration::from_secs(20), "the replica to sync", || {
            info_field(&mut replica.conn(), "replication", "master_link_status").as_deref()
                == Some("up")
        });
        let sentinels = (0..3)
            .map(|_| {
                let port = free_port();
                let dir = tempfile::tempdir().unwrap();
                let conf = dir.path().join("sentinel.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                         sentinel monitor {SENTINEL_NAME} 127.0.0.1 {primary_port} 2\n\
                         sentinel down-after-milliseconds {SENTINEL_NAME} 1000\n\
                         sentinel failover-timeout {SENTINEL_NAME} 5000\n",
                        dir = dir.path().display()
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
                (port, child, dir)
            })
            .collect();
        let s = RedisSentinels {
            primary,
            replica,
            sentinels,
        };
        wait_until(
            Duration::from_secs(20),
            "the sentinels to see the replica",
            || {
                s.sentinel_conn().is_some_and(|mut c| {
                    redis::cmd("SENTINEL")
                        .arg("REPLICAS")
                        .arg(SENTINEL_NAME)
                        .query::<Vec<redis::Value>>(&mut c)
                        .is_ok_and(|r| !r.is_empty())
                })
            },
        );
        s
    }

    fn sentinel_conn(&self) -> Option<redis::Connection> {
        let port = self.sentinels.first()?.0;
        redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .ok()?
            .get_connection()
            .ok()
    }

    /// The sentinels' urls, for `sentinel = { nodes = [...] }`.
    pub fn urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|(p, _, _)| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// The port the sentinels name as the primary.
    pub fn primary_port(&self) -> Option<u16> {
        let (_, port): (String, String) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(SENTINEL_NAME)
            .query(&mut self.sentinel_conn()?)
            .ok()?;
        port.parse().ok()
    }

    /// `SENTINEL FAILOVER`: the replica takes over, the primary becomes its
    /// replica; returns how long until the sentinels name the new one.
    pub fn fail_over(&self) -> Duration {
        let before = self.primary_port();
        let start = Instant::now();
        let _: () = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(SENTINEL_NAME)
            .query(&mut self.sentinel_conn().unwrap())
            .unwrap();
        wait_until(Duration::from_secs(30), "the sentinel failover", || {
            self.primary_port().is_some_and(|p| Some(p) != before)
        });
        start.elapsed()
    }
}

impl Drop for RedisSentinels {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
