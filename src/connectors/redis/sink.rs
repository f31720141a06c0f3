//! Redis sink: pipelined batches, one reply per write.
//!
//! A batch is sent as one pipeline. Redis answers every command; a command
//! refused because of that message (`WRONGTYPE`, say) fails only that
//! message, which then goes to the dead-letter sink. Connection errors and
//! timeouts fail the batch, which the runtime retries: writes are
//! idempotent except `XADD`, which can then repeat entries (at-least-once).

use std::collections::HashMap;
use std::sync::Arc;

use crate::connectors::redis::connection::RedisConn;
use tracing::{info, warn};

use super::access::connect;
use super::commands::Write;
use super::config::{RedisSinkConfig, WritePlan};
use super::{exactly_once, guards, script, slots, sync};
use crate::connectors::{Confirming, Sink};
use crate::error::{ConnectorError, MessageError};
use crate::message::Message;
use crate::observe::{Probe, names};
use crate::position::{Mark, Position, Scope, Settled};
use crate::template::Template;

pub struct RedisSink {
    conn: RedisConn,
    plan: WritePlan,
    key: Template,
    /// `replace` needs `DEL` and the write to land together: the batch
    /// runs in `MULTI`.
    atomic: bool,
    scripted: Scripted,
    replicas: Option<guards::Replicas>,
    memory: Option<guards::Memory>,
}

/// Writes that go through one of ferry's scripts, with their bookkeeping.
enum Scripted {
    Plain,
    ExactlyOnce(ExactlyOnce),
    Sync(SyncWrites),
}

impl Scripted {
    /// The script and what it is for (in logs).
    fn script(&self) -> Option<(&redis::Script, &'static str)> {
        match self {
            Scripted::Plain => None,
            Scripted::ExactlyOnce(once) => Some((&once.script, "exactly_once")),
            Scripted::Sync(sync) => Some((&sync.script, "sync")),
        }
    }
}

/// `exactly_once`: each message is written by a script that skips it when
/// its position is already recorded, and records it otherwise (see
/// [`exactly_once`]).
struct ExactlyOnce {
    script: redis::Script,
    /// Prefix of the per-scope sorted sets of positions.
    base: String,
    /// What the pipeline's source has settled for good.
    settled: Arc<Settled>,
    /// Per scope, the mark below which positions were last forgotten.
    forgotten: HashMap<Scope, Mark>,
    /// Messages skipped because they had been written before.
    skipped: metrics::Counter,
}

impl ExactlyOnce {
    /// The script calls that forget positions, for each scope of `batch`
    /// whose settled mark moved since its positions were last forgotten.
    fn forget(&mut self, batch: &[Write]) -> Vec<redis::Cmd> {
        let mut out = Vec::new();
        for scope in batch
            .iter()
            .filter_map(|w| Some(&w.recorded.as_ref()?.scope))
        {
            let Some(mark) = self.settled.below(scope) else {
                continue;
            };
            if self.forgotten.get(scope).is_some_and(|m| *m >= mark) {
                continue;
            }
            self.forgotten.insert(scope.clone(), mark);
            out.push(exactly_once::forget_below(
                self.script.get_hash(),
                &exactly_once::scope_key(&self.base, scope),
                mark,
            ));
        }
        out
    }
}

/// `sync`: each record is applied by a script that keeps the key's
/// companion (see [`sync`]).
struct SyncWrites {
    script: redis::Script,
    /// Records not written because a newer change made in Redis was on
    /// its way into the log.
    held_off: metrics::Counter,
}

impl RedisSink {
    /// Opens the sink even when Redis is not reachable yet: writes then
    /// wait for it under the sink's retry policy (and its `attempts`
    /// limit), and `probe` reports the sink as not ready meanwhile.
    pub async fn open(
        pipeline: &str,
        config: &RedisSinkConfig,
        probe: &Probe,
        settled: &Arc<Settled>,
    ) -> Result<Self, ConnectorError> {
        let conn = connect(&config.access(), config.timeout.0)?;
        let mut ping = conn.clone();
        match redis::cmd("PING").query_async::<String>(&mut ping).await {
            Ok(_) => info!(pipeline, "redis sink connected"),
            // Waiting would not change the password.
            Err(e) if super::errors::auth_refused(&e) => {
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
        let scripted = if config.exactly_once {
            let base = config.positions_base(pipeline);
            info!(pipeline, positions = %base, "redis sink writes each message once");
            settled.want();
            Scripted::ExactlyOnce(ExactlyOnce {
                script: redis::Script::new(exactly_once::SCRIPT),
                skipped: metrics::counter!(names::SINK_SKIPPED, "pipeline" => pipeline.to_owned(),
                    "sink" => probe.sink_id().to_owned(), "key" => config.key.to_string()),
                base,
                settled: Arc::clone(settled),
                forgotten: HashMap::new(),
            })
        } else if config.sync {
            info!(
                pipeline,
                "redis sink applies records in the log's order (two-way sync)"
            );
            Scripted::Sync(SyncWrites {
                script: redis::Script::new(sync::APPLY_SCRIPT),
                held_off: metrics::counter!(names::SYNC_HELD_OFF, "pipeline" => pipeline.to_owned(),
                    "sink" => probe.sink_id().to_owned(), "key" => config.key.to_string()),
            })
        } else {
            Scripted::Plain
        };
        Ok(Self {
            conn,
            replicas: guards::Replicas::new(config, pipeline, probe.sink_id()),
            memory: guards::Memory::new(config, pipeline, probe.sink_id()),
            plan: config.plan(),
            key: config.key.clone(),
            atomic: config.replace,
            scripted,
        })
    }

    /// Reads the replies of one write; `Err` when the batch must be retried
    /// or the pipeline stop.
    async fn result_of(
        &mut self,
        replies: impl Iterator<Item = redis::RedisResult<redis::Value>>,
    ) -> Result<Result<(), MessageError>, ConnectorError> {
        let mut result = Ok(());
        for reply in replies {
            match (reply, &mut self.scripted) {
                // The script found the message written before.
                (Ok(redis::Value::Int(0)), Scripted::ExactlyOnce(once)) => {
                    once.skipped.increment(1)
                }
                (Ok(redis::Value::Int(0)), Scripted::Sync(sync)) => sync.held_off.increment(1),
                (Ok(_), _) => {}
                // A restarted or flushed server forgot the script: load
                // it and let the runtime retry the batch (the script
                // makes a second attempt harmless).
                (Err(e), scripted) if e.code() == Some("NOSCRIPT") => {
                    if let Scripted::ExactlyOnce(once) = scripted {
                        once.forgotten.clear();
                    }
                    let Some((script, name)) = self.scripted.script() else {
                        return Err(ConnectorError::redis("writing", e));
                    };
                    script.load_async(&mut self.conn).await.map_err(|e| {
                        ConnectorError::redis(format!("loading the {name} script"), e)
                    })?;
                    return Err(ConnectorError::Retry(format!(
                        "redis had not loaded the {name} script yet; loaded it"
                    )));
                }
                (Err(e), _) if result.is_ok() => result = classify_reply(e)?,
                (Err(_), _) => {}
            }
        }
        Ok(result)
    }
}

impl RedisSink {
    /// Sends a batch as one pipeline and reads every reply.
    async fn write_batch(
        &mut self,
        batch: &[Write],
    ) -> Result<Vec<Result<(), MessageError>>, ConnectorError> {
        if let Some(memory) = &mut self.memory {
            memory.check(&mut self.conn).await?;
        }
        let cluster = self.conn.is_cluster();
        // With `exactly_once`: the script calls, then the calls that forget
        // positions, whose own replies are not read (a failed one is sent
        // again with the next mark).
        let once = match &mut self.scripted {
            Scripted::ExactlyOnce(once) => {
                // `prepare` records every write of this sink; one without
                // a position would be left unwritten, so it stops the batch.
                let items = batch
                    .iter()
                    .map(|w| {
                        Some(exactly_once::Item {
                            recorded: w.recorded.as_ref()?,
                            key: &w.key,
                            commands: &w.commands,
                        })
                    })
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        ConnectorError::Fatal("an exactly_once write without a position".into())
                    })?;
                let alone = |item: &exactly_once::Item| {
                    cluster && !slots::same_slot(&item.recorded.set, item.key)
                };
                let calls = exactly_once::calls(once.script.get_hash(), items, alone);
                Some((calls, once.forget(batch)))
            }
            _ => None,
        };
        // Borrowed: the batch stays whole for a retry, and `run` copies
        // each command once, into the pipeline.
        let commands: Vec<&redis::Cmd> = match &once {
            None => batch.iter().flat_map(|w| &w.commands).collect(),
            Some((calls, forget)) => calls.iter().map(|c| &c.cmd).chain(forget).collect(),
        };
        let replies = self
            .conn
            .run(&commands, self.atomic)
            .await
            .map_err(|e| ConnectorError::redis("writing a batch", e))?;
        let mut replies = replies.into_iter();
        let mut results = Vec::with_capacity(batch.len());
        match &once {
            None => {
                for w in batch {
                    let result = self
                        .result_of(replies.by_ref().take(w.commands.len()))
                        .await?;
                    results.push(result);
                }
            }
            // Each message of the batch is in exactly one call.
            Some((calls, _)) => {
                results.resize(batch.len(), Ok(()));
                for (call, reply) in calls.iter().zip(replies) {
                    self.settle_call(call, reply, &mut results).await?;
                }
            }
        }
        if let Some(replicas) = &self.replicas {
            replicas.confirm(&mut self.conn, &mut results).await?;
        }
        Ok(results)
    }

    /// Reads the reply of one `exactly_once` call into the results of its
    /// messages: one reply each, or the call's error for all of them.
    async fn settle_call(
        &mut self,
        call: &exactly_once::Call,
        reply: redis::RedisResult<redis::Value>,
        results: &mut [Result<(), MessageError>],
    ) -> Result<(), ConnectorError> {
        match reply {
            Ok(redis::Value::Array(items)) if items.len() == call.messages.len() => {
                for (&i, item) in call.messages.iter().zip(items) {
                    let item = match item {
                        redis::Value::ServerError(e) => Err(e.into()),
                        v => Ok(v),
                    };
                    results[i] = self.result_of(std::iter::once(item)).await?;
                }
            }
            Ok(other) => {
                return Err(ConnectorError::Fatal(format!(
                    "the exactly_once script answered {other:?} for {} messages",
                    call.messages.len()
                )));
            }
            Err(e) => {
                let result = self.result_of(std::iter::once(Err(e))).await?;
                for &i in &call.messages {
                    results[i] = result.clone();
                }
            }
        }
        Ok(())
    }
}

impl Sink for RedisSink {
    type Prepared = Write;

    fn prepare(&self, message: &Message) -> Result<Write, MessageError> {
        let mut write = Write::prepare(&self.plan, &self.key, message)?;
        match &self.scripted {
            Scripted::Plain => {}
            Scripted::ExactlyOnce(once) => {
                script::fits(&write.commands, "`exactly_once`")?;
                let position = Position::of(&message.origin, message.part).ok_or_else(|| {
                    MessageError::Unsupported(format!(
                        "`exactly_once` needs a position in the source; a message from {} has none",
                        message.describe_origin()
                    ))
                })?;
                // Written through the script by `write_batch`, one call
                // per scope.
                write.recorded = Some(exactly_once::Recorded::new(&once.base, position));
            }
            Scripted::Sync(sync) => {
                script::fits(&write.commands, "two-way `sync`")?;
                let change = message.headers.get(sync::CHANGE_HEADER);
                let call = sync::apply_call(
                    sync.script.get_hash(),
                    &write.key,
                    message.echo,
                    change.map(|c| c.as_ref()),
                    &write.commands,
                );
                write.commands = vec![call];
            }
        }
        Ok(write)
    }

    /// Writes the whole batch before it returns: the cluster and sentinel
    /// connections and the guards (`max_memory_percent`, `wait_replicas`)
    /// take turns on the connection, so a Redis sink keeps one batch in
    /// flight for now.
    async fn send(&mut self, batch: Arc<[Write]>) -> Result<Confirming, ConnectorError> {
        let done = self.write_batch(&batch).await;
        Ok(Box::pin(std::future::ready(done)))
    }

    fn overlaps(&self) -> bool {
        false
    }
}

/// A refused command fails its message, unless the refusal says something
/// about the server rather than the message: permissions stop the pipeline;
/// a server that refuses every write for now (loading, out of memory,
/// read-only replica, a cluster slot that moved and is still redirected
/// after the connection sent it again) fails the batch, which is retried
/// with backoff and never dead-lettered for it.
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
            | "MOVED"
            | "ASK"
            | "CLUSTERDOWN"
            | "MISCONF"
    );
    let auth = super::errors::auth_refused(&e);
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
