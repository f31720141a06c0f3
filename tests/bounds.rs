//! The tester's configs that passed `ferry check` and broke `ferry run`:
//! both now refuse them, with every problem, file:line and a hint.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::process::Command;

const FUZZED: &str = r#"
[[pipeline]]
name = "fuzzed"
source = { type = "redis-list", url = "redis://127.0.0.1:6379", list = "in", block = "0ms" }

[[pipeline.step]]
filter = '.a |'

[[pipeline.sink]]
type = "redis"
url = "redis://127.0.0.1:6379"
write = "set"
key = "k:{id}"
batch_size = 99999999999999
ttl = "0s"
timeout = "5"
retry = { initial = "100ms", max = "5s", atempts = 3 }
"#;

#[test]
fn check_and_run_refuse_sizes_and_durations_ferry_cannot_run_with_and_name_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzzed.toml");
    std::fs::write(&path, FUZZED).unwrap();
    for command in ["check", "run"] {
        let out = Command::new(support::ferry_bin())
            .arg(command)
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        for expected in [
            "fuzzed.toml:4:", // block = "0ms"
            "must be at least 1ms, not 0ms",
            "fuzzed.toml:7:10: jq: expected term",
            "fuzzed.toml:14:14: must be at most 100000, not 99999999999999",
            "help: write 1 to 100000: every message of a batch is held in memory at once",
            "fuzzed.toml:15:7: must be at least 1ms, not 0s",
            "invalid duration \"5\"",
            "unknown field `atempts`",
            "did you mean `attempts`?",
        ] {
            assert!(
                stderr.contains(expected),
                "{command}: {expected:?} missing in\n{stderr}"
            );
        }
        assert_eq!(stderr.matches("error:").count(), 6, "{command}:\n{stderr}");
    }
}
