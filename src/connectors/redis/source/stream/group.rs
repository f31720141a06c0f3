//! The consumer group as Redis keeps it: created at start, read back with
//! `XINFO` (how far each group got, what a job has left) and trimmed
//! below what every group acknowledged.

use std::collections::HashMap;
use std::sync::Arc;

use crate::connectors::redis::connection::RedisConn;

use crate::connectors::redis::replies::text;
use crate::error::ConnectorError;
use crate::position::stream_id;

/// Deletes, from each of `streams`, the entries every group has
/// acknowledged (`group` names ferry's group in errors).
pub(super) async fn trim_acknowledged(
    cmd: &mut RedisConn,
    streams: &[Arc<str>],
    group: &str,
) -> Result<(), ConnectorError> {
    let err = |what: &str, e| ConnectorError::redis(format!("{what} (group {group})"), e);
    for s in streams.iter().cloned() {
        let groups: redis::Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&*s)
            .query_async(cmd)
            .await
            .map_err(|e| err("reading stream groups", e))?;
        let mut min: Option<(u64, u64)> = None;
        for g in list_of_maps(&groups) {
            let keep_from = keep_from(cmd, &s, &g).await?;
            let Some(keep_from) = keep_from else {
                min = Some((0, 0));
                break;
            };
            min = Some(min.map_or(keep_from, |m| m.min(keep_from)));
        }
        if let Some((ms, seq)) = min.filter(|m| *m > (0, 0)) {
            let _: i64 = redis::cmd("XTRIM")
                .arg(&*s)
                .arg("MINID")
                .arg(format!("{ms}-{seq}"))
                .query_async(cmd)
                .await
                .map_err(|e| err("trimming", e))?;
        }
    }
    Ok(())
}

/// The first entry a group (one row of `XINFO GROUPS`) may still deliver
/// again: its lowest pending entry, or the one after the last it
/// delivered. Every entry below it was acknowledged. `None` when Redis does
/// not say.
///
/// `XINFO GROUPS` gives the pending count and the last delivered id
/// atomically. The `XPENDING` that follows may see later deliveries, but
/// those lie above every earlier one, so its lowest pending id is still a
/// floor.
pub(super) async fn keep_from(
    cmd: &mut RedisConn,
    stream: &str,
    group: &HashMap<String, String>,
) -> Result<Option<(u64, u64)>, ConnectorError> {
    let name = group.get("name").cloned().unwrap_or_default();
    let pending: u64 = group
        .get("pending")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    if pending == 0 {
        return Ok(group
            .get("last-delivered-id")
            .and_then(|id| stream_id(id))
            .map(|(ms, seq)| (ms, seq + 1)));
    }
    let summary: redis::Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(&name)
        .query_async(cmd)
        .await
        .map_err(|e| ConnectorError::redis(format!("reading pending summary (group {name})"), e))?;
    Ok(match &summary {
        redis::Value::Array(parts) => parts.get(1).and_then(text).and_then(|id| stream_id(&id)),
        _ => None,
    })
}

/// `XINFO GROUPS` and `XINFO CONSUMERS` answer a list of [`map_of`].
pub(super) fn list_of_maps(v: &redis::Value) -> Vec<HashMap<String, String>> {
    let redis::Value::Array(rows) = v else {
        return Vec::new();
    };
    rows.iter().map(map_of).collect()
}

/// A flat key/value list (RESP2) or a map (RESP3), keeping the values that
/// are text or numbers (nested ones, like `XINFO STREAM`'s entries, are
/// skipped).
pub(super) fn map_of(v: &redis::Value) -> HashMap<String, String> {
    match v {
        redis::Value::Array(flat) => flat
            .chunks(2)
            .filter_map(|kv| Some((text(&kv[0])?, text(kv.get(1)?)?)))
            .collect(),
        redis::Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, text(v)?)))
            .collect(),
        _ => HashMap::new(),
    }
}

/// For `until = "end"`: the stream's last entry id now (`None` if the
/// group has been given it already), and how many entries the job has:
/// those not yet given to the group (`lag`, Redis 7+) plus this consumer's
/// own pending ones, which it reads again first.
pub(super) async fn job_of(
    conn: &mut RedisConn,
    stream: &str,
    group: &str,
    consumer: &str,
) -> Result<(Option<(u64, u64)>, Option<u64>), ConnectorError> {
    let err = |what: &str, e| ConnectorError::redis(format!("{what} of {stream}"), e);
    let info: redis::Value = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(stream)
        .query_async(conn)
        .await
        .map_err(|e| err("reading the end", e))?;
    let end = map_of(&info)
        .get("last-generated-id")
        .and_then(|id| stream_id(id));
    let groups: redis::Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(conn)
        .await
        .map_err(|e| err("reading the groups", e))?;
    let ours = list_of_maps(&groups)
        .into_iter()
        .find(|g| g.get("name").map(String::as_str) == Some(group))
        .unwrap_or_default();
    let delivered = ours.get("last-delivered-id").and_then(|id| stream_id(id));
    let lag: Option<u64> = ours.get("lag").and_then(|l| l.parse().ok());
    let consumers: redis::Value = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg(group)
        .query_async(conn)
        .await
        .map_err(|e| err("reading the consumers", e))?;
    let own_pending: u64 = list_of_maps(&consumers)
        .into_iter()
        .find(|c| c.get("name").map(String::as_str) == Some(consumer))
        .and_then(|c| c.get("pending")?.parse().ok())
        .unwrap_or(0);
    let end = end.filter(|end| *end > (0, 0) && delivered < Some(*end));
    Ok((end, lag.map(|lag| lag + own_pending)))
}

pub(super) async fn create_group(
    conn: &mut RedisConn,
    stream: &str,
    group: &str,
    from: &str,
) -> Result<(), ConnectorError> {
    let result: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg(from)
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(ConnectorError::redis(
            format!("creating group {group} on {stream}"),
            e,
        )),
    }
}
