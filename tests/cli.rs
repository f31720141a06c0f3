//! The command line: `check` exit codes and messages, `--help`.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::process::Command;

fn ferry(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(support::ferry_bin())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_every_shipped_example() {
    let mut checked = 0;
    for dir in ["examples", "examples/demo"] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            // Unit tests of a config (`ferry test`) sit beside it: they must pass.
            if name.ends_with(".tests.toml") {
                let (code, stdout, stderr) = ferry(&["test", path.to_str().unwrap()]);
                assert_eq!(code, 0, "{}: {stdout}{stderr}", path.display());
                continue;
            }
            if path.extension().is_some_and(|e| e == "toml") {
                let (code, stdout, stderr) = ferry(&["check", path.to_str().unwrap()]);
                assert_eq!(code, 0, "{}: {stderr}", path.display());
                assert!(stdout.contains(": ok ("), "{stdout}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 2);
}

#[test]
fn check_rejects_a_bad_file_with_exit_code_2_and_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[pipeline]]\nname = \"p\"\nsource = { type = \"kafka\", brokers = \"b:9092\", tpoics = [\"t\"], group = \"g\" }\n\
         [[pipeline.sink]]\ntype = \"redis\"\nurl = \"redis://x\"\nwrite = \"set\"\nkey = \"k\"\n",
    )
    .unwrap();
    let (code, _, stderr) = ferry(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("bad.toml:3:"), "{stderr}");
    assert!(stderr.contains("unknown field `tpoics`"), "{stderr}");
    assert!(stderr.contains("did you mean `topics`?"), "{stderr}");
    let (code, _, stderr) = ferry(&["run", path.to_str().unwrap()]);
    assert_eq!(code, 2, "run refuses the same file: {stderr}");
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let (code, _, stderr) = ferry(&["check", "/nonexistent/ferry.toml"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("/nonexistent/ferry.toml: cannot read the config file"),
        "{stderr}"
    );
}

#[test]
fn help_is_available_for_every_command() {
    for args in [&["--help"][..], &["run", "--help"], &["check", "--help"]] {
        let (code, stdout, _) = ferry(args);
        assert_eq!(code, 0);
        assert!(stdout.contains("Usage: ferry"), "{stdout}");
    }
}

#[test]
fn check_shows_what_each_pipeline_reads_and_writes_and_which_feeds_which() {
    let (code, stdout, stderr) = ferry(&["check", "examples/retail.toml"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("payments: kafka topics `shop-events`"),
        "{stdout}"
    );
    assert!(stdout.contains("emails (amqp queue emails)"), "{stdout}");
    assert!(
        stdout.contains("chain: payments -> inventory through kafka topic `inventory.validated`"),
        "{stdout}"
    );
}
