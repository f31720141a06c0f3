//! The `ferry` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use ferry::config::Config;
use ferry::jobs::replay;
use ferry::observe::progress::LogWriter;
use ferry::observe::{self, Health};
use ferry::runtime::{self, RunOptions};
use ferry::values::{Span, Wait};

/// See Cargo.toml: glibc's malloc was 30% of the CPU of a busy route.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Moves data between Redis, Kafka and RabbitMQ, in any direction, without
/// losing it.
#[derive(Parser)]
#[command(name = "ferry", version, about, long_about = None)]
struct Cli {
    /// Log filter: error, warn, info, debug, trace, or per module
    /// (`info,ferry=debug`). Also read from FERRY_LOG.
    #[arg(long, global = true, env = "FERRY_LOG", default_value = "info")]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every pipeline of a config file until stopped (SIGINT/SIGTERM)
    /// or until their sources are exhausted.
    Run {
        /// The config file (TOML).
        config: PathBuf,
        /// After SIGINT/SIGTERM, how long to let in-flight messages finish
        /// before giving up on them (they are then read again next time).
        #[arg(long, default_value = "30s", value_parser = parse_span)]
        drain_timeout: Duration,
        /// How often each pipeline logs its progress.
        #[arg(long, default_value = "10s", value_parser = parse_span)]
        progress_every: Duration,
        /// Serve Prometheus metrics at /metrics, liveness at /health and
        /// readiness at /ready on this address (e.g. 127.0.0.1:9464).
        #[arg(long, env = "FERRY_HTTP", value_name = "ADDR")]
        http: Option<SocketAddr>,
    },
    /// Check a config file and print every problem; exits non-zero if any.
    Check {
        /// The config file (TOML).
        config: PathBuf,
        /// Also connect to every source and sink with the configured
        /// credentials and check what the pipelines need (topics, groups,
        /// keys, queues, permissions). Consumes and writes nothing.
        #[arg(long)]
        connect: bool,
    },
    /// Compare two record sets by key: topic vs topic, topic vs Redis keys,
    /// stream vs topic, a queue dump (JSON lines) vs a topic. Exits 0 when
    /// they agree, 1 when they differ, 2 on an error.
    Reconcile(ReconcileArgs),
    /// Print messages as they flow, without acknowledging or disturbing
    /// anything: a topic, a stream, an exchange, or a pipeline's source
    /// (with where its routes send each message).
    Tap {
        /// kafka://BROKERS/TOPIC, redis://HOST:PORT/DB?stream=NAME or
        /// amqp://HOST/VHOST?exchange=NAME[&routing_key=KEY]; or use
        /// --config.
        target: Option<String>,
        /// Tap the source of a pipeline of this config.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The pipeline (needed when the config has several).
        #[arg(long)]
        pipeline: Option<String>,
        /// Show only messages for which this jq expression is true.
        #[arg(long)]
        filter: Option<String>,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<u64>,
        /// `latest` (what arrives from now on), `earliest`, or a time.
        #[arg(long, default_value = "latest", value_parser = ferry::jobs::tap::parse_begin)]
        from: ferry::jobs::read::Begin,
    },
    /// Run the unit tests of a config's steps and routes, without brokers:
    /// `ferry test retail.toml` reads `retail.tests.toml` beside it.
    /// Exits 1 when a test fails.
    Test {
        /// Tests files (`*.tests.toml`) or configs with one beside them.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run one pipeline again from a chosen start to a chosen end, under a
    /// consumer group of its own (the live pipeline's group is untouched).
    /// Interrupt it at any time: the same command continues where it
    /// stopped. Exits 0 when done, 130 when interrupted.
    Replay {
        /// The config file (TOML).
        config: PathBuf,
        /// The pipeline to replay (needed when the config has several).
        #[arg(long)]
        pipeline: Option<String>,
        /// Where to begin: `earliest`, a time (RFC 3339 or epoch ms), Kafka
        /// offsets (`orders/0=120,orders/1=80`) or a stream entry id.
        /// Only where the replay group has no position yet.
        #[arg(long, default_value = "earliest", value_parser = replay::Start::parse)]
        from: replay::Start,
        /// Where to end (exclusive): `now` (the end at start), a time, Kafka
        /// offsets or a stream entry id.
        #[arg(long, default_value = "now", value_parser = replay::End::parse)]
        to: replay::End,
        /// The replay's consumer group (default `<group>-replay`); a new
        /// name starts over.
        #[arg(long)]
        group: Option<String>,
        /// Prefix every Redis sink key with this (`v2:`), to switch over later.
        #[arg(long)]
        key_prefix: Option<String>,
        /// Write every Redis sink into this server/database instead
        /// (`redis://127.0.0.1:6379/5`).
        #[arg(long)]
        redis_url: Option<String>,
        /// After SIGINT/SIGTERM, how long to let in-flight messages finish.
        #[arg(long, default_value = "30s", value_parser = parse_span)]
        drain_timeout: Duration,
        /// How often progress is logged when stderr is not a terminal.
        #[arg(long, default_value = "10s", value_parser = parse_span)]
        progress_every: Duration,
    },
}

fn parse_span(s: &str) -> Result<Duration, String> {
    Span::<Wait>::parse(s)
        .map(|s| s.0)
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match EnvFilter::try_new(&cli.log) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: invalid --log filter `{}`: {e}", cli.log);
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogWriter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    match cli.command {
        Command::Check { config, connect } => match Config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} pipeline{})",
                    config.display(),
                    c.pipelines.len(),
                    if c.pipelines.len() == 1 { "" } else { "s" }
                );
                print!("{}", ferry::config::topology::summary(&c));
                if connect {
                    return check_connect(&c);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Reconcile(args) => {
            let result = tokio::runtime::Runtime::new()
                .map_err(|e| format!("cannot start the async runtime: {e}"))
                .and_then(|rt| rt.block_on(reconcile_command(args)));
            match result {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Tap {
            target,
            config,
            pipeline,
            filter,
            count,
            from,
        } => {
            let result = tokio::runtime::Runtime::new()
                .map_err(|e| format!("cannot start the async runtime: {e}"))
                .and_then(|rt| {
                    rt.block_on(tap_command(target, config, pipeline, filter, count, from))
                });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Test { files } => {
            let (mut passed, mut failed) = (0, 0);
            for file in files {
                match ferry::jobs::unit_tests::run(&file) {
                    Ok(report) => {
                        out(&report.text);
                        passed += report.passed;
                        failed += report.failed;
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            out(&format!("{passed} passed, {failed} failed\n"));
            if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Replay {
            config,
            pipeline,
            from,
            to,
            group,
            key_prefix,
            redis_url,
            drain_timeout,
            progress_every,
        } => {
            let Some((config, runtime)) = load_with_runtime(&config) else {
                return ExitCode::from(2);
            };
            let options = replay::ReplayOptions {
                pipeline,
                from,
                to,
                group,
                key_prefix,
                redis_url,
            };
            let run_options = RunOptions {
                drain_timeout,
                progress_every,
                health: Health::new(),
            };
            match runtime.block_on(replay::run(&config, &options, run_options)) {
                Ok(outcome) => {
                    let t = outcome.totals;
                    let secs = outcome.elapsed.as_secs_f64();
                    out(&format!(
                        "{} {} messages in {secs:.1}s ({:.0}/s): confirmed {}, dead-lettered {}, \
                         dropped {}, failed {}\n",
                        if outcome.interrupted {
                            "interrupted after"
                        } else {
                            "replayed"
                        },
                        t.received,
                        t.confirmed as f64 / secs.max(0.001),
                        t.confirmed,
                        t.dead_lettered,
                        t.dropped,
                        t.failed
                    ));
                    if outcome.interrupted {
                        out("run the same command again to continue\n");
                        ExitCode::from(130)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run {
            config,
            drain_timeout,
            progress_every,
            http,
        } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            // Room for jq evaluations (see `steps::jq::MAX_STACK`).
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_stack_size(ferry::steps::jq::THREAD_STACK)
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let options = RunOptions {
                drain_timeout,
                progress_every,
                health: Health::new(),
            };
            runtime.block_on(run(config, options, http))
        }
    }
}

/// `ferry check --connect`: exit 1 if any part fails.
fn check_connect(config: &Config) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let reports = runtime.block_on(ferry::check::run(config));
    print!("{}", ferry::check::render(&reports));
    if reports.iter().all(|r| r.ok()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `ferry reconcile`'s arguments.
#[derive(clap::Args)]
struct ReconcileArgs {
    /// kafka://BROKERS/TOPIC, redis://HOST:PORT/DB?keys=PATTERN,
    /// redis://HOST:PORT/DB?stream=NAME or file:PATH (JSON lines).
    left: String,
    /// The other side, in the same forms.
    right: String,
    /// jq expression giving each record's key; `$key` is the message
    /// key (a Kafka key, a Redis key name).
    #[arg(long, default_value = "$key")]
    key: String,
    /// The key expression for the left side only.
    #[arg(long)]
    left_key: Option<String>,
    /// The key expression for the right side only.
    #[arg(long)]
    right_key: Option<String>,
    /// jq applied to both sides' values before comparing, e.g.
    /// `del(.updated_at)`.
    #[arg(long)]
    normalize: Option<String>,
    /// jq applied to the left values only (instead of --normalize).
    #[arg(long)]
    left_normalize: Option<String>,
    /// jq applied to the right values only (instead of --normalize).
    #[arg(long)]
    right_normalize: Option<String>,
    /// How many keys of each kind to list.
    #[arg(long, default_value_t = 10)]
    show: usize,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Records held in memory per side; more are sorted and spilled
    /// to disk (the temp directory) and merged.
    #[arg(long, default_value_t = 200_000)]
    memory_rows: usize,
    /// Write the records missing on the right into the right side
    /// (through the topic's or stream's sink, or keys by --repair-key).
    #[arg(long)]
    repair: bool,
    /// With --repair into Redis keys: the key template, e.g.
    /// `order:{order_id}`.
    #[arg(long)]
    repair_key: Option<String>,
}

/// Runs `ferry reconcile`; whether the sides agree.
async fn reconcile_command(a: ReconcileArgs) -> Result<bool, String> {
    use ferry::jobs::reconcile::{self, Extract, Options, Repair, Side};
    use ferry::steps::Jq;
    let jq = |flag: &str, s: &str| Jq::compile(s).map_err(|e| format!("--{flag}: {e}"));
    let extract =
        |key: Option<String>, norm: Option<String>, side: &str| -> Result<Extract, String> {
            Ok(Extract {
                key: jq(&format!("{side}-key"), key.as_deref().unwrap_or(&a.key))?,
                normalize: norm
                    .or_else(|| a.normalize.clone())
                    .map(|n| jq("normalize", &n))
                    .transpose()?,
            })
        };
    let (left, right) = (Side::parse(&a.left)?, Side::parse(&a.right)?);
    let repair = if a.repair {
        Some(Repair::open(&right, a.repair_key.as_deref()).await?)
    } else {
        None
    };
    let report = reconcile::run(Options {
        left_extract: extract(a.left_key.clone(), a.left_normalize.clone(), "left")?,
        right_extract: extract(a.right_key.clone(), a.right_normalize.clone(), "right")?,
        left,
        right,
        show: a.show,
        memory_rows: a.memory_rows,
        repair,
    })
    .await?;
    out(&reconcile::summary(&report));
    if let Some(path) = &a.output {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, json).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(report.agree)
}

/// Runs `ferry tap` until `count` messages or a signal.
async fn tap_command(
    target: Option<String>,
    config: Option<PathBuf>,
    pipeline: Option<String>,
    filter: Option<String>,
    count: Option<u64>,
    from: ferry::jobs::read::Begin,
) -> Result<(), String> {
    use ferry::jobs::tap::{Tap, Target};
    let filter = filter
        .map(|f| ferry::steps::Jq::compile(&f).map_err(|e| format!("--filter: {e}")))
        .transpose()?;
    let mut tap = Tap {
        filter,
        count,
        begin: from,
        router: None,
    };
    let (target, login) = match (target, config) {
        (Some(t), None) => (Target::parse(&t)?, Default::default()),
        (None, Some(path)) => {
            let config = Config::load(&path).map_err(|e| e.to_string())?;
            let p = ferry::jobs::pick_pipeline(&config, pipeline.as_deref())?;
            tap.router = Some(Tap::for_pipeline(&config, p));
            Target::of_pipeline(p)?
        }
        _ => {
            return Err(
                "tap a target (kafka://..., redis://..., amqp://...) or --config, one of them"
                    .into(),
            );
        }
    };
    tokio::select! {
        r = tap.run(&target, &login) => r.map(|_| ()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn out(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().write_all(text.as_bytes());
}

/// Loads a config (printing its problems) and starts the async runtime.
fn load_with_runtime(path: &std::path::Path) -> Option<(Config, tokio::runtime::Runtime)> {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return None;
        }
    };
    match tokio::runtime::Runtime::new() {
        Ok(r) => Some((config, r)),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

async fn run(config: Config, options: RunOptions, http: Option<SocketAddr>) -> ExitCode {
    let shutdown = CancellationToken::new();
    if let Err(e) = runtime::shutdown::cancel_on_signal(shutdown.clone()) {
        eprintln!("error: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    let endpoint_stop = CancellationToken::new();
    if let Some(addr) = http {
        // Before any pipeline starts: metric handles taken earlier are no-ops.
        let metrics = match observe::install_recorder() {
            Ok(m) => m,
            Err(e) => {
                eprintln!("error: cannot set up metrics: {e}");
                return ExitCode::FAILURE;
            }
        };
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "error: --http {addr}: cannot listen: {e} \
                     (is another process using the port? pick another, or 127.0.0.1:0 for any free one)"
                );
                return ExitCode::from(2);
            }
        };
        let endpoint = observe::http::Endpoint {
            metrics,
            health: options.health.clone(),
        };
        tokio::spawn(observe::http::serve(
            listener,
            endpoint,
            endpoint_stop.clone(),
        ));
    }
    let result = runtime::run(config, shutdown, options).await;
    endpoint_stop.cancel();
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(errors) => {
            for e in errors
                .iter()
                .filter(|e| !matches!(e, runtime::PipelineError::Stopped))
            {
                eprintln!("error: {e}");
                let text = ferry::connectors::diagnose::chain(e);
                if let Some(d) = ferry::connectors::diagnose::explain(&text) {
                    eprintln!("  fix: {}", d.fix);
                }
            }
            ExitCode::FAILURE
        }
    }
}
