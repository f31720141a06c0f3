//! One pipeline: a source, its sinks, the channels between them, and the
//! order in which they stop.
//!
//! ```text
//!  source ──read_loop──> [bounded channel] ──SinkTask──> sink 1
//!                    └─> [bounded channel] ──SinkTask──> sink 2
//!                                      rejected ──> [bounded] ──SinkTask──> dead letter
//! ```
//!
//! Stopping: the read loop ends (shutdown, exhausted source, failure) and
//! drops its senders; each sink task drains its channel and ends, which
//! drops the dead-letter sender, so the dead-letter task ends last. Only
//! then is the source closed, so its final commit covers everything that
//! was confirmed.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::in_flight::Window;
use super::router::{Plan, Refused, Router};
use super::sink_task::{Delivery, Rejections, SinkTask};
use super::stats::{SinkStats, Stats, Totals, report_progress};
use super::{PipelineError, RunOptions};
use crate::ack::Ack;
use crate::backoff::Backoff;
use crate::config::pipeline::Unmatched;
use crate::config::{PipelineConfig, SinkSpec};
use crate::connectors::{AnySource, Sink, SinkRunner, Source};
use crate::error::{ConnectorError, MessageError};
use crate::message::Message;
use crate::observe::{Health, Probe, names};
use crate::position::Settled;

type SinkHandle = JoinHandle<Result<(), PipelineError>>;

/// Runs one pipeline until its source is exhausted, `shutdown` is
/// cancelled, or it fails.
pub(crate) async fn run_pipeline(
    config: PipelineConfig,
    router: Router,
    shutdown: CancellationToken,
    options: RunOptions,
) -> Result<Totals, PipelineError> {
    let name = config.name.to_string();
    let probes = Probes::register(&options.health, &config);
    let result = run_parts(config, router, shutdown, &options, &probes).await;
    for probe in probes.all() {
        match &result {
            Ok(_) | Err(PipelineError::Stopped) => probe.finished(),
            Err(e) => probe.failed(e),
        }
    }
    if let Err(e) = &result {
        debug!(pipeline = %name, "pipeline ended: {e}");
    }
    result
}

/// The health probes of one pipeline, registered before anything opens so
/// that `/ready` does not report a half-opened pipeline as ready.
struct Probes {
    source: Probe,
    dead_letter: Option<Probe>,
    sinks: Vec<Probe>,
}

impl Probes {
    fn register(health: &Health, config: &PipelineConfig) -> Probes {
        let pipeline = config.name.as_str();
        Probes {
            source: health.probe(pipeline, "source"),
            dead_letter: config
                .dead_letter
                .as_ref()
                .map(|_| health.probe(pipeline, "dead_letter")),
            sinks: config
                .sinks
                .iter()
                .enumerate()
                .map(|(i, s)| health.probe(pipeline, &format!("sink:{}", s.id(i))))
                .collect(),
        }
    }

    fn all(&self) -> impl Iterator<Item = &Probe> {
        std::iter::once(&self.source)
            .chain(&self.dead_letter)
            .chain(&self.sinks)
    }
}

async fn run_parts(
    config: PipelineConfig,
    router: Router,
    shutdown: CancellationToken,
    options: &RunOptions,
    probes: &Probes,
) -> Result<Totals, PipelineError> {
    let name = config.name.to_string();
    let stats = Arc::new(Stats::new(&name));
    let stop = shutdown.child_token();
    let started = Instant::now();

    // What the source settles for good, for sinks that record positions.
    let settled = Settled::new();
    let Some(mut source) = open_retrying(&name, "source", &probes.source, &stop, || {
        AnySource::open(&name, &config.source, &probes.source, &settled)
    })
    .await?
    else {
        return Ok(stats.totals());
    };

    let capacity = config.buffer.get();
    let mut tasks = Vec::new();
    // The probes were registered from the same config, one per sink.
    let rejections = match config.dead_letter.as_ref().zip(probes.dead_letter.as_ref()) {
        Some((dl, probe)) => {
            let (tx, rx) = mpsc::channel(capacity);
            let label = dl
                .name
                .as_ref()
                .map_or("dead_letter".to_owned(), |n| format!("dead_letter `{n}`"));
            let context = SinkContext {
                label: &label,
                id: "dead_letter",
                probe,
                settled: &settled,
            };
            let Some(task) =
                spawn_sink(&name, context, dl, rx, Rejections::Stop, &stats, &stop).await?
            else {
                return Ok(stats.totals());
            };
            tasks.push(task);
            Rejections::DeadLetterSink(tx)
        }
        None if config.source.rejects_natively() => Rejections::Source,
        None => Rejections::Stop,
    };
    let mut senders = Vec::new();
    for ((i, sink), probe) in config.sinks.iter().enumerate().zip(&probes.sinks) {
        let (tx, rx) = mpsc::channel(capacity);
        let (label, id) = (sink.label(i), sink.id(i));
        let context = SinkContext {
            label: &label,
            id: &id,
            probe,
            settled: &settled,
        };
        let Some(task) =
            spawn_sink(&name, context, sink, rx, rejections.clone(), &stats, &stop).await?
        else {
            return Ok(stats.totals());
        };
        tasks.push(task);
        senders.push(tx);
    }

    let expected = source.expected();
    let progress_stop = CancellationToken::new();
    let progress = tokio::spawn(report_progress(
        name.clone(),
        Arc::clone(&stats),
        options.progress_every,
        expected,
        progress_stop.clone(),
    ));

    match expected {
        Some(expected) => info!(pipeline = %name, sinks = senders.len(), expected,
            "pipeline running a job of {expected} messages"),
        None => info!(pipeline = %name, sinks = senders.len(), "pipeline running"),
    }
    let outlets = Outlets {
        pipeline: &name,
        sinks: &senders,
        rejections: &rejections,
        unmatched: config.unmatched,
        stop: &stop,
        stats: &stats,
    };
    let read_result = read_loop(&mut source, &router, &outlets, &probes.source).await;
    // Once the read loop and the sink tasks let go of their senders, the
    // dead-letter task sees its channel close and ends last.
    drop(senders);
    drop(rejections);

    let sink_results = drain(&name, tasks, &stop, options.drain_timeout).await;
    let close_result = source.close().await.map_err(|e| PipelineError::Source {
        pipeline: name.clone(),
        source: Box::new(e),
    });
    progress_stop.cancel();
    let _ = progress.await;

    let totals = stats.totals();
    let secs = started.elapsed().as_secs_f64();
    info!(
        pipeline = %name,
        received = totals.received,
        confirmed = totals.confirmed,
        failed = totals.failed,
        dead_lettered = totals.dead_lettered,
        dropped = totals.dropped,
        seconds = format!("{secs:.1}"),
        rate = format!("{:.0}/s", totals.confirmed as f64 / secs.max(0.001)),
        "pipeline stopped"
    );

    // The first real error wins; `Stopped` only says "because of another".
    let mut errors: Vec<PipelineError> = std::iter::once(read_result)
        .chain(sink_results)
        .chain(std::iter::once(close_result))
        .filter_map(Result::err)
        .collect();
    errors.sort_by_key(|e| matches!(e, PipelineError::Stopped));
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(totals),
    }
}

/// Opens a connector, retrying while the error is retryable (the broker is
/// not up yet). `Ok(None)` when shutdown came first.
async fn open_retrying<T, F, Fut>(
    pipeline: &str,
    role: &str,
    probe: &Probe,
    stop: &CancellationToken,
    open: F,
) -> Result<Option<T>, PipelineError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, ConnectorError>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    loop {
        probe.attempt();
        let attempt = tokio::select! {
            r = open() => r,
            _ = stop.cancelled() => return Ok(None),
        };
        match attempt {
            Ok(c) => {
                probe.opened();
                return Ok(Some(c));
            }
            Err(e) if e.is_retryable() => {
                let delay = backoff.next_delay();
                warn!(pipeline, role, "cannot open: {e}; retrying in {delay:?}");
                probe.retrying(&e);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => return Ok(None),
                }
            }
            Err(e) => {
                return Err(PipelineError::Open {
                    pipeline: pipeline.to_owned(),
                    role: role.to_owned(),
                    source: Box::new(e),
                });
            }
        }
    }
}

/// How one sink of a pipeline is named and watched.
struct SinkContext<'a> {
    /// For logs and errors: ``sink `db` ``.
    label: &'a str,
    /// For metrics: `db`.
    id: &'a str,
    probe: &'a Probe,
    /// The pipeline's settled source positions (`exactly_once`).
    settled: &'a Arc<Settled>,
}

/// Opens a sink and starts the task that feeds it.
async fn spawn_sink(
    pipeline: &str,
    context: SinkContext<'_>,
    spec: &SinkSpec,
    rx: mpsc::Receiver<Delivery>,
    rejections: Rejections,
    stats: &Arc<Stats>,
    stop: &CancellationToken,
) -> Result<Option<SinkHandle>, PipelineError> {
    let SinkContext {
        label,
        id,
        probe,
        settled,
    } = context;
    let task = SinkTask {
        pipeline: pipeline.to_owned(),
        sink_name: label.to_owned(),
        probe: probe.clone(),
        metrics: SinkStats::new(pipeline, id),
        batch_size: spec.connector.batch_size(),
        window: Window {
            messages: spec
                .in_flight
                .get()
                .saturating_mul(spec.connector.batch_size()),
            bytes: spec.in_flight_kbytes.get().saturating_mul(1024),
        },
        retry: spec.retry,
        stats: Arc::clone(stats),
        rejections,
        pipeline_stop: stop.clone(),
    };
    Ok(open_retrying(pipeline, label, probe, stop, || {
        spec.connector.open(pipeline, probe, settled)
    })
    .await?
    .map(|sink| sink.run(Spawn { task, rx })))
}

/// Starts a sink task on an open sink, whatever its kind.
struct Spawn {
    task: SinkTask,
    rx: mpsc::Receiver<Delivery>,
}

impl SinkRunner for Spawn {
    type Output = SinkHandle;

    fn run<S: Sink>(self, sink: S) -> SinkHandle {
        tokio::spawn(self.task.run(sink, self.rx))
    }
}

/// Where the read loop hands messages over.
struct Outlets<'a> {
    pipeline: &'a str,
    sinks: &'a [mpsc::Sender<Delivery>],
    rejections: &'a Rejections,
    unmatched: Unmatched,
    stop: &'a CancellationToken,
    stats: &'a Arc<Stats>,
}

/// Reads from the source, runs the router, and hands each resulting
/// message to its sinks. Waiting for room in a full sink channel is the
/// backpressure: while the sinks are behind, nothing more is read.
async fn read_loop(
    source: &mut AnySource,
    router: &Router,
    out: &Outlets<'_>,
    probe: &Probe,
) -> Result<(), PipelineError> {
    let errors = metrics::counter!(names::SOURCE_ERRORS, "pipeline" => out.pipeline.to_owned());
    let pipeline = out.pipeline;
    let stop = out.stop;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    // Made once: each `stop.cancelled()` registers with the token (a lock)
    // when polled and leaves when dropped, twice a message otherwise.
    let mut cancelled = std::pin::pin!(stop.cancelled());
    loop {
        let next = tokio::select! {
            biased;
            _ = &mut cancelled => return Ok(()),
            next = source.next() => next,
        };
        let envelope = match next {
            Ok(Some(envelope)) => {
                backoff.reset();
                probe.up();
                envelope
            }
            Ok(None) => {
                info!(pipeline, "source exhausted; finishing");
                return Ok(());
            }
            Err(e) if e.is_retryable() => {
                let delay = backoff.next_delay();
                warn!(pipeline, "source: {e}; retrying in {delay:?}");
                errors.increment(1);
                probe.retrying(&e);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = &mut cancelled => return Ok(()),
                }
            }
            Err(e) => {
                stop.cancel();
                return Err(PipelineError::Source {
                    pipeline: pipeline.to_owned(),
                    source: Box::new(e),
                });
            }
        };
        out.stats.received();
        let ack = counted(envelope.ack, Arc::clone(out.stats));
        let handed = tokio::select! {
            r = hand_over(envelope.message, ack, envelope.dead_letter, router, out) => r,
            _ = &mut cancelled => return Ok(()),
        };
        handed?;
    }
}

/// Routes one source message and sends the results on.
async fn hand_over(
    message: Message,
    ack: Ack,
    dead_letter: Option<String>,
    router: &Router,
    out: &Outlets<'_>,
) -> Result<(), PipelineError> {
    let reject = |message: Message, ack: Ack, stage: &'static str, error: MessageError| {
        let delivery = Delivery {
            message: Arc::new(message),
            ack,
        };
        out.rejections
            .reject(out.pipeline, stage, delivery, error, 1, out.stats)
    };
    if let Some(reason) = dead_letter {
        return reject(message, ack, "source", MessageError::GaveUp(reason)).await;
    }
    let stopping = || super::shutdown::signalled() || out.stop.is_cancelled();
    let origin = tracing::enabled!(tracing::Level::DEBUG).then(|| message.describe_origin());
    let plan = match router.plan(message, &stopping) {
        Ok(Plan::Deliver(plan)) => plan,
        Ok(Plan::Echo(echo, sinks)) => {
            // Not delivered as data: counted as dropped.
            out.stats.dropped.add(1);
            return send(Arc::from(echo), ack.split(sinks.len()), &sinks, out).await;
        }
        Ok(Plan::Interrupted) => {
            // Not acknowledged: the source delivers it again next time.
            drop(ack);
            return Ok(());
        }
        Ok(Plan::Dropped(why)) => {
            debug!(pipeline = out.pipeline, origin, "dropped: {why}");
            out.stats.dropped.add(1);
            ack.delivered();
            return Ok(());
        }
        Err(refused) => {
            let Refused { message, error } = *refused;
            return reject(message, ack, "steps", error).await;
        }
    };
    // One ack handle per (message, sink), and per unmatched message that
    // is dead-lettered; filtered and dropped messages need none.
    let handles_for = |sinks: &[usize]| match (sinks.is_empty(), out.unmatched) {
        (true, Unmatched::DeadLetter) => 1,
        _ => sinks.len(),
    };
    let handles = plan.iter().map(|(_, s)| handles_for(s)).sum();
    if plan.is_empty() {
        out.stats.dropped.add(1);
    }
    let mut acks = ack.split(handles);
    // `part`: which of the messages the steps made of the source message
    // this one is (see `position::Position`).
    for (part, (mut message, sinks)) in plan.into_iter().enumerate() {
        message.part = u32::try_from(part).unwrap_or(u32::MAX);
        if sinks.is_empty() {
            match out.unmatched {
                Unmatched::Drop => out.stats.dropped.add(1),
                Unmatched::DeadLetter => {
                    let ack = acks.next().ok_or(PipelineError::Bug("ack count".into()))?;
                    let error = MessageError::Unsupported("no route matched the message".into());
                    reject(message, ack, "routes", error).await?;
                }
            }
            continue;
        }
        send(
            Arc::new(message),
            acks.by_ref().take(sinks.len()),
            &sinks,
            out,
        )
        .await?;
    }
    Ok(())
}

/// Sends one message to `sinks`, each with its own share of the ack.
async fn send(
    message: Arc<Message>,
    mut acks: impl Iterator<Item = Ack>,
    sinks: &[usize],
    out: &Outlets<'_>,
) -> Result<(), PipelineError> {
    for &i in sinks {
        let ack = acks.next().ok_or(PipelineError::Bug("ack count".into()))?;
        let delivery = Delivery {
            message: Arc::clone(&message),
            ack,
        };
        let tx = out
            .sinks
            .get(i)
            .ok_or(PipelineError::Bug("sink index".into()))?;
        tx.send(delivery)
            .await
            .map_err(|_| PipelineError::Stopped)?;
    }
    Ok(())
}

/// A source's ack that also counts its outcome in the pipeline's stats.
fn counted(inner: Ack, stats: Arc<Stats>) -> Ack {
    inner.observed(move |outcome| stats.completed(outcome))
}

/// Waits for the sink tasks to finish their channels. Once `stop` is
/// cancelled they get `timeout` more; then they are aborted, and whatever
/// they held is reported to the source as failed (read again later).
async fn drain(
    pipeline: &str,
    tasks: Vec<SinkHandle>,
    stop: &CancellationToken,
    timeout: Duration,
) -> Vec<Result<(), PipelineError>> {
    let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
    let all = futures::future::join_all(tasks);
    tokio::pin!(all);
    let deadline = async {
        stop.cancelled().await;
        tokio::time::sleep(timeout).await;
    };
    let joined = tokio::select! {
        joined = &mut all => joined,
        _ = deadline => {
            warn!(pipeline, ?timeout, "sinks did not drain in time; unconfirmed messages will be read again");
            for a in &aborts {
                a.abort();
            }
            all.await
        }
    };
    joined
        .into_iter()
        .map(|r| match r {
            Ok(result) => result,
            Err(e) if e.is_cancelled() => Ok(()),
            Err(e) => Err(PipelineError::Bug(format!("sink task panicked: {e}"))),
        })
        .collect()
}

#[cfg(test)]
mod tests;
