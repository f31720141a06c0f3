//! Good and bad config files, and the exact errors users see.

use std::path::Path;

use super::*;
use crate::connectors::SourceConfig;
use crate::connectors::kafka::config::{StartFrom, Until};

fn env(name: &str) -> Option<String> {
    (name == "KAFKA_BROKERS").then(|| "10.1.1.1:9092".to_owned())
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("ferry.toml"), &env)
}

/// Every problem, rendered as `ferry check` prints it.
fn errors(text: &str) -> String {
    parse(text)
        .expect_err("config should be refused")
        .to_string()
}

const GOOD: &str = r#"
[[pipeline]]
name = "orders-to-cache"
source = { type = "kafka", brokers = "${KAFKA_BROKERS}", topics = ["orders"], group = "ferry-orders" }

[[pipeline.sink]]
type = "redis"
url = "redis://127.0.0.1:6379"
write = "set"
key = "order:{order_id}"

[pipeline.dead_letter]
type = "redis"
url = "redis://127.0.0.1:6379"
write = "xadd"
key = "dead:{topic}"
"#;

#[test]
fn a_good_file_parses_with_defaults_and_substituted_variables() {
    let config = parse(GOOD).unwrap();
    let p = &config.pipelines[0];
    assert_eq!(p.name.as_str(), "orders-to-cache");
    let SourceConfig::Kafka(k) = &p.source else {
        panic!("kafka source expected")
    };
    assert_eq!(k.brokers.as_str(), "10.1.1.1:9092");
    assert_eq!(k.start, StartFrom::Earliest);
    assert_eq!(k.until, Until::Forever);
    assert_eq!(p.sinks.len(), 1);
    assert_eq!(
        p.sinks[0].connector.describe(),
        "redis set order:{order_id}"
    );
    assert!(p.dead_letter.is_some());
    assert_eq!(p.buffer.get(), 1024);
}

#[test]
fn a_misspelt_field_names_file_line_and_the_right_spelling() {
    let text = GOOD.replace("write = \"set\"", "wrtie = \"set\"");
    let e = errors(&text);
    assert!(
        e.starts_with("error: ferry.toml:9:1: unknown field `wrtie`"),
        "{e}"
    );
    assert!(e.contains("help: did you mean `write`?"), "{e}");
}

#[test]
fn an_unknown_write_mode_lists_the_allowed_ones() {
    let text = GOOD.replace("write = \"set\"", "write = \"hsett\"");
    let e = errors(&text);
    assert!(e.contains("ferry.toml:9:9: unknown variant `hsett`"), "{e}");
    assert!(e.contains("did you mean `hset`?"), "{e}");
}

#[test]
fn an_unknown_connector_type_is_refused() {
    let text = GOOD.replace("type = \"kafka\"", "type = \"postgres\"");
    let e = errors(&text);
    assert!(e.contains("ferry.toml:4:"), "{e}");
    assert!(e.contains("unknown variant `postgres`"), "{e}");
    assert!(e.contains("`kafka`"), "{e}");
}

#[test]
fn a_bad_key_template_points_at_its_line_and_says_why() {
    let text = GOOD.replace("order:{order_id}", "order:{order_id");
    let e = errors(&text);
    assert!(e.contains("ferry.toml:10:7:"), "{e}");
    assert!(e.contains("unclosed `{`"), "{e}");
}

#[test]
fn a_missing_required_field_is_named() {
    let text = GOOD.replace("group = \"ferry-orders\" ", "");
    let e = errors(&text);
    assert!(e.contains("ferry.toml:4:"), "{e}");
    assert!(e.contains("missing field `group`"), "{e}");
}

#[test]
fn an_unset_environment_variable_is_reported_with_a_default_hint() {
    let text = GOOD.replace("${KAFKA_BROKERS}", "${NOT_SET_ANYWHERE}");
    let e = errors(&text);
    assert!(e.contains("ferry.toml:4:"), "{e}");
    assert!(e.contains("`NOT_SET_ANYWHERE` is not set"), "{e}");
}

#[test]
fn cross_field_problems_are_all_reported_with_lines() {
    let text = r#"
[[pipeline]]
name = "a"
source = { type = "generate", count = 10 }
[[pipeline.sink]]
type = "redis"
url = "redis://127.0.0.1"
write = "set"
key = "o:{partition}"

[[pipeline]]
name = "a"
source = { type = "kafka", brokers = "b:9092", topics = [], group = "g", options = { "enable.auto.commit" = "true" } }
[[pipeline.sink]]
type = "redis"
url = "redis://127.0.0.1"
write = "set"
key = "{key}"
[pipeline.dead_letter]
type = "redis"
url = "redis://127.0.0.1"
write = "xadd"
key = "dead:{order_id}"
"#;
    let e = errors(text);
    let lines: Vec<&str> = e.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 5, "{e}");
    assert!(
        lines[0].contains(":9:7: pipeline[0].sink[0].key: `{partition}` is not available"),
        "{e}"
    );
    assert!(
        lines[1].contains(":12:8: pipeline[1].name: pipeline name `a` is used twice"),
        "{e}"
    );
    assert!(lines[2].contains(":13:"), "{e}");
    assert!(lines[2].contains("no topics to consume"), "{e}");
    assert!(
        lines[3].contains(":13:109: pipeline[1].source.options.enable.auto.commit"),
        "{e}"
    );
    assert!(
        lines[3].contains("`enable.auto.commit` cannot be set"),
        "{e}"
    );
    assert!(
        lines[4].contains(":23:7: pipeline[1].dead_letter.key"),
        "{e}"
    );
    assert!(e.contains("reads the payload"), "{e}");
}

#[test]
fn a_pipeline_without_sinks_or_a_file_without_pipelines_is_refused() {
    let e = errors("[[pipeline]]\nname = \"a\"\nsource = { type = \"generate\" }\n");
    assert!(e.contains("pipeline `a` has no sink"), "{e}");
    assert!(e.contains("[[pipeline.sink]]"), "{e}");
    let e = errors("# nothing\n");
    assert!(e.contains("defines no pipeline"), "{e}");
}

#[test]
fn values_are_checked_while_parsing() {
    let bad_duration = GOOD.replace(
        "group = \"ferry-orders\"",
        "group = \"g\", commit_interval = \"5\"",
    );
    assert!(errors(&bad_duration).contains("e.g. \"500ms\""));
    let bad_topic = GOOD.replace("[\"orders\"]", "[\"or ders\"]");
    assert!(errors(&bad_topic).contains("invalid topic name"));
    let bad_count = GOOD.replace(
        "key = \"order:{order_id}\"",
        "key = \"order:{order_id}\"\nbatch_size = 0",
    );
    assert!(errors(&bad_count).contains("at least 1"));
    let bad_url = GOOD.replace(
        "redis://127.0.0.1:6379\"\nwrite = \"set\"",
        "http://x\"\nwrite = \"set\"",
    );
    assert!(
        errors(&bad_url).contains("invalid redis url"),
        "{}",
        errors(&bad_url)
    );
    let bad_name = GOOD.replace("orders-to-cache", "orders to cache");
    assert!(errors(&bad_name).contains("invalid name"));
}

#[test]
fn invalid_toml_is_reported_with_its_position() {
    let e = errors("[[pipeline]\nname = 1\n");
    assert!(e.starts_with("error: ferry.toml:1:"), "{e}");
}

const ROUTED: &str = r#"
[[pipeline]]
name = "shop"
source = { type = "generate" }

[[pipeline.step]]
filter = '.type != "test"'

[[pipeline.route]]
when = '.type == "payment"'
sinks = ["db", "mail"]

[[pipeline.route]]
otherwise = true
sinks = ["db"]

[[pipeline.sink]]
name = "db"
type = "redis"
url = "redis://127.0.0.1"
write = "set"
key = "{key}"
retry = { attempts = 5, initial = "50ms", max = "1s" }

[[pipeline.sink]]
name = "mail"
type = "amqp"
url = "amqp://127.0.0.1"
routing_key = "emails"
"#;

#[test]
fn steps_routes_and_named_sinks_with_retry_settings_parse() {
    let config = parse(ROUTED).unwrap();
    let p = &config.pipelines[0];
    assert_eq!(p.steps.len(), 1);
    assert_eq!(p.routes.len(), 2);
    assert_eq!(p.sinks[0].name.as_ref().unwrap().as_str(), "db");
    assert_eq!(p.sinks[0].retry.attempts.unwrap().get(), 5);
    assert_eq!(p.compiled_routes()[0].sinks, vec![0, 1]);
    assert_eq!(config.max_hops.get(), 8);
}

#[test]
fn a_jq_error_names_the_line_and_the_position_in_the_expression() {
    let e = errors(&ROUTED.replace(".type != \"test\"", ".type !="));
    assert!(e.contains("ferry.toml:7:10: jq: expected term"), "{e}");
    assert!(e.contains("at character 9 of `.type !=`"), "{e}");
}

#[test]
fn routes_must_name_existing_sinks_and_every_sink_must_be_routed() {
    let e = errors(&ROUTED.replace("sinks = [\"db\", \"mail\"]", "sinks = [\"db\", \"mial\"]"));
    assert!(
        e.contains(":11:16: pipeline[0].route[0].sinks[1]: no sink is named `mial`"),
        "{e}"
    );
    assert!(e.contains("sinks are named `db`, `mail`"), "{e}");
    assert!(e.contains("no route writes to sink `mail`"), "{e}");
    let e = errors(&ROUTED.replace("name = \"mail\"\n", ""));
    assert!(e.contains("with routes, every sink needs a `name`"), "{e}");
    let e = errors(&ROUTED.replace("otherwise = true", "when = 'true'\notherwise = true"));
    assert!(e.contains("both `when` and `otherwise`"), "{e}");
    let e = errors(&ROUTED.replace("otherwise = true\n", ""));
    assert!(
        e.contains("a route needs `when` or `otherwise = true`"),
        "{e}"
    );
    let e = errors(&ROUTED.replace("filter = '.type != \"test\"'", "filter = '.'\nmap = '.'"));
    assert!(e.contains("a step does one thing"), "{e}");
}

#[test]
fn a_keyspace_copy_until_the_snapshot_needs_the_snapshot() {
    let text = r#"
[[pipeline]]
name = "export"
source = { type = "redis-keyspace", url = "redis://127.0.0.1", pattern = "user:*", snapshot = false, until = "snapshot" }
[[pipeline.sink]]
type = "redis"
url = "redis://127.0.0.1"
write = "xadd"
key = "users"
"#;
    let e = errors(text);
    assert!(e.contains("ferry.toml:4"), "{e}");
    assert!(e.contains("would emit nothing"), "{e}");
    assert!(parse(&text.replace("snapshot = false, ", "")).is_ok());
}

#[test]
fn exactly_once_needs_a_source_with_positions() {
    let text = r#"
[[pipeline]]
name = "p"
source = { type = "redis-list", url = "redis://127.0.0.1", list = "in" }
[[pipeline.sink]]
type = "redis"
url = "redis://127.0.0.1"
write = "xadd"
key = "log"
exactly_once = true
"#;
    let e = errors(text);
    assert!(e.contains("ferry.toml:10"), "{e}");
    assert!(e.contains("redis-list source have none"), "{e}");
    let kafka = text.replace(
        r#"{ type = "redis-list", url = "redis://127.0.0.1", list = "in" }"#,
        r#"{ type = "kafka", brokers = "b:9092", topics = ["t"], group = "g" }"#,
    );
    assert!(parse(&kafka).is_ok());
    let stray = kafka.replace("exactly_once = true", r#"positions_key = "pos""#);
    assert!(errors(&stray).contains("does nothing without `exactly_once = true`"));
}

const SYNC: &str = r#"
origin = "site-a"

[[pipeline]]
name = "redis-to-kafka"
source = { type = "redis-keyspace", url = "redis://127.0.0.1:6379", pattern = "config:*", sync = true }
[[pipeline.sink]]
type = "kafka"
brokers = "b:9092"
topic = "config"

[[pipeline]]
name = "kafka-to-redis"
source = { type = "kafka", brokers = "b:9092", topics = ["config"], group = "sync" }
[[pipeline.sink]]
type = "redis"
url = "redis://127.0.0.1:6379"
write = "set"
key = "{key}"
sync = true
"#;

#[test]
fn a_two_way_sync_through_redis_keys_needs_sync_on_both_redis_ends() {
    assert!(parse(SYNC).is_ok());
    let e = errors(&SYNC.replace(", sync = true }", " }"));
    assert!(e.contains("ferry.toml:6"), "{e}");
    assert!(
        e.contains("sync redis keys on 127.0.0.1:6379/0 both ways"),
        "{e}"
    );
    let e = errors(&SYNC.replace("key = \"{key}\"\nsync = true", "key = \"{key}\""));
    assert!(e.contains("ferry.toml:15"), "{e}");
    assert!(e.contains("without `sync = true`"), "{e}");
    // Another database is another place: no cycle.
    let other = SYNC
        .replace(", sync = true }", " }")
        .replace("key = \"{key}\"\nsync = true", "key = \"{key}\"")
        .replace(
            "url = \"redis://127.0.0.1:6379\"\nwrite",
            "url = \"redis://127.0.0.1:6379/1\"\nwrite",
        );
    assert!(parse(&other).is_ok(), "{:?}", parse(&other).err());
}

#[test]
fn a_sync_sink_behind_a_kafka_source_starting_at_latest_is_refused() {
    let latest = SYNC.replace(
        r#"group = "sync" }"#,
        r#"group = "sync", start = "latest" }"#,
    );
    let e = errors(&latest);
    assert!(
        e.contains("`start = \"latest\"` in a pipeline with a two-way `sync` sink"),
        "{e}"
    );
    let committed = SYNC.replace(
        r#"group = "sync" }"#,
        r#"group = "sync", start = "committed" }"#,
    );
    assert!(parse(&committed).is_ok());
}

#[test]
fn sync_needs_an_origin_whole_values_and_no_key_step() {
    let e = errors(&SYNC.replace("origin = \"site-a\"", ""));
    assert_eq!(
        e.matches("two-way `sync` needs an `origin`").count(),
        2,
        "{e}"
    );
    let e = errors(&SYNC.replace("write = \"set\"", "write = \"hset\""));
    assert!(e.contains("writes whole values"), "{e}");
    assert!(parse(&SYNC.replace("write = \"set\"", "write = \"hset\"\nreplace = true")).is_ok());
    let e = errors(&SYNC.replace(
        "group = \"sync\" }",
        "group = \"sync\" }\n[[pipeline.step]]\nkey = '.id'",
    ));
    assert!(
        e.contains("a `key` step in a pipeline with a two-way `sync` sink"),
        "{e}"
    );
}

#[test]
fn a_bad_duration_or_jq_expression_does_not_hide_the_other_problems() {
    let text = ROUTED
        .replace(".type != \"test\"", ".type !=")
        .replace("initial = \"50ms\"", "initial = \"5\"")
        .replace(
            "routing_key = \"emails\"",
            "routing_key = \"emails\"\nbatch_size = 0",
        )
        .replace("sinks = [\"db\"]\n", "sinks = [\"nosuch\"]\n");
    let e = errors(&text);
    assert!(e.contains("ferry.toml:7:10: jq: expected term"), "{e}");
    assert!(e.contains("invalid duration \"5\""), "{e}");
    assert!(e.contains("batch_size = 0"), "{e}");
    assert!(e.contains("`nosuch`"), "{e}");
    // In the file's order.
    let at = |s: &str| e.find(s).unwrap();
    assert!(at("jq: expected term") < at("invalid duration"), "{e}");
}

#[test]
fn sizes_and_durations_are_refused_out_of_their_range_with_a_hint() {
    let with_sink = |extra: &str| {
        GOOD.replace(
            "key = \"order:{order_id}\"",
            &format!("key = \"order:{{order_id}}\"\n{extra}"),
        )
    };
    let e = errors(&with_sink("batch_size = 99999999999999"));
    assert!(
        e.contains("ferry.toml:11:14: must be at most 100000, not 99999999999999"),
        "{e}"
    );
    assert!(
        e.contains("help: write 1 to 100000: every message of a batch is held in memory"),
        "{e}"
    );
    let e = errors(&with_sink("ttl = \"0s\""));
    assert!(e.contains("must be at least 1ms, not 0s"), "{e}");
    assert!(e.contains("leave `ttl` out"), "{e}");
    let e = errors(&with_sink("timeout = \"0ms\""));
    assert!(e.contains("must be at least 1ms"), "{e}");
    let e = errors(&with_sink("timeout = \"99999999999999999d\""));
    assert!(e.contains("too long"), "{e}");
    let e = errors(&GOOD.replace(
        "group = \"ferry-orders\"",
        "group = \"g\", prefetch_kbytes = 3000000, commit_interval = \"2d\"",
    ));
    assert!(e.contains("must be at most 2097151, not 3000000"), "{e}");
    assert!(e.contains("must be at most 1h, not 2d"), "{e}");
    let e = errors(&GOOD.replace(
        "name = \"orders-to-cache\"",
        "name = \"orders-to-cache\"\nbuffer = -5",
    ));
    assert!(e.contains("must be at least 1, not -5"), "{e}");
    assert!(parse(&with_sink("ttl = \"1ms\"\nbatch_size = 100000")).is_ok());
}

#[test]
fn unknown_and_mistyped_settings_are_all_reported_too() {
    let text = ROUTED
        .replace(
            "filter = '.type != \"test\"'",
            "filter = '.type != \"test\"'\nfliter = 'x'",
        )
        .replace("initial = \"50ms\"", "initial = \"5\"")
        .replace("url = \"redis://127.0.0.1\"", "url = 5")
        .replace(
            "routing_key = \"emails\"",
            "routing_key = \"emails\"\nbatch_sise = 10",
        );
    let e = errors(&text);
    assert!(e.contains("unknown field `fliter`"), "{e}");
    assert!(e.contains("invalid duration \"5\""), "{e}");
    assert!(e.contains("invalid type: integer `5`"), "{e}");
    assert!(e.contains("unknown field `batch_sise`"), "{e}");
    assert!(
        e.contains("`batch_size`"),
        "a hint for the misspelling:\n{e}"
    );
    assert!(!e.contains("missing field `url`"), "{e}");
    assert_eq!(e.matches("error:").count(), 4, "{e}");
}

#[test]
fn a_stream_end_needs_a_job_and_one_kind_of_end() {
    let stream = |extra: &str| {
        format!(
            r#"
[[pipeline]]
name = "p"
source = {{ type = "redis-stream", url = "redis://h", streams = ["s"], group = "g"{extra} }}
[[pipeline.sink]]
type = "redis"
url = "redis://h"
write = "set"
key = "k"
"#
        )
    };
    let e = errors(&stream(r#", end_id = "1700-0""#));
    assert!(e.contains("`end_id` needs `until = \"end\"`"), "{e}");
    let e = errors(&stream(
        r#", until = "end", end_id = "1700-0", end_time = 1700"#,
    ));
    assert!(e.contains("both say where to end"), "{e}");
    assert!(
        parse(&stream(
            r#", until = "end", end_time = "2024-05-01T10:00:00Z""#
        ))
        .is_ok()
    );
}

#[test]
fn a_sinks_window_is_its_own_setting_with_a_range_and_a_default() {
    let config = parse(GOOD).unwrap();
    let sink = &config.pipelines[0].sinks[0];
    assert_eq!(
        (sink.in_flight.get(), sink.in_flight_kbytes.get()),
        (4, 8192)
    );
    let set = |extra: &str| GOOD.replace("write = \"set\"", &format!("write = \"set\"\n{extra}"));
    let config = parse(&set("in_flight = 1\nin_flight_kbytes = 64")).unwrap();
    let sink = &config.pipelines[0].sinks[0];
    assert_eq!((sink.in_flight.get(), sink.in_flight_kbytes.get()), (1, 64));
    let e = errors(&set("in_flight = 0"));
    assert!(e.contains("in_flight"), "{e}");
    assert!(e.contains("must be at least 1"), "{e}");
}
