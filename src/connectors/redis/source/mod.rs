//! Redis sources: streams (consumer groups), lists (through a processing
//! list), pub/sub, and keyspace notifications.

pub mod keyspace;
pub mod list;
pub mod pubsub;
pub mod stream;

use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, warn};

use crate::runtime::backoff::Backoff;

/// This process's consumer name when the config gives none:
/// `ferry-<pipeline>-<hostname>`, stable across restarts of one machine.
pub fn default_consumer(pipeline: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!("ferry-{pipeline}-{host}")
}

/// Sends acknowledgements (`XACK`, `LREM`) in pipelined batches from a
/// background task, so that sink tasks completing acks never wait for Redis.
///
/// An acknowledgement that cannot be sent after several attempts is given
/// up: the entry stays pending and is delivered again later (a duplicate,
/// never a loss).
pub struct Acker<T> {
    tx: mpsc::UnboundedSender<T>,
    task: JoinHandle<()>,
}

const ACK_ATTEMPTS: u32 = 8;

impl<T: Send + 'static> Acker<T> {
    pub fn spawn(
        pipeline: String,
        mut conn: ConnectionManager,
        build: impl Fn(&[T]) -> redis::Pipeline + Send + 'static,
    ) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<T>();
        let task = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(1024);
            while rx.recv_many(&mut batch, 1024).await > 0 {
                let pipe = build(&batch);
                let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
                loop {
                    match pipe.exec_async(&mut conn).await {
                        Ok(()) => break,
                        Err(e) if backoff.attempts() + 1 >= ACK_ATTEMPTS => {
                            error!(
                                pipeline,
                                "giving up acknowledging {} entries: {e}; \
                                they will be delivered again",
                                batch.len()
                            );
                            break;
                        }
                        Err(e) => {
                            let delay = backoff.next_delay();
                            warn!(pipeline, "acknowledging: {e}; retrying in {delay:?}");
                            tokio::time::sleep(delay).await;
                        }
                    }
                }
                batch.clear();
            }
        });
        Self { tx, task }
    }

    pub fn sender(&self) -> mpsc::UnboundedSender<T> {
        self.tx.clone()
    }

    /// Waits until every acknowledgement queued so far is sent. Ack
    /// handles still alive keep their own senders; the task ends when they
    /// are gone too.
    pub async fn close(self) {
        drop(self.tx);
        if tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .is_err()
        {
            warn!("acknowledgements still pending after 10s; they will be delivered again");
        }
    }
}
