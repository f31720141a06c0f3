//! Redis for tests: a throwaway `redis-server` per test on a free port.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, order_id, wait_until};

/// A throwaway redis-server on a free port, killed on drop.
pub struct RedisServer {
    pub port: u16,
    pub(super) child: Option<Child>,
    dir: tempfile::TempDir,
    /// Appends every write to disk (fsync always), so a restart keeps data.
    persistent: bool,
    /// More `redis-server` arguments (cluster mode, replication, memory).
    args: Vec<String>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// A server whose data survives [`RedisServer::restart`].
    pub fn start_persistent() -> Self {
        Self::start_with(true)
    }

    /// A server started with more `redis-server` arguments.
    pub fn start_args(args: &[&str]) -> Self {
        let mut server = Self {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
            persistent: false,
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        server.spawn();
        server
    }

    fn start_with(persistent: bool) -> Self {
        let mut server = Self {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
            persistent,
            args: Vec::new(),
        };
        server.spawn();
        server
    }

    pub(super) fn spawn(&mut self) {
        let aof: &[&str] = if self.persistent {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        };
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(aof)
            .args(&self.args)
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/setup.sh installs it)");
        self.child = Some(child);
        wait_until(Duration::from_secs(10), "redis-server to start", || {
            self.try_conn().is_some()
        });
    }

    /// Kills the server (SIGKILL) and starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(super) fn try_conn(&self) -> Option<redis::Connection> {
        let mut c = redis::Client::open(self.url())
            .ok()?
            .get_connection()
            .ok()?;
        redis::cmd("PING").query::<String>(&mut c).ok()?;
        Some(c)
    }

    pub fn conn(&self) -> redis::Connection {
        self.try_conn().expect("redis connection")
    }

    pub fn dbsize(&self) -> u64 {
        redis::cmd("DBSIZE").query(&mut self.conn()).unwrap()
    }

    pub fn get(&self, key: &str) -> Option<String> {
        redis::cmd("GET").arg(key).query(&mut self.conn()).unwrap()
    }

    /// Every entry of the stream `key` (a dead-letter stream, say).
    pub fn xrange(&self, key: &str) -> Vec<redis::streams::StreamId> {
        let r: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(key)
            .arg("-")
            .arg("+")
            .query(&mut self.conn())
            .unwrap();
        r.ids
    }

    /// How many times each order id (the JSON payload's `order_id`) was
    /// appended to the stream `key`.
    pub fn order_counts(&self, key: &str) -> std::collections::HashMap<u64, u32> {
        let mut counts = std::collections::HashMap::new();
        for entry in self.xrange(key) {
            let payload: String = entry.get("payload").unwrap();
            let json: serde_json::Value = serde_json::from_str(&payload).unwrap();
            *counts
                .entry(json["order_id"].as_u64().unwrap())
                .or_default() += 1;
        }
        counts
    }

    /// How many times Redis executed `command` (from INFO commandstats).
    pub fn calls(&self, command: &str) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut self.conn())
            .unwrap();
        let prefix = format!("cmdstat_{}:calls=", command.to_lowercase());
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The order ids of every element of a Redis list (read in chunks, so a
/// million elements do not make one huge reply).
pub fn order_ids_in_list(conn: &mut redis::Connection, list: &str) -> Vec<u64> {
    let len: usize = redis::cmd("LLEN").arg(list).query(conn).unwrap();
    let mut ids = Vec::with_capacity(len);
    for start in (0..len).step_by(10_000) {
        let chunk: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(list)
            .arg(start)
            .arg(start + 9_999)
            .query(conn)
            .unwrap();
        ids.extend(chunk.iter().map(|p| {
            order_id(p).unwrap_or_else(|| panic!("not an order: {}", String::from_utf8_lossy(p)))
        }));
    }
    ids
}
