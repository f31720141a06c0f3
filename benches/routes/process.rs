//! A bridge under measurement (ferry, or the peer) as a child process, and
//! what /proc says about it and about the servers: CPU seconds (utime +
//! stime of every thread) and peak resident memory (VmHWM).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;

use crate::R;

/// CPU seconds a process has used so far, all threads.
pub fn cpu_seconds(pid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its `)`.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// User and system seconds apart, for the kernel's share.
pub fn cpu_split(pid: i32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime / clock_ticks(), stime / clock_ticks()))
}

fn clock_ticks() -> f64 {
    // Linux reports times in USER_HZ, 100 on every architecture Rust targets.
    100.0
}

/// Peak resident memory in KiB (VmHWM), while the process runs.
pub fn peak_rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The machine's load averages, recorded with every run.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// A running bridge. Its stderr goes to a log file that is kept (and named
/// in the error) when the run fails.
pub struct Bridge {
    child: Child,
    pub started: Instant,
    log: PathBuf,
    peak_kib: u64,
    _dir: tempfile::TempDir,
}

/// What a bridge used up to the moment it was measured.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Usage {
    pub cpu_s: f64,
    pub user_s: f64,
    pub sys_s: f64,
    pub peak_rss_mb: f64,
}

/// The ferry binary measured: this build's, or `FERRY_BENCH_BIN` (to
/// compare two builds on the same machine in the same hour).
pub fn ferry_bin() -> String {
    std::env::var("FERRY_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ferry").to_owned())
}

impl Bridge {
    /// `ferry run` on a config file written from `config`.
    pub fn ferry(config: &str) -> R<Self> {
        Self::ferry_with(config, &[])
    }

    /// `ferry run` with more arguments (such as `--http ADDR`).
    pub fn ferry_with(config: &str, args: &[String]) -> R<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("ferry.toml");
        std::fs::write(&path, config)?;
        let mut cmd = Command::new(ferry_bin());
        cmd.arg("run")
            .arg(&path)
            .args(args)
            .env("FERRY_LOG", "warn");
        Self::spawn(cmd, dir)
    }

    /// Any other command, with its working directory in a fresh temporary
    /// directory holding `files` (name, content).
    pub fn command(program: &Path, args: &[String], files: &[(&str, String)]) -> R<Self> {
        let dir = tempfile::tempdir()?;
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content)?;
        }
        let mut cmd = Command::new(program);
        cmd.args(args).current_dir(dir.path());
        Self::spawn(cmd, dir)
    }

    fn spawn(mut cmd: Command, dir: tempfile::TempDir) -> R<Self> {
        let log = dir.path().join("bridge.log");
        let started = Instant::now();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout.log"))?)
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        Ok(Self {
            child,
            started,
            log,
            peak_kib: 0,
            _dir: dir,
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Samples peak memory (call it while waiting: VmHWM is gone once the
    /// process has exited) and says whether the process has ended. An ended
    /// process is left unreaped, so its CPU times stay readable in /proc.
    pub fn sample(&mut self) -> bool {
        if let Some(k) = peak_rss_kib(self.pid()) {
            self.peak_kib = self.peak_kib.max(k);
        }
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        !matches!(
            waitid(Id::Pid(Pid::from_raw(self.pid())), flags),
            Ok(WaitStatus::StillAlive)
        )
    }

    /// CPU and memory used so far.
    pub fn usage(&mut self) -> Usage {
        self.sample();
        let (user_s, sys_s) = cpu_split(self.pid()).unwrap_or_default();
        Usage {
            cpu_s: user_s + sys_s,
            user_s,
            sys_s,
            peak_rss_mb: self.peak_kib as f64 / 1024.0,
        }
    }

    /// SIGTERM, then SIGKILL if it has not ended within 10 s.
    pub fn stop(&mut self) {
        let _ = kill(Pid::from_raw(self.pid()), Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
