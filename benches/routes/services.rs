//! The services one benchmark run uses, all private to it: tansu brokers and
//! redis-servers started on free ports (so they can be paused, and their CPU
//! measured), and a RabbitMQ vhost on the shared broker (deleted on drop).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::R;

/// A name no other run (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    format!(
        "{prefix}-{}-{now}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn free_port() -> R<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Polls `check` until it is true; an error after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) -> R<()> {
    let start = Instant::now();
    while !check() {
        if start.elapsed() > timeout {
            return Err(format!("timed out after {timeout:?} waiting for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A child server process, killed on drop; SIGSTOP/SIGCONT pause it.
struct Server {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Server {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, s: Signal) -> R<()> {
        Ok(kill(Pid::from_raw(self.pid()), s)?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.signal(Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private tansu with its memory engine. Its limits decide how the
/// harness uses it (docs/performance.md): its end offsets are short of what
/// it holds, so nothing asks for them (bridges run until the last message
/// arrives, and Kafka outputs are counted by reading them); the sqlite
/// engine reports them, but starves consumers while a producer writes and
/// writes at a third of the speed, so it would measure tansu.
pub struct Tansu {
    port: u16,
    server: Server,
}

fn tansu_bin() -> R<String> {
    let home = std::env::var("HOME").unwrap_or_default();
    ["tansu".to_owned(), format!("{home}/.cargo/bin/tansu")]
        .into_iter()
        .find(|t| {
            Command::new(t)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .ok_or_else(|| "tansu must be installed (scripts/setup.sh builds it)".into())
}

impl Tansu {
    pub fn start() -> R<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let url = format!("tcp://127.0.0.1:{port}");
        let storage = "memory://tansu/";
        let child = Command::new(tansu_bin()?)
            .args(["broker", "--storage-engine", storage])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("tansu.log"))?)
            .spawn()?;
        let t = Self {
            port,
            server: Server { child, _dir: dir },
        };
        wait_until(Duration::from_secs(20), "tansu to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })?;
        Ok(t)
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> i32 {
        self.server.pid()
    }

    pub fn pause(&self) -> R<()> {
        self.server.signal(Signal::SIGSTOP)
    }

    pub fn resume(&self) -> R<()> {
        self.server.signal(Signal::SIGCONT)
    }
}

/// A throwaway redis-server without persistence.
pub struct Redis {
    port: u16,
    server: Server,
}

impl Redis {
    pub fn start() -> R<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server (scripts/setup.sh installs it): {e}"))?;
        let r = Self {
            port,
            server: Server { child, _dir: dir },
        };
        wait_until(Duration::from_secs(10), "redis-server to start", || {
            r.conn()
                .and_then(|mut c| Ok(redis::cmd("PING").query::<String>(&mut c)?))
                .is_ok()
        })?;
        Ok(r)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn conn(&self) -> R<redis::Connection> {
        Ok(redis::Client::open(self.url())?.get_connection()?)
    }

    pub fn pid(&self) -> i32 {
        self.server.pid()
    }

    pub fn pause(&self) -> R<()> {
        self.server.signal(Signal::SIGSTOP)
    }

    pub fn resume(&self) -> R<()> {
        self.server.signal(Signal::SIGCONT)
    }
}

/// The shared RabbitMQ node's OS process (`rabbitmqctl status`: `OS PID: N`),
/// so its CPU shows beside the private servers'.
pub fn rabbitmq_pid() -> Option<i32> {
    let out = Command::new("rabbitmqctl").arg("status").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("OS PID:"))
        .and_then(|pid| pid.trim().parse().ok())
}

/// A vhost of this run's own on the shared RabbitMQ.
pub struct RabbitVhost {
    pub name: String,
}

fn rabbitmqctl(args: &[&str]) -> R<()> {
    let out = Command::new("rabbitmqctl").arg("-q").args(args).output()?;
    if !out.status.success() {
        return Err(format!(
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

impl RabbitVhost {
    pub fn create() -> R<Self> {
        let name = unique("ferry-bench");
        rabbitmqctl(&["add_vhost", &name])?;
        let v = Self { name };
        rabbitmqctl(&["set_permissions", "-p", &v.name, "guest", ".*", ".*", ".*"])?;
        Ok(v)
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.name)
    }
}

impl Drop for RabbitVhost {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["delete_vhost", &self.name]);
    }
}

/// Where the harness writes its results and keeps logs of failed runs.
pub fn out_dir(arg: Option<&str>) -> R<PathBuf> {
    let dir = match arg {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ferry-bench"),
    };
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
