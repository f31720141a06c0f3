//! The real `ferry` binary, run as a child process with a config file.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running `ferry run CONFIG` process.
pub struct Ferry {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Ferry {
    pub fn start(config: &str) -> Self {
        Self::start_with(config, &[])
    }

    pub fn start_with(config: &str, extra_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(&path, config).unwrap();
        let log = dir.path().join("ferry.log");
        let child = Command::new(ferry_bin())
            .arg("run")
            .arg(&path)
            .args(["--progress-every", "1s"])
            .args(extra_args)
            .env("FERRY_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn ferry");
        Self {
            child,
            log,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).unwrap();
    }

    /// Waits for the process to exit; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for a successful exit, showing the log if it fails.
    pub fn wait_success(&mut self, timeout: Duration) {
        match self.wait_timeout(timeout) {
            Some(s) if s.success() => {}
            Some(s) => panic!("ferry exited with {s}\n{}", self.log()),
            None => panic!("ferry still running after {timeout:?}\n{}", self.log()),
        }
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Ferry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn ferry_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ferry")
}
