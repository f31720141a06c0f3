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
        Self::spawn(&path, dir, extra_args, &[])
    }

    /// `ferry run FILE` for a config file as shipped (`examples/`), with
    /// `env` set for the `${VAR}`s it reads.
    pub fn start_file(file: &Path, env: &[(&str, String)]) -> Self {
        assert!(file.exists(), "{} is missing", file.display());
        Self::spawn(file, tempfile::tempdir().unwrap(), &[], env)
    }

    fn spawn(
        config: &Path,
        dir: tempfile::TempDir,
        extra_args: &[&str],
        env: &[(&str, String)],
    ) -> Self {
        let log = dir.path().join("ferry.log");
        let child = Command::new(ferry_bin())
            .arg("run")
            .arg(config)
            .args(["--progress-every", "1s"])
            .args(extra_args)
            .env("FERRY_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
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

    /// Waits for `needle` in the log; fails early if ferry exited.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while !self.log().contains(needle) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("ferry exited with {status}:\n{}", self.log());
            }
            assert!(
                start.elapsed() < timeout,
                "no `{needle}` in the log after {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then a clean exit (in-flight writes finished, offsets
    /// committed) within `timeout`.
    pub fn stop(&mut self, timeout: Duration) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait_success(timeout);
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Ferry {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("ferry log:\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn ferry_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ferry")
}
