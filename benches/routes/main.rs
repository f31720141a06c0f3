//! The route benchmark: for every route, ferry's rate beside the raw rate of
//! each endpoint's plain client in the same run, CPU per message, peak RSS,
//! latency at half of the saturation rate, and memory with a backlog behind
//! a paused sink. Writes a table, a JSON file and an SVG plot.
//!
//! ```text
//! cargo bench --bench routes                 # quick: a few minutes, for development
//! cargo bench --bench routes -- --full       # the full run (about half an hour)
//! scripts/bench.sh [--full] [options]        # the same, after checking the services
//! scripts/bench-peer.sh [--full]             # adds mq-bridge-app's rows
//! ```
//!
//! Options: `--routes a,b` (substring of route names), `--sizes 100,1024`,
//! `--repeats N`, `--scale F` (multiplies message counts), `--backlog N`
//! and `--backlog-size BYTES` (1,000,000 and 1024 in full mode), `--only
//! throughput,latency,backlog`, `--peer PATH` (an mq-bridge-app binary),
//! `--out DIR` (default target/ferry-bench), `--source-set "batch_size =
//! 1000"` and `--sink-set "batch_size = 10000"` (settings added to ferry's
//! source and sink; the defaults otherwise), `--attach CMD` (a profiler run
//! beside each ferry throughput run: `{pid}` and `{name}` are replaced, e.g.
//! `"perf record -g -p {pid} -o /tmp/{name}.data"`; it gets SIGINT at the end).
//!
//! Services: private tansu brokers and redis-servers per route (started
//! here), a vhost of its own on the RabbitMQ at 127.0.0.1:5672. Speed never
//! fails anything: the harness reports, it does not judge.

// Benchmark code: a panic is the run failing, and helpers are `pub` for
// the modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod backlog;
mod clients;
mod latency;
mod loaded;
mod metrics;
mod payload;
mod process;
mod report;
mod routes;
mod services;
mod throughput;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use report::Report;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type R<T> = Result<T, Error>;

/// The runtime the async clients (lapin, rdkafka's admin) run on.
pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("tokio runtime: {e}"))
    })
}

static AMQP_URL: OnceLock<String> = OnceLock::new();
static RABBITMQ_PID: OnceLock<Option<i32>> = OnceLock::new();
static OVERRIDES: OnceLock<(String, String)> = OnceLock::new();

/// Settings added to ferry's source and sink tables (`--source-set`,
/// `--sink-set`), to measure something other than the defaults.
pub fn overrides() -> (&'static str, &'static str) {
    OVERRIDES
        .get()
        .map_or(("", ""), |(a, b)| (a.as_str(), b.as_str()))
}

/// This run's RabbitMQ vhost.
pub fn amqp_url() -> String {
    AMQP_URL.get().cloned().unwrap_or_default()
}

/// The shared RabbitMQ node's OS process, when `rabbitmqctl` names it.
pub fn rabbitmq_pid() -> Option<i32> {
    RABBITMQ_PID.get().copied().flatten()
}

struct Plan {
    mode: &'static str,
    sizes: Vec<usize>,
    /// Messages per throughput run at 100 B; fewer for larger messages.
    base_messages: f64,
    repeats: usize,
    latency_secs: f64,
    backlog: u64,
    backlog_pause: Duration,
    /// Message size of the backlog (RabbitMQ's is always small).
    backlog_size: usize,
    routes: Option<Vec<String>>,
    only: Option<Vec<String>>,
    peer: Option<PathBuf>,
    out: Option<String>,
    attach: Option<String>,
    source_set: String,
    sink_set: String,
}

impl Plan {
    fn from_args() -> Result<Self, String> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let full = args.iter().any(|a| a == "--full");
        let mut p = if full {
            Plan {
                mode: "full",
                sizes: vec![100, 1024, 10240],
                base_messages: 200_000.0,
                repeats: 3,
                latency_secs: 10.0,
                backlog: 1_000_000,
                backlog_pause: Duration::from_secs(15),
                backlog_size: 1024,
                routes: None,
                only: None,
                peer: None,
                out: None,
                attach: None,
                source_set: String::new(),
                sink_set: String::new(),
            }
        } else {
            Plan {
                mode: "quick",
                sizes: vec![100, 1024, 10240],
                base_messages: 20_000.0,
                repeats: 1,
                latency_secs: 3.0,
                backlog: 100_000,
                backlog_pause: Duration::from_secs(4),
                backlog_size: 1024,
                routes: None,
                only: None,
                peer: None,
                out: None,
                attach: None,
                source_set: String::new(),
                sink_set: String::new(),
            }
        };
        let list = |v: &str| v.split(',').map(str::to_owned).collect::<Vec<_>>();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
            match a.as_str() {
                "--full" | "--quick" | "--bench" => {}
                "--routes" => p.routes = Some(list(&value()?)),
                "--only" => p.only = Some(list(&value()?)),
                "--sizes" => {
                    p.sizes = list(&value()?)
                        .iter()
                        .map(|s| s.parse().map_err(|e| format!("--sizes {s}: {e}")))
                        .collect::<Result<_, _>>()?
                }
                "--repeats" => {
                    p.repeats = value()?.parse().map_err(|e| format!("--repeats: {e}"))?
                }
                "--scale" => {
                    let f: f64 = value()?.parse().map_err(|e| format!("--scale: {e}"))?;
                    p.base_messages *= f;
                    p.backlog = (p.backlog as f64 * f) as u64;
                }
                "--latency-secs" => {
                    p.latency_secs = value()?
                        .parse()
                        .map_err(|e| format!("--latency-secs: {e}"))?
                }
                "--backlog" => {
                    p.backlog = value()?.parse().map_err(|e| format!("--backlog: {e}"))?
                }
                "--backlog-size" => {
                    p.backlog_size = value()?
                        .parse()
                        .map_err(|e| format!("--backlog-size: {e}"))?
                }
                "--peer" => p.peer = Some(PathBuf::from(value()?)),
                "--out" => p.out = Some(value()?),
                "--attach" => p.attach = Some(value()?),
                "--source-set" => p.source_set = value()?,
                "--sink-set" => p.sink_set = value()?,
                other if other.starts_with("--") => return Err(format!("unknown option {other}")),
                _ => {} // a name filter cargo passes along
            }
        }
        Ok(p)
    }

    /// 100 B: the base count; 1 KB: half; 10 KB: a tenth (memory in the
    /// brokers stays around 100-200 MB a run).
    fn messages(&self, size: usize) -> u64 {
        let f = match size {
            0..=512 => 1.0,
            513..=4096 => 0.5,
            _ => 0.1,
        };
        ((self.base_messages * f) as u64).max(100)
    }

    fn wants(&self, part: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|x| x == part))
    }

    fn selected(&self, name: &str) -> bool {
        self.routes
            .as_ref()
            .is_none_or(|r| r.iter().any(|x| name.contains(x.as_str())))
    }
}

fn main() {
    let plan = match Plan::from_args() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&plan) {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}

fn run(plan: &Plan) -> R<()> {
    payload::self_check()?;
    let out = services::out_dir(plan.out.as_deref())?;
    let vhost = services::RabbitVhost::create()?;
    let _ = AMQP_URL.set(vhost.url());
    let _ = RABBITMQ_PID.set(services::rabbitmq_pid());
    let _ = OVERRIDES.set((plan.source_set.clone(), plan.sink_set.clone()));
    let mut report = Report {
        mode: plan.mode.to_owned(),
        started: String::from_utf8_lossy(
            &std::process::Command::new("date")
                .arg("-u")
                .arg("+%Y-%m-%dT%H:%M:%SZ")
                .output()?
                .stdout,
        )
        .trim()
        .to_owned(),
        machine: format!(
            "{} cores",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        ),
        load_at_start: process::loadavg(),
        peer: plan.peer.as_ref().map(|p| p.display().to_string()),
        ..Default::default()
    };
    let routes: Vec<routes::Route> = routes::ROUTES
        .iter()
        .copied()
        .filter(|r| plan.selected(r.name))
        .collect();
    let opts = throughput::Options {
        amqp_url: &vhost.url(),
        peer: plan.peer.as_deref(),
        repeats: plan.repeats,
        timeout: Duration::from_secs(300),
        attach: plan.attach.as_deref(),
    };
    if plan.wants("throughput") {
        for route in &routes {
            for &size in &plan.sizes {
                report.throughput.push(throughput::measure(
                    *route,
                    size,
                    plan.messages(size),
                    &opts,
                ));
            }
        }
    }
    if plan.wants("latency") {
        let size = 1024;
        for route in &routes {
            let known = report
                .throughput
                .iter()
                .find(|t| t.route == route.name && t.size == size)
                .and_then(|t| t.ferry.as_ref().map(|f| f.rate));
            let saturation = match known {
                Some(r) => r,
                None => {
                    let once = throughput::Options {
                        repeats: 1,
                        peer: None,
                        ..opts
                    };
                    let t = throughput::measure(*route, size, plan.messages(size), &once);
                    let r = t.ferry.as_ref().map(|f| f.rate);
                    report.throughput.push(t);
                    r.unwrap_or(2000.0)
                }
            };
            report.latency.push(loaded::measure(
                *route,
                size,
                (saturation / 2.0).round(),
                plan.latency_secs,
            ));
        }
    }
    if plan.wants("backlog") {
        for route in backlog::cases()
            .into_iter()
            .filter(|r| plan.selected(r.name))
        {
            // RabbitMQ is shared: its backlog is of small messages.
            let size = if route.source == routes::Source::Amqp {
                plan.backlog_size.min(200)
            } else {
                plan.backlog_size
            };
            report.backlog.push(backlog::measure(
                route,
                plan.backlog,
                size,
                plan.backlog_pause,
                plan.backlog_pause,
            ));
        }
    }
    report.load_at_end = process::loadavg();
    let text = report::tables(&report);
    print!("{text}");
    let stamp = report.started.replace(':', "");
    let base = out.join(format!("routes-{}-{stamp}", plan.mode));
    std::fs::write(base.with_extension("txt"), &text)?;
    std::fs::write(
        base.with_extension("json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(base.with_extension("svg"), report::svg(&report, 1024))?;
    println!("\nwritten: {}.{{txt,json,svg}}", base.display());
    Ok(())
}
