//! The `ferry` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use ferry::config::Config;
use ferry::config::values::{Span, Wait};
use ferry::observe::progress::LogWriter;
use ferry::observe::{self, Health};
use ferry::runtime::{self, RunOptions};

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
