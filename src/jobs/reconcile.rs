//! `ferry reconcile`: two record sets compared by key. Each side is read
//! without touching it ([`super::read`]), each record gets a key (a jq
//! expression, `$key` by default) and a value (the payload, optionally
//! normalised by jq, e.g. to drop timestamps), both sides are sorted by
//! key in bounded memory (`spill.rs`) and merged: keys missing on
//! either side, and keys whose values differ, with a readable diff of the
//! first few. With `--repair`, what the right side lacks is written to it
//! through a normal sink.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use super::diff::{self, Difference};
use super::read::{Begin, FileReader, KafkaReader, KeysReader, StreamReader};
pub use super::repair::{Repair, RepairSink};
use super::spill::{Collector, Original, Row, Sorted};
use crate::connectors::redis::access::RedisAccess;
use crate::message::Message;
use crate::steps::Jq;
use crate::steps::jq::{Variables, payload_value};

/// One side of a comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Side {
    /// `kafka://BROKERS/TOPIC`
    Kafka { brokers: String, topic: String },
    /// `redis://HOST:PORT/DB?keys=PATTERN`: the current value of each key.
    Keys { url: String, pattern: String },
    /// `redis://HOST:PORT/DB?stream=NAME`
    Stream { url: String, stream: String },
    /// `file:PATH` (or a path): JSON lines, one payload per line.
    File { path: String },
}

impl Side {
    pub fn parse(s: &str) -> Result<Side, String> {
        if let Some(rest) = s.strip_prefix("kafka://") {
            let (brokers, topic) = rest
                .split_once('/')
                .filter(|(b, t)| !b.is_empty() && !t.is_empty())
                .ok_or_else(|| format!("`{s}`: write kafka://BROKERS/TOPIC"))?;
            return Ok(Side::Kafka {
                brokers: brokers.to_owned(),
                topic: topic.to_owned(),
            });
        }
        if s.starts_with("redis://") || s.starts_with("rediss://") {
            let (base, query) = s.split_once('?').unwrap_or((s, ""));
            let mut rest = Vec::new();
            let mut side = None;
            for param in query.split('&').filter(|p| !p.is_empty()) {
                match param.split_once('=') {
                    Some(("keys", p)) if !p.is_empty() => side = Some((true, p.to_owned())),
                    Some(("stream", n)) if !n.is_empty() => side = Some((false, n.to_owned())),
                    _ => rest.push(param),
                }
            }
            let url = if rest.is_empty() {
                base.to_owned()
            } else {
                format!("{base}?{}", rest.join("&"))
            };
            return match side {
                Some((true, pattern)) => Ok(Side::Keys { url, pattern }),
                Some((false, stream)) => Ok(Side::Stream { url, stream }),
                None => Err(format!(
                    "`{s}`: say what to read: redis://HOST:PORT/DB?keys=order:* or ?stream=NAME"
                )),
            };
        }
        let path = s.strip_prefix("file:").unwrap_or(s);
        if path.contains("://") {
            return Err(format!(
                "`{s}`: not a side ferry can read; use kafka://BROKERS/TOPIC, \
                 redis://HOST:PORT/DB?keys=PATTERN, redis://...?stream=NAME or file:PATH"
            ));
        }
        Ok(Side::File {
            path: path.to_owned(),
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Side::Kafka { topic, .. } => format!("kafka topic {topic}"),
            Side::Keys { pattern, .. } => format!("redis keys {pattern}"),
            Side::Stream { stream, .. } => format!("redis stream {stream}"),
            Side::File { path } => format!("file {path}"),
        }
    }
}

/// An open side.
enum Reader {
    Kafka(KafkaReader),
    Keys(KeysReader),
    Stream(StreamReader),
    File(FileReader),
}

impl Reader {
    async fn open(side: &Side) -> Result<Reader, String> {
        Ok(match side {
            Side::Kafka { brokers, topic } => Reader::Kafka(
                KafkaReader::open(
                    brokers,
                    std::slice::from_ref(topic),
                    &Default::default(),
                    None,
                    Begin::Earliest,
                    true,
                )
                .await?,
            ),
            Side::Keys { url, pattern } => Reader::Keys(KeysReader::open(url, pattern).await?),
            Side::Stream { url, stream } => Reader::Stream(
                StreamReader::open(
                    &RedisAccess::from_url(url)?,
                    std::slice::from_ref(stream),
                    Begin::Earliest,
                    true,
                )
                .await?,
            ),
            Side::File { path } => Reader::File(FileReader::open(path)?),
        })
    }

    async fn next(&mut self) -> Result<Option<Message>, String> {
        match self {
            Reader::Kafka(r) => r.next().await,
            Reader::Keys(r) => r.next().await,
            Reader::Stream(r) => r.next().await,
            Reader::File(r) => r.read(),
        }
    }
}

/// How a side's records become (key, value).
pub struct Extract {
    pub key: Jq,
    pub normalize: Option<Jq>,
}

impl Extract {
    /// The record's key (`None`: it has none) and its value as canonical
    /// JSON (a payload that is not JSON counts as a JSON string).
    pub fn apply(&self, message: &Message) -> Result<(Option<String>, String), String> {
        let input = match payload_value(message) {
            Ok(v) => v,
            Err(_) => {
                let text = message
                    .payload
                    .as_ref()
                    .map(|p| String::from_utf8_lossy(p).into_owned());
                jaq_json::Val::from(text.unwrap_or_default())
            }
        };
        let vars = Variables::of(message);
        let key = match self.key.run_alone(input.clone(), &vars)?.into_iter().next() {
            None | Some(jaq_json::Val::Null) => None,
            Some(jaq_json::Val::TStr(b) | jaq_json::Val::BStr(b)) => {
                Some(String::from_utf8_lossy(&b).into_owned())
            }
            Some(other) => Some(other.to_string()),
        };
        let value = match &self.normalize {
            Some(jq) => jq
                .run_alone(input, &vars)?
                .into_iter()
                .next()
                .unwrap_or(jaq_json::Val::Null),
            None => input,
        };
        let value: Value = serde_json::from_str(&value.to_string())
            .map_err(|e| format!("the value is not JSON after normalising: {e}"))?;
        Ok((key, diff::canonical(&value)))
    }
}

/// What was read from one side.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SideCounts {
    pub source: String,
    /// Records read.
    pub records: u64,
    /// Distinct keys.
    pub keys: u64,
    /// Records replaced by a later record with the same key.
    pub duplicates: u64,
    /// Records the key expression gave no key for (not compared).
    pub without_key: u64,
    /// Records the key or normalise expression failed on (not compared).
    pub failed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<String>,
    /// Run files written because the side did not fit in memory.
    pub spilled_runs: usize,
}

/// A key whose values differ.
#[derive(Clone, Debug, Serialize)]
pub struct Different {
    pub key: String,
    pub differences: Vec<Difference>,
}

/// The result of a comparison.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub agree: bool,
    pub left: SideCounts,
    pub right: SideCounts,
    /// Keys on both sides with equal values.
    pub same: u64,
    pub different: u64,
    /// Keys only on the right.
    pub missing_on_left: u64,
    /// Keys only on the left.
    pub missing_on_right: u64,
    /// The first `--show` keys of each kind.
    pub examples_missing_on_left: Vec<String>,
    pub examples_missing_on_right: Vec<String>,
    pub examples_different: Vec<Different>,
    /// Records written to the right side by `--repair`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repaired: Option<u64>,
    /// Rows held in memory per side before spilling to disk.
    pub memory_rows: usize,
    /// This process's peak resident memory (VmHWM), in KiB.
    pub peak_rss_kib: Option<u64>,
}

/// Settings of a comparison.
pub struct Options {
    pub left: Side,
    pub right: Side,
    pub left_extract: Extract,
    pub right_extract: Extract,
    /// How many keys of each kind the report lists.
    pub show: usize,
    /// Rows held in memory per side before spilling sorted runs to disk.
    pub memory_rows: usize,
    /// Keep the left records to write what the right lacks.
    pub repair: Option<Repair>,
}

/// Reads one side into sorted rows.
async fn collect(
    side: &Side,
    extract: &Extract,
    options: &Options,
    name: &str,
    keep_original: bool,
) -> Result<(Sorted, SideCounts), String> {
    let mut reader = Reader::open(side).await?;
    let mut counts = SideCounts {
        source: side.describe(),
        ..SideCounts::default()
    };
    let mut rows = Collector::new(options.memory_rows, std::env::temp_dir(), name);
    while let Some(message) = reader.next().await? {
        counts.records += 1;
        match extract.apply(&message) {
            Ok((Some(key), value)) => {
                let original = keep_original.then(|| Original {
                    key: message
                        .key
                        .as_ref()
                        .map(|k| String::from_utf8_lossy(k).into_owned()),
                    payload: message
                        .payload
                        .as_ref()
                        .map(|p| String::from_utf8_lossy(p).into_owned()),
                });
                rows.push(key, value, original)?;
            }
            Ok((None, _)) => counts.without_key += 1,
            Err(e) => {
                counts.failed += 1;
                counts.first_failure.get_or_insert(e);
            }
        }
    }
    let sorted = rows.finish()?;
    counts.spilled_runs = sorted.runs;
    Ok((sorted, counts))
}

/// Compares both sides; repairs the right side if asked.
pub async fn run(mut options: Options) -> Result<Report, String> {
    let mut repair = options.repair.take();
    let keep = repair.is_some();
    let (mut left, left_counts) =
        collect(&options.left, &options.left_extract, &options, "left", keep).await?;
    let (mut right, right_counts) = collect(
        &options.right,
        &options.right_extract,
        &options,
        "right",
        false,
    )
    .await?;
    let mut report = Report {
        left: left_counts,
        right: right_counts,
        memory_rows: options.memory_rows,
        ..Report::default()
    };
    let mut to_repair = Vec::new();
    let mut repaired = 0;
    let (mut l, mut r) = (left.next_row()?, right.next_row()?);
    loop {
        match (l.take(), r.take()) {
            (None, None) => break,
            (Some(a), None) => {
                missing_right(&mut report, &options, a, keep.then_some(&mut to_repair));
                l = left.next_row()?;
            }
            (None, Some(b)) => {
                missing_left(&mut report, &options, b);
                r = right.next_row()?;
            }
            (Some(a), Some(b)) => match a.key.cmp(&b.key) {
                std::cmp::Ordering::Less => {
                    missing_right(&mut report, &options, a, keep.then_some(&mut to_repair));
                    l = left.next_row()?;
                    r = Some(b);
                }
                std::cmp::Ordering::Greater => {
                    missing_left(&mut report, &options, b);
                    l = Some(a);
                    r = right.next_row()?;
                }
                std::cmp::Ordering::Equal => {
                    compare(&mut report, &options, &a, &b);
                    l = left.next_row()?;
                    r = right.next_row()?;
                }
            },
        }
        if let Some(repair) = &mut repair
            && to_repair.len() >= repair.batch
        {
            repaired += repair.write(std::mem::take(&mut to_repair)).await?;
        }
    }
    if let Some(repair) = &mut repair {
        repaired += repair.write(to_repair).await?;
        report.repaired = Some(repaired);
    }
    report.left.keys = report.same + report.different + report.missing_on_right;
    report.right.keys = report.same + report.different + report.missing_on_left;
    report.left.duplicates = left.duplicates;
    report.right.duplicates = right.duplicates;
    report.agree = report.different == 0
        && report.missing_on_left == 0
        && report.missing_on_right == 0
        && report.left.failed == 0
        && report.right.failed == 0;
    report.peak_rss_kib = peak_rss_kib();
    Ok(report)
}

fn missing_right(
    report: &mut Report,
    options: &Options,
    row: Row,
    to_repair: Option<&mut Vec<Row>>,
) {
    report.missing_on_right += 1;
    if report.examples_missing_on_right.len() < options.show {
        report.examples_missing_on_right.push(row.key.clone());
    }
    if let Some(to_repair) = to_repair {
        to_repair.push(row);
    }
}

fn missing_left(report: &mut Report, options: &Options, row: Row) {
    report.missing_on_left += 1;
    if report.examples_missing_on_left.len() < options.show {
        report.examples_missing_on_left.push(row.key);
    }
}

fn compare(report: &mut Report, options: &Options, a: &Row, b: &Row) {
    if a.value == b.value {
        report.same += 1;
        return;
    }
    let parse = |v: &str| serde_json::from_str::<Value>(v).unwrap_or(Value::Null);
    let (lv, rv) = (parse(&a.value), parse(&b.value));
    if diff::equal(&lv, &rv) {
        report.same += 1;
        return;
    }
    report.different += 1;
    if report.examples_different.len() < options.show {
        report.examples_different.push(Different {
            key: a.key.clone(),
            differences: diff::differences(&lv, &rv, 10),
        });
    }
}

/// This process's peak resident memory, from /proc (Linux).
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The summary table and the first differences.
pub fn summary(report: &Report) -> String {
    let mut s = String::new();
    let (l, r) = (&report.left, &report.right);
    let w = l.source.len().max(12);
    let _ = writeln!(s, "{:<18} {:<w$}  right", "", "left");
    let _ = writeln!(s, "{:<18} {:<w$}  {}", "source", l.source, r.source);
    for (name, a, b) in [
        ("records", l.records, r.records),
        ("keys", l.keys, r.keys),
        ("duplicate keys", l.duplicates, r.duplicates),
        ("without a key", l.without_key, r.without_key),
        ("failed", l.failed, r.failed),
    ] {
        let _ = writeln!(s, "{name:<18} {a:<w$}  {b}");
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "same               {}", report.same);
    let _ = writeln!(s, "different          {}", report.different);
    let _ = writeln!(s, "missing on left    {}", report.missing_on_left);
    let _ = writeln!(s, "missing on right   {}", report.missing_on_right);
    for (side, f) in [("left", &l.first_failure), ("right", &r.first_failure)] {
        if let Some(f) = f {
            let _ = writeln!(s, "first failure on the {side}: {f}");
        }
    }
    let list = |keys: &[String]| keys.join(", ");
    if !report.examples_missing_on_left.is_empty() {
        let _ = writeln!(
            s,
            "\nmissing on the left (first {}): {}",
            report.examples_missing_on_left.len(),
            list(&report.examples_missing_on_left)
        );
    }
    if !report.examples_missing_on_right.is_empty() {
        let _ = writeln!(
            s,
            "\nmissing on the right (first {}): {}",
            report.examples_missing_on_right.len(),
            list(&report.examples_missing_on_right)
        );
    }
    if !report.examples_different.is_empty() {
        let _ = writeln!(
            s,
            "\ndifferent (first {}):",
            report.examples_different.len()
        );
        for d in &report.examples_different {
            let _ = writeln!(s, "  {}", d.key);
            s.push_str(&diff::render(&d.differences, "    ", "left", "right"));
        }
    }
    if let Some(n) = report.repaired {
        let _ = writeln!(s, "\nrepaired: wrote {n} records missing on the right");
    }
    let spilled = l.spilled_runs + r.spilled_runs;
    let _ = writeln!(
        s,
        "\n{} (at most {} rows in memory per side{}; peak memory {})",
        if report.agree {
            "the sides agree"
        } else {
            "the sides differ"
        },
        report.memory_rows,
        if spilled > 0 {
            format!(", {spilled} sorted runs spilled to disk")
        } else {
            String::new()
        },
        report
            .peak_rss_kib
            .map_or("unknown".to_owned(), |k| format!(
                "{:.1} MiB",
                k as f64 / 1024.0
            ))
    );
    s
}

#[cfg(test)]
mod tests;
