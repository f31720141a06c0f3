//! Redis list source: reliable queue consumption.
//!
//! Elements are moved atomically from the list to a processing list
//! (`LMOVE`/`BLMOVE`) and removed from there (`LREM`) only once every sink
//! confirmed them.
//!
//! The processing list is this source's in-flight state in Redis. Before
//! popping anything, and again after any error (a lost reply to `LMOVE`
//! means elements were moved that the source never saw) or a failed
//! delivery, the source reads it back and delivers again every element it
//! does not hold in flight: after a crash, all of them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crate::connectors::redis::connection::RedisConn;
use bytes::Bytes;
use tracing::info;

use super::{Acker, default_consumer};
use crate::connectors::redis::access::connect;
use crate::connectors::redis::config::RedisListSourceConfig;
use crate::connectors::{Envelope, Source};
use crate::error::ConnectorError;
use crate::message::{Message, Origin};
use crate::observe::Probe;
use crate::values::Until;

pub struct RedisListSource {
    pipeline: String,
    reader: RedisConn,
    cmd: RedisConn,
    list: Arc<str>,
    processing: String,
    config: RedisListSourceConfig,
    /// The processing list was read back since the last error: elements
    /// in it that are not in flight have been delivered again.
    recovered: bool,
    /// With `until = "end"`: the list was found empty.
    drained: bool,
    /// With `until = "end"`: the elements in the list and the processing
    /// list at start.
    expected: Option<u64>,
    buffer: VecDeque<Envelope>,
    acker: Acker<Bytes>,
    probe: Probe,
}

impl RedisListSource {
    pub async fn open(
        pipeline: &str,
        config: &RedisListSourceConfig,
        probe: &Probe,
    ) -> Result<Self, ConnectorError> {
        let reader = connect(&config.access(), config.block.0 + Duration::from_secs(10))?;
        let mut cmd = connect(&config.access(), Duration::from_secs(10))?;
        let list: Arc<str> = Arc::from(config.list.as_str());
        let consumer = config
            .consumer
            .as_ref()
            .map_or_else(|| default_consumer(pipeline), ToString::to_string);
        let processing = config.processing(&consumer);
        let acker = {
            let processing = processing.clone();
            Acker::spawn(
                pipeline.to_owned(),
                cmd.clone(),
                move |batch: &[Bytes]| {
                    let mut pipe = redis::pipe();
                    for element in batch {
                        pipe.cmd("LREM")
                            .arg(&processing)
                            .arg(1)
                            .arg(element.as_ref())
                            .ignore();
                    }
                    pipe
                },
            )
        };
        let expected = if config.until == Until::End {
            let (waiting, left): (u64, u64) = redis::pipe()
                .cmd("LLEN")
                .arg(&*list)
                .cmd("LLEN")
                .arg(&processing)
                .query_async(&mut cmd)
                .await
                .map_err(|e| ConnectorError::redis(format!("measuring {list}"), e))?;
            Some(waiting + left)
        } else {
            None
        };
        info!(pipeline, %list, processing, "redis list source ready");
        Ok(Self {
            pipeline: pipeline.to_owned(),
            reader,
            cmd,
            list,
            processing,
            config: config.clone(),
            recovered: false,
            drained: false,
            expected,
            buffer: VecDeque::new(),
            acker,
            probe: probe.clone(),
        })
    }

    fn envelope(&self, element: Bytes) -> Envelope {
        let ack = self.acker.ack(element.clone());
        let message = Message {
            payload: Some(element),
            origin: Origin::RedisList {
                list: Arc::clone(&self.list),
            },
            ..Message::default()
        };
        Envelope::new(message, ack)
    }

    fn err(&self, what: &str, e: redis::RedisError) -> ConnectorError {
        ConnectorError::redis(format!("{what} ({})", self.list), e)
    }

    /// Delivers again the elements of the processing list that are not in
    /// flight: left by an earlier run, moved by an `LMOVE` whose reply was
    /// lost, or whose delivery failed.
    async fn recover(&mut self) -> Result<(), ConnectorError> {
        let paused = self.acker.pause().await;
        let left: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(&self.processing)
            .arg(0)
            .arg(-1)
            .query_async(&mut self.cmd)
            .await
            .map_err(|e| self.err("reading the processing list", e))?;
        let left = self.acker.not_in_flight(
            &paused,
            left.into_iter().map(Bytes::from).collect(),
            Bytes::clone,
        );
        drop(paused);
        self.probe.up();
        if !left.is_empty() {
            info!(pipeline = %self.pipeline, count = left.len(), processing = %self.processing,
                "delivering again elements popped but not confirmed before");
        }
        // LMOVE pushes to the head, so the oldest element is last.
        for element in left.into_iter().rev() {
            let envelope = self.envelope(element);
            self.buffer.push_back(envelope);
        }
        self.recovered = true;
        Ok(())
    }

    async fn pop(&mut self) -> Result<(), ConnectorError> {
        let from = self.config.pop.name();
        // Without waiting: up to a batch in one round trip.
        let mut pipe = redis::pipe();
        for _ in 0..self.config.batch_size.get() {
            pipe.cmd("LMOVE")
                .arg(&*self.list)
                .arg(&self.processing)
                .arg(from)
                .arg("LEFT");
        }
        let popped: Vec<Option<Vec<u8>>> = pipe
            .query_async(&mut self.cmd)
            .await
            .map_err(|e| self.err("popping", e))?;
        self.probe.up();
        let mut any = false;
        for element in popped.into_iter().flatten() {
            any = true;
            let envelope = self.envelope(Bytes::from(element));
            self.buffer.push_back(envelope);
        }
        if any {
            return Ok(());
        }
        if self.config.until == Until::End {
            info!(pipeline = %self.pipeline, list = %self.list, "the list is empty");
            self.drained = true;
            return Ok(());
        }
        // Empty: wait for the next element.
        let secs = self.config.block.0.as_secs_f64().max(0.01);
        let element: Option<Vec<u8>> = redis::cmd("BLMOVE")
            .arg(&*self.list)
            .arg(&self.processing)
            .arg(from)
            .arg("LEFT")
            .arg(secs)
            .query_async(&mut self.reader)
            .await
            .map_err(|e| self.err("waiting for elements", e))?;
        self.probe.up();
        if let Some(element) = element {
            let envelope = self.envelope(Bytes::from(element));
            self.buffer.push_back(envelope);
        }
        Ok(())
    }
}

impl Source for RedisListSource {
    fn expected(&self) -> Option<u64> {
        self.expected
    }

    async fn next(&mut self) -> Result<Option<Envelope>, ConnectorError> {
        loop {
            if let Some(envelope) = self.buffer.pop_front() {
                return Ok(Some(envelope));
            }
            if self.acker.take_lost() {
                self.recovered = false;
            }
            let read = if !self.recovered {
                self.recover().await
            } else if self.drained {
                return Ok(None);
            } else {
                self.pop().await
            };
            if let Err(e) = read {
                // The command may have run without its reply arriving.
                self.recovered = false;
                return Err(e);
            }
        }
    }

    async fn close(self) -> Result<(), ConnectorError> {
        self.acker.close().await;
        info!(pipeline = %self.pipeline, "redis list source closed; confirmed elements removed");
        Ok(())
    }
}
