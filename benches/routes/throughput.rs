//! Saturation throughput of one route at one message size: in the same
//! setup, the plain client of each endpoint, then ferry (and the peer),
//! each timed from process start to the last message arriving.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::R;
use crate::process::{Bridge, Usage, cpu_seconds, loadavg};
use crate::routes::{Role, Route, Setup};

/// How one bridge did on one route.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BridgeRun {
    /// Messages per second, start to last arrival.
    pub rate: f64,
    pub seconds: f64,
    /// Process start to the first message arriving.
    pub first_ms: f64,
    /// Messages per second from the first arrival to the last: the rate
    /// without start-up (connections, group joins).
    pub steady_rate: f64,
    pub cpu_us_per_msg: f64,
    /// CPU seconds per wall second: 1.0 = one core busy all along.
    pub busy: f64,
    pub sys_share: f64,
    pub peak_rss_mb: f64,
    /// The source and sink servers' CPU per wall second (the shared
    /// RabbitMQ node's too), where ferry can find their process.
    pub source_server_busy: Option<f64>,
    pub sink_server_busy: Option<f64>,
    /// The same servers' CPU per message, in microseconds: set beside the
    /// plain clients' it shows whether a bridge makes a server work harder.
    pub source_server_us: Option<f64>,
    pub sink_server_us: Option<f64>,
    /// ferry only: its sink's batch writes, from its metrics.
    pub sink_writes: Option<crate::metrics::SinkWrites>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Throughput {
    pub route: String,
    pub size: usize,
    pub messages: u64,
    pub repeats: usize,
    pub load: String,
    /// Plain clients, messages per second (medians).
    pub raw_source: f64,
    pub raw_sink: f64,
    /// The source server's CPU per message under the plain source client,
    /// and the sink server's under the plain sink client (microseconds,
    /// medians).
    pub raw_source_server_us: Option<f64>,
    pub raw_sink_server_us: Option<f64>,
    pub ferry: Option<BridgeRun>,
    pub peer: Option<BridgeRun>,
    /// ferry's rate over the slower plain client's.
    pub ratio: f64,
    /// ferry's rate over the peer's.
    pub vs_peer: Option<f64>,
    pub limiter: String,
    pub errors: Vec<String>,
}

pub struct Options<'a> {
    pub amqp_url: &'a str,
    pub peer: Option<&'a Path>,
    pub repeats: usize,
    pub timeout: Duration,
    /// A command run beside each ferry run (a profiler), with `{pid}` and
    /// `{name}` replaced; stopped with SIGINT when the run ends.
    pub attach: Option<&'a str>,
}

/// Runs a bridge until `n` messages arrived at `role`'s output.
fn run_bridge(setup: &Setup, role: Role, n: u64, opts: &Options) -> R<BridgeRun> {
    let timeout = opts.timeout;
    let http_port = crate::services::free_port()?;
    let mut count = setup.counter(role)?;
    let (src_pid, dst_pid) = setup.server_pids();
    let src_cpu0 = src_pid.and_then(cpu_seconds);
    let dst_cpu0 = dst_pid.and_then(cpu_seconds);
    let mut bridge = match (role, opts.peer) {
        (Role::Peer, Some(bin)) => Bridge::command(
            bin,
            &[
                "--config".into(),
                "peer.yaml".into(),
                "--no-ui".into(),
                "--no-metrics".into(),
            ],
            &[("peer.yaml", setup.peer_config(role)?)],
        )?,
        _ => Bridge::ferry_with(
            &setup.ferry_config(role)?,
            &["--http".into(), format!("127.0.0.1:{http_port}")],
        )?,
    };
    let attached = match (role, opts.attach) {
        (Role::Ferry, Some(cmd)) => Some(Attached::start(cmd, bridge.pid(), setup)?),
        _ => None,
    };
    let mut first = None;
    let done = loop {
        let exited = bridge.sample();
        let c = count()?;
        if c > 0 && first.is_none() {
            first = Some((bridge.started.elapsed(), c));
        }
        if c >= n {
            break bridge.started.elapsed();
        }
        if exited {
            return Err(format!("bridge ended after {c} of {n}\n{}", bridge.log_tail()).into());
        }
        if bridge.started.elapsed() > timeout {
            return Err(format!("{c} of {n} arrived in {timeout:?}\n{}", bridge.log_tail()).into());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let usage: Usage = bridge.usage();
    let secs = done.as_secs_f64();
    let sink_writes = match role {
        Role::Ferry => crate::metrics::scrape(http_port)
            .ok()
            .map(|text| crate::metrics::sink_writes(&text, n, secs)),
        _ => None,
    };
    let (src_used, dst_used) = (cpu_since(src_pid, src_cpu0), cpu_since(dst_pid, dst_cpu0));
    let busy = |used: Option<f64>| used.map(|s| s / secs);
    let per_msg = |used: Option<f64>| used.map(|s| s * 1e6 / n as f64);
    let run = BridgeRun {
        rate: n as f64 / secs,
        seconds: secs,
        first_ms: first.map_or(done, |f| f.0).as_secs_f64() * 1e3,
        steady_rate: first
            .filter(|(t, _)| *t < done)
            .map_or(f64::NAN, |(t, c)| (n - c) as f64 / (done - t).as_secs_f64()),
        cpu_us_per_msg: usage.cpu_s * 1e6 / n as f64,
        busy: usage.cpu_s / secs,
        sys_share: if usage.cpu_s > 0.0 {
            usage.sys_s / usage.cpu_s
        } else {
            0.0
        },
        peak_rss_mb: usage.peak_rss_mb,
        source_server_busy: busy(src_used),
        sink_server_busy: busy(dst_used),
        source_server_us: per_msg(src_used),
        sink_server_us: per_msg(dst_used),
        sink_writes,
    };
    drop(attached);
    bridge.stop();
    Ok(run)
}

/// CPU seconds a process used since it had used `before`.
fn cpu_since(pid: Option<i32>, before: Option<f64>) -> Option<f64> {
    Some(cpu_seconds(pid?)? - before?)
}

/// A profiler attached to a ferry run, interrupted (so it writes its
/// data) when the run ends.
struct Attached(std::process::Child);

impl Attached {
    fn start(template: &str, pid: i32, setup: &Setup) -> R<Self> {
        let name = format!("{}-{}", setup.route.name.replace("->", "-"), setup.size);
        let cmd = template
            .replace("{pid}", &pid.to_string())
            .replace("{name}", &name);
        Ok(Self(
            std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("exec {cmd}"))
                .spawn()?,
        ))
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let _ = self.0.wait();
    }
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn median_run(mut v: Vec<BridgeRun>) -> Option<BridgeRun> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    Some(v.swap_remove(v.len() / 2))
}

/// What every repeat measured.
#[derive(Default)]
struct Runs {
    raw_source: Vec<f64>,
    raw_sink: Vec<f64>,
    ferry: Vec<BridgeRun>,
    peer: Vec<BridgeRun>,
    /// The servers' CPU per message under the plain clients.
    raw_source_server_us: Vec<f64>,
    raw_sink_server_us: Vec<f64>,
}

/// One repeat: a fresh setup, filled, then each client and bridge in turn.
fn once(
    route: Route,
    size: usize,
    n: u64,
    opts: &Options,
    out: &mut Runs,
    errors: &mut Vec<String>,
) -> R<()> {
    let setup = Setup::start(route, size, opts.amqp_url)?;
    let peer = opts.peer.filter(|_| route.peer_supported());
    let mut roles = vec![Role::Raw, Role::Ferry];
    if peer.is_some() {
        roles.push(Role::Peer);
    }
    setup.fill(1..n + 1, &roles)?;
    let (src_pid, dst_pid) = setup.server_pids();
    let server_us = |pid, before| cpu_since(pid, before).map(|s| s * 1e6 / n as f64);
    let before = src_pid.and_then(cpu_seconds);
    match setup.raw_source(n, opts.timeout) {
        Ok(d) => {
            out.raw_source.push(rate(n, d));
            out.raw_source_server_us.extend(server_us(src_pid, before));
        }
        Err(e) => errors.push(format!("plain source client: {e}")),
    }
    let before = dst_pid.and_then(cpu_seconds);
    match setup.raw_sink(n) {
        Ok(d) => {
            out.raw_sink.push(rate(n, d));
            out.raw_sink_server_us.extend(server_us(dst_pid, before));
        }
        Err(e) => errors.push(format!("plain sink client: {e}")),
    }
    match run_bridge(&setup, Role::Ferry, n, opts) {
        Ok(r) => out.ferry.push(r),
        Err(e) => errors.push(format!("ferry: {e}")),
    }
    if peer.is_some() {
        setup.clear_output()?;
        match run_bridge(&setup, Role::Peer, n, opts) {
            Ok(r) => out.peer.push(r),
            Err(e) => errors.push(format!("peer: {e}")),
        }
    }
    Ok(())
}

pub fn measure(route: Route, size: usize, n: u64, opts: &Options) -> Throughput {
    let load = loadavg();
    let started = Instant::now();
    let mut out = Runs::default();
    let mut errors = Vec::new();
    for _ in 0..opts.repeats {
        if let Err(e) = once(route, size, n, opts, &mut out, &mut errors) {
            errors.push(format!("setup: {e}"));
        }
    }
    let (raw_source, raw_sink) = (median(out.raw_source), median(out.raw_sink));
    let some = |v: Vec<f64>| (!v.is_empty()).then(|| median(v));
    let raw_source_server_us = some(out.raw_source_server_us);
    let raw_sink_server_us = some(out.raw_sink_server_us);
    let ferry = median_run(out.ferry);
    let peer = median_run(out.peer);
    let slower = raw_source.min(raw_sink);
    let ratio = ferry.as_ref().map_or(f64::NAN, |f| f.rate / slower);
    let vs_peer = match (&ferry, &peer) {
        (Some(f), Some(p)) => Some(f.rate / p.rate),
        _ => None,
    };
    let limiter = limiter(raw_source, raw_sink, ferry.as_ref(), ratio);
    eprintln!(
        "[bench] {} {} B x {n}: {:.0}s, load {load}",
        route.name,
        size,
        started.elapsed().as_secs_f64()
    );
    Throughput {
        route: route.name.to_owned(),
        size,
        messages: n,
        repeats: opts.repeats,
        load,
        raw_source,
        raw_sink,
        raw_source_server_us,
        raw_sink_server_us,
        ferry,
        peer,
        ratio,
        vs_peer,
        limiter,
        errors,
    }
}

/// Which side limits a route, from the measurements: at >= 90% of the
/// slower plain client, that endpoint; else ferry's CPU if it kept about a
/// core busy; else waiting (round trips: ferry idle while the endpoints
/// could go faster).
fn limiter(raw_source: f64, raw_sink: f64, ferry: Option<&BridgeRun>, ratio: f64) -> String {
    let Some(f) = ferry else {
        return "-".into();
    };
    let slower = if raw_source <= raw_sink {
        "source"
    } else {
        "sink"
    };
    if ratio >= 0.9 {
        format!("{slower} endpoint")
    } else if f.busy >= 0.85 {
        format!("ferry CPU ({:.0}% of a core)", f.busy * 100.0)
    } else {
        format!("round trips (ferry {:.0}% busy)", f.busy * 100.0)
    }
}
