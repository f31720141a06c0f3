//! Redis sink: pipelined batches, one reply per write.
//!
//! A batch is sent as one pipeline. Redis answers every command; a command
//! refused because of that message (`WRONGTYPE`, say) fails only that
//! message, which then goes to the dead-letter sink. Connection errors and
//! timeouts fail the batch, which the runtime retries: writes are
//! idempotent except `XADD`, which can then repeat entries (at-least-once).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tracing::{info, warn};

use super::config::{RedisSinkConfig, WritePlan};
use super::mapping::{EXACTLY_ONCE_SCRIPT, Write, exactly_once_call, fits_script, position};
use super::own_writes;
use crate::connectors::Sink;
use crate::error::{ConnectorError, MessageError};
use crate::message::Message;
use crate::observe::{Probe, names};
use crate::template::Template;

pub struct RedisSink {
    conn: ConnectionManager,
    /// `host:port/db`, under which writes are remembered for keyspace
    /// sources of the same process (two-way sync).
    server: String,
    plan: WritePlan,
    key: Template,
    /// `replace` needs `DEL` and the write to land together: the batch
    /// runs in `MULTI`.
    atomic: bool,
    exactly_once: Option<ExactlyOnce>,
}

/// `exactly_once`: each message is written by a script that skips it when
/// its position is already recorded, and records it otherwise.
struct ExactlyOnce {
    script: redis::Script,
    /// The hash of positions.
    key: String,
    /// Messages skipped because they had been written before.
    skipped: metrics::Counter,
}

impl RedisSink {
    /// Opens the sink even when Redis is not reachable yet: writes then
    /// wait for it under the sink's retry policy (and its `attempts`
    /// limit), and `probe` reports the sink as not ready meanwhile.
    pub async fn open(
        pipeline: &str,
        config: &RedisSinkConfig,
        probe: &Probe,
    ) -> Result<Self, ConnectorError> {
        let conn = connect(config.url.as_str(), config.timeout.0)?;
        let mut ping = conn.clone();
        match redis::cmd("PING").query_async::<String>(&mut ping).await {
            Ok(_) => info!(pipeline, "redis sink connected"),
            // Waiting would not change the password.
            Err(e) if crate::error::redis_auth_refused(&e) => {
                return Err(ConnectorError::redis("connecting", e));
            }
            Err(e) => {
                warn!(
                    pipeline,
                    "redis is not reachable yet ({e}); writes will wait for it"
                );
                probe.retrying(&ConnectorError::redis("connecting", e));
            }
        }
        let exactly_once = config.exactly_once.then(|| {
            let key = config.positions_key.as_ref().map_or_else(
                || format!("ferry:positions:{pipeline}:{}", config.key),
                ToString::to_string,
            );
            info!(pipeline, positions = %key, "redis sink writes each message once");
            ExactlyOnce {
                script: redis::Script::new(EXACTLY_ONCE_SCRIPT),
                skipped: metrics::counter!(names::SINK_SKIPPED, "pipeline" => pipeline.to_owned(),
                    "sink" => probe.sink_id().to_owned(), "key" => config.key.to_string()),
                key,
            }
        });
        Ok(Self {
            conn,
            server: own_writes::server_id(config.url.as_str()),
            plan: config.plan(),
            key: config.key.clone(),
            atomic: config.replace,
            exactly_once,
        })
    }
}

/// A connection manager that reconnects by itself, with a response timeout
/// so that a hung server fails a batch (which is retried) instead of
/// blocking the pipeline forever.
pub fn connect(url: &str, response_timeout: Duration) -> Result<ConnectionManager, ConnectorError> {
    let client =
        redis::Client::open(url).map_err(|e| ConnectorError::redis("opening the url", e))?;
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    ConnectionManager::new_lazy_with_config(client, config)
        .map_err(|e| ConnectorError::redis("creating the connection", e))
}

impl Sink for RedisSink {
    type Prepared = Write;

    fn prepare(&self, message: &Message) -> Result<Write, MessageError> {
        let mut write = Write::prepare(&self.plan, &self.key, message)?;
        if let Some(once) = &self.exactly_once {
            fits_script(&write.commands)?;
            let (scope, position) = position(message).ok_or_else(|| {
                MessageError::Unsupported(format!(
                    "`exactly_once` needs a position in the source; a message from {} has none",
                    message.describe_origin()
                ))
            })?;
            let call = exactly_once_call(
                once.script.get_hash(),
                &once.key,
                (&scope, &position),
                &write.commands,
            );
            write.commands = vec![call];
        }
        Ok(write)
    }

    async fn write(
        &mut self,
        batch: &[Write],
    ) -> Result<Vec<Result<(), MessageError>>, ConnectorError> {
        // Remembered before sending: the notification may be read before
        // the reply arrives.
        let registry = own_writes::OwnWrites::global();
        for w in batch {
            if let Some((key, fingerprint)) = &w.result {
                registry.record(&self.server, key, *fingerprint);
            }
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        if self.atomic {
            pipe.atomic();
        }
        for w in batch {
            for c in &w.commands {
                pipe.add_command(c.clone());
            }
        }
        let replies: Vec<redis::RedisResult<redis::Value>> = pipe
            .query_async(&mut self.conn)
            .await
            .map_err(|e| ConnectorError::redis("writing a batch", e))?;
        let mut replies = replies.into_iter();
        let mut results = Vec::with_capacity(batch.len());
        for w in batch {
            let mut result = Ok(());
            for reply in replies.by_ref().take(w.commands.len()) {
                match (reply, &self.exactly_once) {
                    // The script found the message written before.
                    (Ok(redis::Value::Int(0)), Some(once)) => once.skipped.increment(1),
                    (Ok(_), _) => {}
                    // A restarted or flushed server forgot the script: load
                    // it and let the runtime retry the batch (the script
                    // makes a second attempt harmless).
                    (Err(e), Some(once)) if e.code() == Some("NOSCRIPT") => {
                        once.script.load_async(&mut self.conn).await.map_err(|e| {
                            ConnectorError::redis("loading the exactly_once script", e)
                        })?;
                        return Err(ConnectorError::Retry(
                            "redis had not loaded the exactly_once script yet; loaded it".into(),
                        ));
                    }
                    (Err(e), _) if result.is_ok() => result = classify_reply(e)?,
                    (Err(_), _) => {}
                }
            }
            results.push(result);
        }
        Ok(results)
    }
}

/// A refused command fails its message, unless the refusal says something
/// about the server rather than the message: permissions stop the pipeline;
/// a server that refuses every write for now (loading, out of memory,
/// read-only replica) fails the batch, which is retried with backoff and
/// never dead-lettered for it.
fn classify_reply(e: redis::RedisError) -> Result<Result<(), MessageError>, ConnectorError> {
    let code = e.code().unwrap_or_default().to_owned();
    let code = code.as_str();
    let server_side = matches!(
        code,
        "OOM"
            | "NOPERM"
            | "NOAUTH"
            | "LOADING"
            | "READONLY"
            | "MASTERDOWN"
            | "BUSY"
            | "TRYAGAIN"
            | "CLUSTERDOWN"
            | "MISCONF"
    );
    let auth = crate::error::redis_auth_refused(&e);
    let connector = ConnectorError::redis("writing", e);
    if auth {
        return Err(ConnectorError::Fatal(connector.to_string()));
    }
    if server_side {
        return Err(ConnectorError::Refusing(connector.to_string()));
    }
    if connector.is_retryable() {
        return Err(connector);
    }
    Ok(Err(MessageError::Refused {
        system: "redis",
        reason: connector.to_string(),
    }))
}
