//! Unit tests of `sink_task.rs`.

//! The sink task against a scripted in-memory sink: each `write` call
//! answers what the test scripted, so batching, retries, giving up,
//! dead-lettering and result counts are checked without a broker.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::ack::{Ack, Outcome};
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
    /// Each write waits this long (a slow sink).
    delay: Duration,
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

    async fn write(
        &mut self,
        batch: &[String],
    ) -> Result<Vec<Result<(), MessageError>>, ConnectorError> {
        tokio::time::sleep(self.delay).await;
        self.batches.lock().unwrap().push(batch.to_vec());
        let answer = self
            .answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Answer::Ok);
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
    }
}

fn task(attempts: Option<usize>, rejections: Rejections) -> SinkTask {
    SinkTask {
        pipeline: "p".into(),
        sink_name: "sink `s`".into(),
        batch_size: 10,
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
    let t = SinkTask {
        batch_size: 1,
        ..task(None, Rejections::Stop)
    };
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
        sent <= 4,
        "the channel (2) and the batch in hand (1) bound what the sender gets rid of: {sent}"
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
