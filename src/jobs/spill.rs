//! Records sorted by key in bounded memory, for `ferry reconcile`: at most
//! `limit` rows are held; past that they are sorted and written to a run
//! file, and the runs are merged when read back (an external merge sort).
//! For each key only its last row (the latest value, as a compacted topic
//! or a cache would hold it) comes out. Pure apart from the run files.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Lines, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One record: its key, its place in the input, its comparable value and,
/// for repairs, the message it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Row {
    pub key: String,
    pub seq: u64,
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<Original>,
}

/// What a repair writes: the record's own key and payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Original {
    pub key: Option<String>,
    pub payload: Option<String>,
}

/// A run file, deleted when dropped.
struct Run(PathBuf);

impl Drop for Run {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Rows collected so far.
pub(crate) struct Collector {
    rows: Vec<Row>,
    limit: usize,
    runs: Vec<Run>,
    dir: PathBuf,
    name: String,
    next_seq: u64,
}

impl Collector {
    /// Holds at most `limit` rows in memory; runs go to `dir`.
    pub(crate) fn new(limit: usize, dir: PathBuf, name: &str) -> Collector {
        Collector {
            rows: Vec::new(),
            limit: limit.max(1),
            runs: Vec::new(),
            dir,
            name: name.to_owned(),
            next_seq: 0,
        }
    }

    pub(crate) fn push(
        &mut self,
        key: String,
        value: String,
        original: Option<Original>,
    ) -> Result<(), String> {
        self.rows.push(Row {
            key,
            seq: self.next_seq,
            value,
            original,
        });
        self.next_seq += 1;
        if self.rows.len() >= self.limit {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> Result<(), String> {
        sort(&mut self.rows);
        let path = self.dir.join(format!(
            "ferry-reconcile-{}-{}-{}-{}.jsonl",
            std::process::id(),
            self.name,
            self.runs.len(),
            self.next_seq
        ));
        let run = Run(path);
        let mut out = BufWriter::new(
            File::create(&run.0).map_err(|e| format!("cannot write {}: {e}", run.0.display()))?,
        );
        for row in self.rows.drain(..) {
            serde_json::to_writer(&mut out, &row).map_err(|e| e.to_string())?;
            out.write_all(b"\n").map_err(|e| e.to_string())?;
        }
        out.flush()
            .map_err(|e| format!("cannot write {}: {e}", run.0.display()))?;
        self.runs.push(run);
        Ok(())
    }

    /// Every key once, in key order, with its last row; and how many rows
    /// were superseded by a later one of the same key.
    pub(crate) fn finish(mut self) -> Result<Sorted, String> {
        if self.runs.is_empty() {
            sort(&mut self.rows);
            return Ok(Sorted {
                source: Source::Memory(self.rows.into_iter()),
                pending: None,
                duplicates: 0,
                runs: 0,
            });
        }
        if !self.rows.is_empty() {
            self.spill()?;
        }
        let mut readers = Vec::new();
        let mut heap = BinaryHeap::new();
        for (i, run) in self.runs.iter().enumerate() {
            let file =
                File::open(&run.0).map_err(|e| format!("cannot read {}: {e}", run.0.display()))?;
            let mut lines = BufReader::new(file).lines();
            if let Some(row) = read_row(&mut lines)? {
                heap.push(Reverse(Head(row, i)));
            }
            readers.push(lines);
        }
        let runs = self.runs.len();
        Ok(Sorted {
            runs,
            source: Source::Merge {
                readers,
                heap,
                _runs: std::mem::take(&mut self.runs),
            },
            pending: None,
            duplicates: 0,
        })
    }
}

fn sort(rows: &mut [Row]) {
    rows.sort_unstable_by(|a, b| (&a.key, a.seq).cmp(&(&b.key, b.seq)));
}

fn read_row(lines: &mut Lines<BufReader<File>>) -> Result<Option<Row>, String> {
    match lines.next() {
        None => Ok(None),
        Some(line) => {
            let line = line.map_err(|e| format!("reading a run file: {e}"))?;
            serde_json::from_str(&line)
                .map(Some)
                .map_err(|e| format!("a run file is damaged: {e}"))
        }
    }
}

/// A row at the head of run `.1`, ordered by (key, seq).
#[derive(PartialEq, Eq)]
struct Head(Row, usize);

impl Ord for Head {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.0.key, self.0.seq).cmp(&(&other.0.key, other.0.seq))
    }
}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

enum Source {
    Memory(std::vec::IntoIter<Row>),
    Merge {
        readers: Vec<Lines<BufReader<File>>>,
        heap: BinaryHeap<Reverse<Head>>,
        _runs: Vec<Run>,
    },
}

impl Source {
    fn next(&mut self) -> Result<Option<Row>, String> {
        match self {
            Source::Memory(rows) => Ok(rows.next()),
            Source::Merge { readers, heap, .. } => {
                let Some(Reverse(Head(row, i))) = heap.pop() else {
                    return Ok(None);
                };
                if let Some(next) = read_row(&mut readers[i])? {
                    heap.push(Reverse(Head(next, i)));
                }
                Ok(Some(row))
            }
        }
    }
}

/// Rows in key order, one per key.
pub(crate) struct Sorted {
    source: Source,
    pending: Option<Row>,
    /// Rows replaced by a later row of the same key, so far.
    pub duplicates: u64,
    /// Run files written (0: everything fitted in memory).
    pub runs: usize,
}

impl Sorted {
    pub(crate) fn next_row(&mut self) -> Result<Option<Row>, String> {
        let mut current = match self.pending.take() {
            Some(row) => row,
            None => match self.source.next()? {
                Some(row) => row,
                None => return Ok(None),
            },
        };
        loop {
            match self.source.next()? {
                Some(row) if row.key == current.key => {
                    // Rows of a key come in input order: the later wins.
                    self.duplicates += 1;
                    current = row;
                }
                other => {
                    self.pending = other;
                    return Ok(Some(current));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(limit: usize, rows: &[(&str, &str)]) -> (Vec<(String, String)>, u64, usize) {
        let dir = std::env::temp_dir();
        let mut c = Collector::new(limit, dir, "test");
        for (k, v) in rows {
            c.push((*k).to_owned(), (*v).to_owned(), None).unwrap();
        }
        let mut sorted = c.finish().unwrap();
        let spilled = sorted.runs;
        let mut out = Vec::new();
        while let Some(row) = sorted.next_row().unwrap() {
            out.push((row.key, row.value));
        }
        (out, sorted.duplicates, spilled)
    }

    const ROWS: &[(&str, &str)] = &[
        ("b", "1"),
        ("a", "1"),
        ("c", "1"),
        ("a", "2"),
        ("d", "1"),
        ("b", "2"),
        ("a", "3"),
    ];

    #[test]
    fn rows_come_out_by_key_with_the_last_value_of_each() {
        let (out, duplicates, spilled) = collect(100, ROWS);
        assert_eq!(spilled, 0);
        assert_eq!(
            out,
            [("a", "3"), ("b", "2"), ("c", "1"), ("d", "1")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(duplicates, 3);
    }

    #[test]
    fn spilled_runs_merge_to_the_same_result() {
        let in_memory = collect(100, ROWS);
        let spilled = collect(2, ROWS);
        assert_eq!(spilled.2, 4, "three runs of 2 rows, and the last row");
        assert_eq!(in_memory.0, spilled.0);
        assert_eq!(in_memory.1, spilled.1);
    }

    #[test]
    fn run_files_are_removed_once_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Collector::new(1, dir.path().to_owned(), "gone");
        c.push("a".into(), "1".into(), None).unwrap();
        c.push("b".into(), "1".into(), None).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        let mut sorted = c.finish().unwrap();
        while sorted.next_row().unwrap().is_some() {}
        drop(sorted);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
