//! `ferry test`: unit tests of a config's steps and routes, written next
//! to the config (`retail.toml` → `retail.tests.toml`), run without any
//! broker. Each test names a pipeline, gives input messages and says what
//! each sink receives (payload, and the key its template renders), what
//! goes to the dead-letter sink and how many messages are dropped.
//!
//! The pipeline's own `Router` decides (loop protection, steps, routes),
//! and the sinks' key templates are rendered as the sinks would; the
//! writes themselves are not simulated (a `hset` of a payload that is not
//! an object is only found out by Redis).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use super::diff;
use crate::config::pipeline::Unmatched;
use crate::config::{Config, PipelineConfig};
use crate::connectors::{SinkConfig, SourceConfig};
use crate::message::{Message, Origin};
use crate::runtime::router::{Plan, Router};

/// A tests file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestsFile {
    /// The config under test, relative to the tests file; by default the
    /// file's name without `.tests` (`retail.tests.toml` → `retail.toml`).
    pub config: Option<PathBuf>,
    #[serde(rename = "test", default)]
    pub tests: Vec<TestCase>,
}

/// `[[test]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    pub name: String,
    /// The pipeline (needed when the config has several).
    pub pipeline: Option<String>,
    #[serde(rename = "input", default)]
    pub inputs: Vec<Input>,
    /// What the sinks receive, in order per sink. A sink not named here
    /// must receive nothing.
    #[serde(rename = "output", default)]
    pub outputs: Vec<Expected>,
    /// What goes to the dead-letter sink, in order. None when empty.
    #[serde(rename = "dead_letter", default)]
    pub dead_letters: Vec<ExpectedDeadLetter>,
    /// Messages dropped on purpose (filtered, unmatched with
    /// `unmatched = "drop"`, loop protection); not checked when absent.
    pub dropped: Option<usize>,
}

/// `[[test.input]]`: a message as the source would hand it over.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub key: Option<String>,
    /// The payload as JSON (a TOML table, array or value)...
    pub json: Option<toml::Value>,
    /// ...or as text.
    pub payload: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Milliseconds since the epoch.
    pub timestamp: Option<i64>,
}

/// `[[test.output]]`: one message a sink receives.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    /// The sink's name (or `sinks[INDEX]` for an unnamed one).
    pub sink: String,
    /// The key the sink writes to: its `key` (or `routing_key`) template
    /// rendered for the message, or the message key for a sink without one.
    pub key: Option<String>,
    /// The payload, compared as JSON.
    pub json: Option<toml::Value>,
    /// The payload, compared as text.
    pub payload: Option<String>,
    /// Headers the message must carry (others may be there too).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// `[[test.dead_letter]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedDeadLetter {
    /// Words the reason must contain.
    pub reason: Option<String>,
    pub json: Option<toml::Value>,
}

/// What a pipeline did with the inputs of one test.
#[derive(Debug, Default)]
pub struct Observed {
    /// Per sink index: (rendered key, message).
    pub sinks: BTreeMap<usize, Vec<(Option<String>, Message)>>,
    /// (reason, message, input number).
    pub dead_letters: Vec<(String, Message, usize)>,
    pub dropped: usize,
}

/// The tests file for `path`: `path` itself if it is one (`*.tests.toml`),
/// else the file beside the config with `.tests` before the extension.
pub fn tests_file_for(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.ends_with(".tests.toml") {
        return path.to_owned();
    }
    let stem = path.file_stem().and_then(|n| n.to_str()).unwrap_or("");
    path.with_file_name(format!("{stem}.tests.toml"))
}

/// The config a tests file is about.
pub fn config_for(tests_path: &Path, tests: &TestsFile) -> PathBuf {
    let dir = tests_path.parent().unwrap_or(Path::new("."));
    match &tests.config {
        Some(c) => dir.join(c),
        None => {
            let name = tests_path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("");
            dir.join(name.replace(".tests.toml", ".toml"))
        }
    }
}

fn to_json(v: &toml::Value) -> Result<Value, String> {
    serde_json::to_value(v).map_err(|e| format!("cannot turn the TOML value into JSON: {e}"))
}

/// A fake but plausible origin, so that templates naming the source's
/// coordinates (`{topic}`, `{stream}`, `{queue}`) render.
fn origin_of(source: &SourceConfig, n: usize) -> Origin {
    match source {
        SourceConfig::Kafka(c) => Origin::Kafka {
            topic: Arc::from(c.topics.first().map_or("topic", |t| t.as_str())),
            partition: 0,
            offset: n as i64,
        },
        SourceConfig::RedisStream(c) => Origin::RedisStream {
            stream: Arc::from(c.streams.first().map_or("stream", |s| s.as_str())),
            id: format!("{}-0", n + 1),
        },
        SourceConfig::RedisList(c) => Origin::RedisList {
            list: Arc::from(c.list.as_str()),
        },
        SourceConfig::Amqp(c) => Origin::Amqp {
            queue: Arc::from(c.queue.as_str()),
            exchange: String::new(),
            routing_key: c.queue.to_string(),
            delivery_tag: n as u64 + 1,
        },
        SourceConfig::RedisPubSub(_)
        | SourceConfig::RedisKeyspace(_)
        | SourceConfig::Generate(_) => Origin::Generated,
    }
}

fn message_of(input: &Input, origin: Origin) -> Result<Message, String> {
    let payload = match (&input.json, &input.payload) {
        (Some(_), Some(_)) => return Err("an input has both `json` and `payload`".into()),
        (Some(j), None) => Some(Bytes::from(to_json(j)?.to_string())),
        (None, Some(p)) => Some(Bytes::from(p.clone())),
        (None, None) => None,
    };
    Ok(Message {
        key: input.key.clone().map(Bytes::from),
        payload,
        headers: input
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        timestamp: input.timestamp,
        origin,
        ..Message::default()
    })
}

/// The key a sink writes `message` to: its first template rendered, or
/// the message's own key.
fn sink_key(sink: &SinkConfig, message: &Message) -> Result<Option<String>, String> {
    match sink.templates().first() {
        Some((_, template)) => template
            .render(message)
            .map(|k| Some(String::from_utf8_lossy(&k).into_owned()))
            .map_err(|e| e.to_string()),
        None => Ok(message
            .key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).into_owned())),
    }
}

/// Runs the inputs through the pipeline's router and sink templates.
pub fn observe(
    config: &Config,
    pipeline: &PipelineConfig,
    inputs: &[Input],
) -> Result<Observed, String> {
    let router = Router::new(config, pipeline);
    let mut seen = Observed::default();
    for (n, input) in inputs.iter().enumerate() {
        let message = message_of(input, origin_of(&pipeline.source, n))?;
        let plan = match router.plan(message, &|| false) {
            Ok(plan) => plan,
            Err(refused) => {
                let (error, message) = (refused.error, refused.message);
                seen.dead_letters.push((error.to_string(), message, n + 1));
                continue;
            }
        };
        let deliveries = match plan {
            Plan::Dropped(_) | Plan::Echo(..) | Plan::Interrupted => {
                seen.dropped += 1;
                continue;
            }
            Plan::Deliver(d) if d.is_empty() => {
                seen.dropped += 1;
                continue;
            }
            Plan::Deliver(d) => d,
        };
        for (m, sinks) in deliveries {
            if sinks.is_empty() {
                match pipeline.unmatched {
                    Unmatched::Drop => seen.dropped += 1,
                    Unmatched::DeadLetter => seen.dead_letters.push((
                        "no route matched the message".to_owned(),
                        m,
                        n + 1,
                    )),
                }
                continue;
            }
            for i in sinks {
                let spec = &pipeline.sinks[i];
                match sink_key(&spec.connector, &m) {
                    Ok(key) => seen.sinks.entry(i).or_default().push((key, m.clone())),
                    Err(e) => seen.dead_letters.push((
                        format!("{}: {e}", spec.label(i)),
                        m.clone(),
                        n + 1,
                    )),
                }
            }
        }
    }
    Ok(seen)
}

fn payload_text(m: &Message) -> String {
    match &m.payload {
        Some(p) => String::from_utf8_lossy(p).into_owned(),
        None => "(tombstone)".to_owned(),
    }
}

/// Compares a payload with an expected JSON value or text; the lines that
/// say how it differs.
fn payload_problems(
    m: &Message,
    json: Option<&toml::Value>,
    text: Option<&str>,
) -> Result<Vec<String>, String> {
    let mut problems = Vec::new();
    if let Some(expected) = json {
        let expected = to_json(expected)?;
        match m.json() {
            Ok(actual) => {
                let diffs = diff::differences(&expected, &actual, 10);
                if !diffs.is_empty() {
                    problems.push(format!(
                        "payload differs:\n{}",
                        diff::render(&diffs, "          ", "expected", "got")
                            .trim_end_matches('\n')
                    ));
                }
            }
            Err(e) => problems.push(format!("payload is not JSON ({e}): {}", payload_text(m))),
        }
    }
    if let Some(expected) = text
        && payload_text(m) != expected
    {
        problems.push(format!(
            "payload: expected {expected:?}, got {:?}",
            payload_text(m)
        ));
    }
    Ok(problems)
}

/// Checks one test; the failure lines, empty when it passes.
pub fn check(config: &Config, test: &TestCase) -> Result<Vec<String>, String> {
    let pipeline = super::pick_pipeline(config, test.pipeline.as_deref())?;
    let index_of = |name: &str| {
        pipeline
            .sinks
            .iter()
            .enumerate()
            .position(|(i, s)| s.id(i) == name)
            .ok_or_else(|| {
                let names: Vec<String> = (pipeline.sinks.iter().enumerate())
                    .map(|(i, s)| format!("`{}`", s.id(i)))
                    .collect();
                format!(
                    "pipeline `{}` has no sink `{name}` (its sinks: {})",
                    pipeline.name,
                    names.join(", ")
                )
            })
    };
    let mut expected: BTreeMap<usize, Vec<&Expected>> = BTreeMap::new();
    for e in &test.outputs {
        expected.entry(index_of(&e.sink)?).or_default().push(e);
    }
    let seen = observe(config, pipeline, &test.inputs)?;
    let mut fails = Vec::new();
    for (i, spec) in pipeline.sinks.iter().enumerate() {
        let want = expected.get(&i).map_or(&[][..], Vec::as_slice);
        let got = seen.sinks.get(&i).map_or(&[][..], Vec::as_slice);
        let name = format!("sink `{}`", spec.id(i));
        if want.len() != got.len() {
            let mut line = format!(
                "{name}: expected {} message(s), got {}",
                want.len(),
                got.len()
            );
            for (key, m) in got {
                let _ = write!(
                    line,
                    "\n          got{}: {}",
                    key.as_ref()
                        .map(|k| format!(" key {k:?}"))
                        .unwrap_or_default(),
                    payload_text(m)
                );
            }
            fails.push(line);
            continue;
        }
        for (n, (e, (key, m))) in want.iter().zip(got).enumerate() {
            let at = format!("{name}, message {}", n + 1);
            if let Some(k) = &e.key
                && key.as_deref() != Some(k.as_str())
            {
                fails.push(format!("{at}: key: expected {k:?}, got {key:?}"));
            }
            for p in payload_problems(m, e.json.as_ref(), e.payload.as_deref())? {
                fails.push(format!("{at}: {p}"));
            }
            for (h, v) in &e.headers {
                let actual = m
                    .headers
                    .get(h)
                    .map(|b| String::from_utf8_lossy(b).into_owned());
                if actual.as_deref() != Some(v.as_str()) {
                    fails.push(format!(
                        "{at}: header `{h}`: expected {v:?}, got {actual:?}"
                    ));
                }
            }
        }
    }
    if test.dead_letters.len() != seen.dead_letters.len() {
        let mut line = format!(
            "dead letters: expected {}, got {}",
            test.dead_letters.len(),
            seen.dead_letters.len()
        );
        for (reason, m, input) in &seen.dead_letters {
            let _ = write!(
                line,
                "\n          input {input}: {reason}: {}",
                payload_text(m)
            );
        }
        fails.push(line);
    } else {
        for (n, (e, (reason, m, input))) in
            test.dead_letters.iter().zip(&seen.dead_letters).enumerate()
        {
            let at = format!("dead letter {} (input {input})", n + 1);
            if let Some(words) = &e.reason
                && !reason.contains(words.as_str())
            {
                fails.push(format!(
                    "{at}: reason {reason:?} does not contain {words:?}"
                ));
            }
            for p in payload_problems(m, e.json.as_ref(), None)? {
                fails.push(format!("{at}: {p}"));
            }
        }
    }
    if let Some(dropped) = test.dropped
        && dropped != seen.dropped
    {
        fails.push(format!("dropped: expected {dropped}, got {}", seen.dropped));
    }
    Ok(fails)
}

/// The result of a tests file.
pub struct Report {
    pub text: String,
    pub passed: usize,
    pub failed: usize,
}

/// Loads a tests file (or the one beside a config) and runs every test.
pub fn run(path: &Path) -> Result<Report, String> {
    let tests_path = tests_file_for(path);
    let text = std::fs::read_to_string(&tests_path)
        .map_err(|e| format!("cannot read {}: {e}", tests_path.display()))?;
    let tests: TestsFile =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", tests_path.display()))?;
    let config_path = config_for(&tests_path, &tests);
    let config = Config::load(&config_path).map_err(|e| e.to_string())?;
    let mut report = Report {
        text: format!(
            "{} (config {})\n",
            tests_path.display(),
            config_path.display()
        ),
        passed: 0,
        failed: 0,
    };
    if tests.tests.is_empty() {
        return Err(format!(
            "{}: no tests; add a [[test]] table",
            tests_path.display()
        ));
    }
    for test in &tests.tests {
        let fails = check(&config, test).map_err(|e| format!("test \"{}\": {e}", test.name))?;
        if fails.is_empty() {
            report.passed += 1;
            let _ = writeln!(report.text, "  ok    {}", test.name);
        } else {
            report.failed += 1;
            let _ = writeln!(report.text, "  FAIL  {}", test.name);
            for f in fails {
                let _ = writeln!(report.text, "        {f}");
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[[pipeline]]
name = "p"
source = { type = "kafka", brokers = "b:9092", topics = ["events"], group = "g" }
[[pipeline.step]]
filter = '.type != "test"'
[[pipeline.route]]
when = '.type == "payment"'
sinks = ["db"]
[[pipeline.route]]
when = '.type == "audit"'
sinks = ["log"]
[[pipeline.sink]]
name = "db"
type = "redis"
url = "redis://x"
write = "set"
key = "order:{order_id}"
[[pipeline.sink]]
name = "log"
type = "kafka"
brokers = "b:9092"
topic = "log"
"#;

    fn config() -> Config {
        Config::parse(CONFIG, Path::new("t.toml"), &|_| None).unwrap_or_else(|e| panic!("{e}"))
    }

    fn case(text: &str) -> TestCase {
        let file: TestsFile = toml::from_str(text).unwrap();
        file.tests.into_iter().next().unwrap()
    }

    const INPUTS: &str = r#"
[[test]]
name = "t"
dropped = DROPPED
[[test.input]]
key = "o1"
json = { type = "payment", order_id = "o1", status = "paid" }
[[test.input]]
json = { type = "test" }
[[test.input]]
json = { type = "weblog" }
[[test.input]]
json = { type = "payment" }
"#;

    #[test]
    fn a_test_passes_when_sinks_dead_letters_and_drops_are_as_expected() {
        let t = case(&format!(
            "{}
[[test.output]]
sink = \"db\"
key = \"order:o1\"
json = {{ type = \"payment\", order_id = \"o1\", status = \"paid\" }}
[[test.dead_letter]]
reason = \"no route matched\"
[[test.dead_letter]]
reason = \"order_id\"
",
            INPUTS.replace("DROPPED", "1")
        ));
        let fails = check(&config(), &t).unwrap();
        assert!(fails.is_empty(), "{fails:#?}");
        let seen = observe(&config(), &config().pipelines[0], &t.inputs).unwrap();
        assert_eq!(seen.dropped, 1, "the filtered test event");
    }

    #[test]
    fn a_changed_expectation_fails_with_the_field_and_both_values() {
        let t = case(&format!(
            "{}
[[test.output]]
sink = \"db\"
key = \"order:o2\"
json = {{ type = \"payment\", order_id = \"o1\", status = \"refunded\" }}
[[test.output]]
sink = \"log\"
payload = \"x\"
",
            INPUTS.replace("DROPPED", "2")
        ));
        let fails = check(&config(), &t).unwrap().join("\n");
        assert!(
            fails.contains(
                "sink `db`, message 1: key: expected \"order:o2\", got Some(\"order:o1\")"
            ),
            "{fails}"
        );
        assert!(
            fails.contains(".status: expected \"refunded\", got \"paid\""),
            "{fails}"
        );
        assert!(
            fails.contains("sink `log`: expected 1 message(s), got 0"),
            "{fails}"
        );
        assert!(fails.contains("dead letters: expected 0, got 2"), "{fails}");
        assert!(fails.contains("input 3: no route matched"), "{fails}");
        assert!(fails.contains("dropped: expected 2, got 1"), "{fails}");
    }

    #[test]
    fn an_unknown_sink_is_an_error_naming_the_sinks() {
        let t = case("[[test]]\nname = \"t\"\n[[test.output]]\nsink = \"nope\"\n");
        let e = check(&config(), &t).unwrap_err();
        assert!(
            e.contains("no sink `nope`") && e.contains("`db`, `log`"),
            "{e}"
        );
    }

    #[test]
    fn tests_files_sit_beside_their_config() {
        assert_eq!(
            tests_file_for(Path::new("ex/retail.toml")),
            Path::new("ex/retail.tests.toml")
        );
        let file: TestsFile = toml::from_str("").unwrap();
        assert_eq!(
            config_for(Path::new("ex/retail.tests.toml"), &file),
            Path::new("ex/retail.toml")
        );
    }
}
