//! The sink task against a scripted in-memory sink: each `write` call
//! answers what the test scripted, so batching, retries, giving up,
//! dead-lettering and result counts are checked without a broker.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::ack::{Ack, Outcome};
use crate::connectors::Confirming;
use crate::error::ConnectorError;
use crate::message::{Headers, Origin};
use crate::values::{Count, Span};

/// What one `write` call answers.
enum Answer {
    /// Every message of the batch is confirmed.
    Ok,
    /// The whole batch fails with a retryable error.
    Retry,
    /// The whole batch fails with an error retrying cannot fix.
    Fatal,
    /// The message at this index of the batch is refused.
    Refuse(usize),
    /// One result too few.
    Short,
}

/// A sink that answers from a script and records every batch it saw.
#[derive(Clone, Default)]
struct Scripted {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    batches: Arc<Mutex<Vec<Vec<String>>>>,
    /// Each write waits this long (a slow sink)...
    delay: Duration,
    /// ...unless a delay is scripted for it, batch by batch.
    delays: Arc<Mutex<VecDeque<Duration>>>,
    /// Messages in flight now, and the most ever.
    flying: Arc<(AtomicUsize, AtomicUsize)>,
    /// Says it cannot have two batches in flight (like `exactly_once`).
    serial: bool,
}

impl Scripted {
    fn new(answers: impl IntoIterator<Item = Answer>) -> Self {
        Self {
            answers: Arc::new(Mutex::new(answers.into_iter().collect())),
            ..Self::default()
        }
    }

    fn batches(&self) -> Vec<Vec<String>> {
        self.batches.lock().unwrap().clone()
    }
}

impl crate::connectors::Sink for Scripted {
    type Prepared = String;

    fn prepare(&self, message: &Message) -> Result<String, MessageError> {
        let text = String::from_utf8_lossy(message.payload.as_deref().unwrap_or_default());
        if text == "not json" {
            return Err(MessageError::Unsupported("not JSON".into()));
        }
        Ok(text.into_owned())
    }

    async fn send(&mut self, batch: Arc<[String]>) -> Result<Confirming, ConnectorError> {
        self.batches.lock().unwrap().push(batch.to_vec());
        let answer = self
            .answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Answer::Ok);
        let delay = self
            .delays
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(self.delay);
        let flying = Arc::clone(&self.flying);
        let now = flying.0.fetch_add(batch.len(), Ordering::SeqCst) + batch.len();
        flying.1.fetch_max(now, Ordering::SeqCst);
        Ok(Box::pin(async move {
            tokio::time::sleep(delay).await;
            flying.0.fetch_sub(batch.len(), Ordering::SeqCst);
            let ok = || batch.iter().map(|_| Ok(())).collect::<Vec<_>>();
            match answer {
                Answer::Ok => Ok(ok()),
                Answer::Retry => Err(ConnectorError::Retry("broker away".into())),
                Answer::Fatal => Err(ConnectorError::Fatal("not allowed".into())),
                Answer::Refuse(i) => {
                    let mut results = ok();
                    results[i] = Err(MessageError::Refused {
                        system: "test",
                        reason: "WRONGTYPE".into(),
                    });
                    Ok(results)
                }
                Answer::Short => {
                    let mut results = ok();
                    results.pop();
                    Ok(results)
                }
            }
        }))
    }

    fn overlaps(&self) -> bool {
        !self.serial
    }
}

fn task(attempts: Option<usize>, rejections: Rejections) -> SinkTask {
    SinkTask {
        pipeline: "p".into(),
        sink_name: "sink `s`".into(),
        batch_size: 10,
        window: Window {
            messages: 40,
            bytes: 1 << 20,
        },
        retry: RetryConfig {
            initial: Span::new(Duration::from_millis(1)),
            max: Span::new(Duration::from_millis(2)),
            attempts: attempts.map(Count::new),
        },
        stats: Arc::new(Stats::new("p")),
        metrics: SinkStats::new("p", "s"),
        probe: Probe::detached("p", "sink:s"),
        rejections,
        pipeline_stop: CancellationToken::new(),
    }
}

/// A task that stops on a rejection, with batches of `batch_size` and a
/// window of `messages` and `bytes`.
fn windowed(batch_size: usize, messages: usize, bytes: usize) -> SinkTask {
    SinkTask {
        batch_size,
        window: Window { messages, bytes },
        ..task(None, Rejections::Stop)
    }
}

/// A delivery of `payload` and the receiver of its source's outcome.
fn delivery(payload: &str) -> (Delivery, std::sync::mpsc::Receiver<Outcome>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let ack = Ack::new(move |o| {
        tx.send(o).ok();
    });
    let message = Arc::new(Message::from_payload(payload.to_owned()));
    (Delivery { message, ack }, rx)
}

/// Runs the task over `payloads` (sent before it starts, so they form
/// one batch) and returns its result and each source outcome.
async fn run(
    task: SinkTask,
    sink: Scripted,
    payloads: &[&str],
) -> (Result<(), PipelineError>, Vec<Option<Outcome>>) {
    let (tx, rx) = mpsc::channel(64);
    let mut outcomes = Vec::new();
    for p in payloads {
        let (d, o) = delivery(p);
        tx.send(d).await.unwrap();
        outcomes.push(o);
    }
    drop(tx);
    let result = task.run(sink, rx).await;
    let outcomes = outcomes.iter().map(|o| o.try_recv().ok()).collect();
    (result, outcomes)
}

#[tokio::test]
async fn a_batch_that_fails_twice_is_retried_and_then_confirmed() {
    let sink = Scripted::new([Answer::Retry, Answer::Retry, Answer::Ok]);
    let t = task(None, Rejections::Stop);
    let (result, outcomes) = run(t, sink.clone(), &["a", "b"]).await;
    assert!(result.is_ok());
    assert_eq!(outcomes, [Some(Outcome::Delivered); 2]);
    assert_eq!(sink.batches().len(), 3, "written three times");
    assert_eq!(sink.batches()[2], ["a", "b"], "the same batch each time");
}

#[tokio::test]
async fn a_source_hears_nothing_while_its_batch_is_retried() {
    let (tx, rx) = mpsc::channel(4);
    let sink = Scripted::new(std::iter::repeat_with(|| Answer::Retry).take(1000));
    let t = task(None, Rejections::Stop);
    let (d, outcome) = delivery("a");
    tx.send(d).await.unwrap();
    let handle = tokio::spawn(t.run(sink, rx));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        outcome.try_recv().is_err(),
        "not acknowledged while failing"
    );
    handle.abort();
    let _ = handle.await;
    drop(tx);
    assert_eq!(
        outcome.recv_timeout(Duration::from_secs(1)),
        Ok(Outcome::Failed),
        "an abandoned write is reported failed, to be delivered again"
    );
}

#[tokio::test]
async fn after_the_last_attempt_the_batch_goes_to_the_dead_letter_sink_with_the_reason() {
    let (dl_tx, mut dl_rx) = mpsc::channel(8);
    let sink = Scripted::new([Answer::Retry, Answer::Retry, Answer::Retry]);
    let t = task(Some(3), Rejections::DeadLetterSink(dl_tx));
    let stats = Arc::clone(&t.stats);
    let (result, outcomes) = run(t, sink.clone(), &["a", "b"]).await;
    assert!(result.is_ok());
    assert_eq!(sink.batches().len(), 3);
    assert_eq!(
        outcomes,
        [None, None],
        "held until the dead letter is written"
    );
    for expected in ["a", "b"] {
        let dead = dl_rx.recv().await.expect("a dead letter");
        let m = &dead.message;
        assert_eq!(m.payload.as_deref(), Some(expected.as_bytes()));
        let header = |name| String::from_utf8_lossy(&m.headers.get(name).unwrap()[..]).into_owned();
        assert!(header(dead_letter_headers::ERROR).contains("gave up after 3 attempts"));
        assert_eq!(header(dead_letter_headers::ATTEMPTS), "3");
        assert_eq!(header(dead_letter_headers::SINK), "sink `s`");
        assert_eq!(header(dead_letter_headers::PIPELINE), "p");
        dead.ack.delivered();
    }
    assert_eq!(stats.dead_lettered.get(), 2);
}

#[tokio::test]
async fn a_refused_message_is_dead_lettered_and_the_rest_of_its_batch_confirmed() {
    let (dl_tx, mut dl_rx) = mpsc::channel(8);
    let sink = Scripted::new([Answer::Refuse(1)]);
    let t = task(None, Rejections::DeadLetterSink(dl_tx));
    let (result, outcomes) = run(t, sink, &["a", "b", "c"]).await;
    assert!(result.is_ok());
    assert_eq!(
        outcomes,
        [Some(Outcome::Delivered), None, Some(Outcome::Delivered)]
    );
    let dead = dl_rx.recv().await.unwrap();
    assert_eq!(dead.message.payload.as_deref(), Some(&b"b"[..]));
    let error = dead
        .message
        .headers
        .get(dead_letter_headers::ERROR)
        .unwrap();
    assert!(String::from_utf8_lossy(error).contains("WRONGTYPE"));
}

#[tokio::test]
async fn a_message_that_cannot_be_prepared_never_reaches_the_sink() {
    let sink = Scripted::new([]);
    let t = task(None, Rejections::Source);
    let (result, outcomes) = run(t, sink.clone(), &["a", "not json", "c"]).await;
    assert!(result.is_ok());
    assert_eq!(
        outcomes,
        [
            Some(Outcome::Delivered),
            Some(Outcome::Rejected),
            Some(Outcome::Delivered)
        ]
    );
    assert_eq!(sink.batches(), [vec!["a".to_owned(), "c".to_owned()]]);
}

#[tokio::test]
async fn without_a_dead_letter_sink_a_refused_message_stops_the_pipeline() {
    let sink = Scripted::new([Answer::Refuse(0)]);
    let t = task(None, Rejections::Stop);
    let stop = t.pipeline_stop.clone();
    let (result, outcomes) = run(t, sink, &["a"]).await;
    assert!(
        matches!(result, Err(PipelineError::Undeliverable { .. })),
        "{result:?}"
    );
    assert!(stop.is_cancelled(), "the source is told to stop reading");
    assert_eq!(outcomes, [Some(Outcome::Failed)], "never acknowledged");
}

#[tokio::test]
async fn a_fatal_error_stops_the_pipeline_without_acknowledging() {
    let sink = Scripted::new([Answer::Fatal]);
    let t = task(None, Rejections::Stop);
    let (result, outcomes) = run(t, sink.clone(), &["a", "b"]).await;
    assert!(
        matches!(result, Err(PipelineError::Sink { .. })),
        "{result:?}"
    );
    assert_eq!(sink.batches().len(), 1, "not retried");
    assert_eq!(outcomes, [Some(Outcome::Failed); 2]);
}

#[tokio::test]
async fn a_sink_that_returns_the_wrong_number_of_results_is_a_bug_not_a_delivery() {
    let sink = Scripted::new([Answer::Short]);
    let t = task(None, Rejections::Stop);
    let (result, outcomes) = run(t, sink, &["a", "b"]).await;
    assert!(matches!(result, Err(PipelineError::Bug(_))), "{result:?}");
    assert_eq!(outcomes, [Some(Outcome::Failed); 2]);
}

#[tokio::test]
async fn waiting_messages_are_taken_as_one_batch_up_to_the_batch_size() {
    let sink = Scripted::new([]);
    let t = task(None, Rejections::Stop);
    let payloads: Vec<String> = (0..25).map(|i| i.to_string()).collect();
    let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
    let (result, _) = run(t, sink.clone(), &refs).await;
    assert!(result.is_ok());
    let sizes: Vec<usize> = sink.batches().iter().map(Vec::len).collect();
    assert_eq!(sizes, [10, 10, 5]);
}

#[tokio::test]
async fn a_slow_sink_fills_its_channel_and_the_sender_waits() {
    let (tx, rx) = mpsc::channel(2);
    let sink = Scripted {
        delay: Duration::from_millis(200),
        ..Scripted::new([])
    };
    let t = windowed(1, 4, 1 << 20);
    let handle = tokio::spawn(t.run(sink, rx));
    let mut sent = 0;
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_millis(100) {
        let (d, _) = delivery("x");
        if tokio::time::timeout(Duration::from_millis(10), tx.send(d))
            .await
            .is_ok()
        {
            sent += 1;
        }
    }
    assert!(
        sent <= 6,
        "the channel (2) and the window (4 messages) bound what the sender gets rid of: {sent}"
    );
    drop(tx);
    handle.await.unwrap().unwrap();
}

#[test]
fn an_undeliverable_message_is_named_by_what_stays_the_same_on_redelivery() {
    let m = Message {
        key: Some("o-7".into()),
        headers: [("amqp.message_id", "msg-42")]
            .into_iter()
            .collect::<Headers>(),
        origin: Origin::Amqp {
            queue: "orders".into(),
            exchange: "shop".into(),
            routing_key: "order.new".into(),
            delivery_tag: 3,
        },
        ..Message::from_payload(format!(
            "{{\"order_id\": 7, \"note\": \"{}\"}}",
            "x".repeat(100)
        ))
    };
    let named = identify(&m);
    assert!(
        named.contains("exchange=shop routing_key=order.new"),
        "{named}"
    );
    assert!(named.contains("message_id=msg-42 key=o-7"), "{named}");
    assert!(
        named.contains("payload (127 bytes): {\\\"order_id\\\": 7, \\\"note\\\": \\\"xxx"),
        "{named}"
    );
    assert!(named.ends_with("xxx..."), "{named}");
    assert!(identify(&Message::default()).ends_with("(tombstone)"));
}

/// Sends `payloads` one batch each (batch size 1) to a running task;
/// returns the task and each source outcome.
async fn start(
    t: SinkTask,
    sink: Scripted,
    payloads: &[&str],
) -> (
    tokio::task::JoinHandle<Result<(), PipelineError>>,
    Vec<std::sync::mpsc::Receiver<Outcome>>,
) {
    let (tx, rx) = mpsc::channel(64);
    let t = SinkTask { batch_size: 1, ..t };
    let handle = tokio::spawn(t.run(sink, rx));
    let mut outcomes = Vec::new();
    for p in payloads {
        let (d, o) = delivery(p);
        tx.send(d).await.unwrap();
        outcomes.push(o);
        // Each its own batch: the task takes it before the next arrives.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(tx);
    (handle, outcomes)
}

#[tokio::test]
async fn a_later_batch_confirmed_first_acknowledges_only_its_own_messages() {
    let sink = Scripted::new([]);
    *sink.delays.lock().unwrap() = [Duration::from_millis(300), Duration::ZERO].into();
    let (handle, outcomes) = start(task(None, Rejections::Stop), sink.clone(), &["a", "b"]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        sink.batches().len(),
        2,
        "the second batch went before the first was confirmed"
    );
    assert_eq!(
        outcomes[1].try_recv(),
        Ok(Outcome::Delivered),
        "b confirmed first"
    );
    assert!(
        outcomes[0].try_recv().is_err(),
        "a is not acknowledged before its confirmation"
    );
    handle.await.unwrap().unwrap();
    assert_eq!(outcomes[0].try_recv(), Ok(Outcome::Delivered));
}

#[tokio::test]
async fn no_more_messages_are_in_flight_than_the_window_allows() {
    let sink = Scripted {
        delay: Duration::from_millis(30),
        ..Scripted::new([])
    };
    let t = windowed(10, 3, 1 << 20);
    let payloads: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
    let (handle, outcomes) = start(t, sink.clone(), &refs).await;
    handle.await.unwrap().unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| o.try_recv() == Ok(Outcome::Delivered))
    );
    assert_eq!(
        sink.flying.1.load(Ordering::SeqCst),
        3,
        "the window was full, never more"
    );
}

#[tokio::test]
async fn no_new_batch_is_sent_while_the_window_holds_its_bytes() {
    let sink = Scripted {
        delay: Duration::from_millis(30),
        ..Scripted::new([])
    };
    let t = windowed(10, 4, 10);
    let (handle, _) = start(t, sink.clone(), &["0123456789", "0123456789", "01"]).await;
    handle.await.unwrap().unwrap();
    assert_eq!(
        sink.flying.1.load(Ordering::SeqCst),
        1,
        "10 bytes fill the window"
    );
}

#[tokio::test]
async fn a_failed_batch_is_written_again_before_the_batches_sent_after_it() {
    let sink = Scripted::new([Answer::Retry, Answer::Ok, Answer::Ok, Answer::Ok]);
    *sink.delays.lock().unwrap() = [Duration::from_millis(100), Duration::ZERO].into();
    let (handle, outcomes) = start(task(None, Rejections::Stop), sink.clone(), &["a", "b"]).await;
    handle.await.unwrap().unwrap();
    assert_eq!(
        sink.batches(),
        [["a"], ["b"], ["a"], ["b"]],
        "b, confirmed while a failed, is written again after a: the last write stays the last"
    );
    assert_eq!(outcomes[0].try_recv(), Ok(Outcome::Delivered));
    assert_eq!(outcomes[1].try_recv(), Ok(Outcome::Delivered));
    assert!(outcomes[1].try_recv().is_err(), "b acknowledged once");
}

#[tokio::test]
async fn messages_that_arrive_one_by_one_fill_the_window_in_small_batches() {
    // Confirmations that come all at once (RabbitMQ's) leave the sink with
    // the few messages that arrived meanwhile: the window is counted in
    // messages, so it fills with small batches instead of stopping at a
    // number of them.
    let sink = Scripted {
        delay: Duration::from_millis(300),
        ..Scripted::new([])
    };
    let (tx, rx) = mpsc::channel(64);
    let t = windowed(10, 20, 1 << 20);
    let handle = tokio::spawn(t.run(sink.clone(), rx));
    for _ in 0..30 {
        let (d, _) = delivery("x");
        tx.send(d).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(tx);
    handle.await.unwrap().unwrap();
    assert_eq!(
        sink.flying.1.load(Ordering::SeqCst),
        20,
        "20 messages in flight, in batches of about one (batches sent: {})",
        sink.batches().len()
    );
    assert!(sink.batches().iter().all(|b| b.len() <= 10));
}

#[tokio::test]
async fn a_sink_that_cannot_overlap_writes_has_one_batch_in_flight() {
    let sink = Scripted {
        delay: Duration::from_millis(20),
        serial: true,
        ..Scripted::new([])
    };
    let (handle, _) = start(task(None, Rejections::Stop), sink.clone(), &["a", "b", "c"]).await;
    handle.await.unwrap().unwrap();
    assert_eq!(sink.flying.1.load(Ordering::SeqCst), 1);
}
