//! The house rules that a reader checks by eye, checked by reading `src/`:
//! no module imports a module of a higher layer (ARCHITECTURE.md, "Layers"),
//! and no Rust file is over 600 lines.
//!
//! Both read files as text: a `crate::name` (or `ferry::name`) anywhere in a
//! line that is not a comment counts as an import of `name`, which catches
//! `use` lines and paths written inline alike.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may use modules of its own layer and
/// of the layers below it, never those above. ARCHITECTURE.md draws the same
/// table; a new top-level module must be added here (the test says so).
const LAYERS: &[(&str, &[&str])] = &[
    // Building blocks that know nothing of pipelines or of any system.
    (
        "base",
        &[
            "ack", "backoff", "clock", "message", "observe", "problem", "secret", "sync",
        ],
    ),
    // Values with meaning: self-checking settings, templates, positions, errors.
    (
        "values",
        &["error", "json_field", "position", "template", "values"],
    ),
    // The parts a pipeline is made of: one folder per system, and the steps.
    ("parts", &["connectors", "steps"]),
    // The config file, assembled from the parts' settings.
    ("config", &["config"]),
    // Running pipelines, and checking them against the live systems.
    ("runtime", &["check", "runtime"]),
    // Commands around pipelines (replay, reconcile, tap, test).
    ("jobs", &["jobs"]),
    // The binary and the crate root.
    ("top", &["lib", "main"]),
];

/// Nothing may be longer: a longer file has more than one job.
const MAX_LINES: usize = 600;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("a readable directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to: `src/a.rs` and
/// `src/a/...` are `a`.
fn module_of(relative: &Path) -> String {
    let first = relative
        .components()
        .next()
        .expect("a path below src/")
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    first.strip_suffix(".rs").unwrap_or(&first).to_owned()
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

/// The top-level modules a line names as `crate::x` or `ferry::x`.
fn named_modules(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    for prefix in ["crate::", "ferry::"] {
        let mut rest = line;
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().next_back();
            rest = &rest[at + prefix.len()..];
            // `mycrate::x` is not `crate::x`.
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

/// Every import of a higher layer, as `file:line: a (layer) uses b (layer)`.
fn climbs(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let relative = file.strip_prefix(src).expect("below src/");
        let module = module_of(relative);
        let Some(own) = layer_of(&module) else {
            found.push(format!(
                "{}: module `{module}` is in no layer: add it to LAYERS in tests/architecture.rs \
                 and to ARCHITECTURE.md",
                relative.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("a readable source file");
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for used in named_modules(line) {
                match layer_of(&used) {
                    Some(layer) if layer > own => found.push(format!(
                        "src/{}:{}: `{module}` ({}) uses `{used}` ({})",
                        relative.display(),
                        n + 1,
                        LAYERS[own].0,
                        LAYERS[layer].0
                    )),
                    _ => {}
                }
            }
        }
    }
    found
}

fn long_files() -> BTreeMap<String, usize> {
    let root = root();
    let mut files = Vec::new();
    for dir in ["src", "tests", "benches", "examples"] {
        rust_files(&root.join(dir), &mut files);
    }
    files
        .into_iter()
        .filter_map(|file| {
            let lines = std::fs::read_to_string(&file)
                .expect("a readable source file")
                .lines()
                .count();
            let relative = file.strip_prefix(&root).expect("below the crate");
            (lines > MAX_LINES).then(|| (relative.display().to_string(), lines))
        })
        .collect()
}

#[test]
fn no_module_imports_a_higher_layer() {
    let climbs = climbs(&root().join("src"));
    assert!(
        climbs.is_empty(),
        "imports that climb a layer (see ARCHITECTURE.md, \"Layers\"):\n{}",
        climbs.join("\n")
    );
}

#[test]
fn no_rust_file_is_over_600_lines() {
    let long = long_files();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines (split them by job, or move their tests to a \
         sibling file):\n{long:#?}"
    );
}

/// The check itself: a climbing import in a scratch tree is found, one that
/// goes down is not, and a module missing from the table is reported.
#[test]
fn the_layer_check_finds_a_climbing_import() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let src = dir.path();
    std::fs::create_dir_all(src.join("connectors/redis")).expect("create");
    std::fs::write(
        src.join("connectors/redis/sink.rs"),
        "use crate::message::Message;\n// crate::runtime in a comment\nuse crate::runtime::backoff;\n",
    )
    .expect("write");
    std::fs::write(
        src.join("config.rs"),
        "use crate::connectors::SinkConfig;\n",
    )
    .expect("write");
    std::fs::write(src.join("extra.rs"), "\n").expect("write");
    let climbs = climbs(src);
    assert_eq!(climbs.len(), 2, "{climbs:#?}");
    assert!(
        climbs[0]
            .starts_with("src/connectors/redis/sink.rs:3: `connectors` (parts) uses `runtime`")
    );
    assert!(climbs[1].contains("module `extra` is in no layer"));
    assert_eq!(
        named_modules("x = mycrate::runtime::a + ferry::jobs::b"),
        ["jobs"]
    );
}
