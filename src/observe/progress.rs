//! Progress of finite jobs (a Kafka copy with `until = "end"`, a generator
//! with a `count`): a bar per pipeline on a terminal, and the share done in
//! the periodic progress line everywhere else.
//!
//! Log lines and bars share stderr: [`LogWriter`] hides the bars while a
//! line is written, so neither garbles the other.

use std::io::{self, IsTerminal, Write};
use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bars of this process; drawn only when stderr is a terminal.
pub struct Bars {
    multi: MultiProgress,
    enabled: bool,
}

static BARS: OnceLock<Bars> = OnceLock::new();

impl Bars {
    pub fn global() -> &'static Bars {
        BARS.get_or_init(|| {
            let enabled = io::stderr().is_terminal();
            let target = if enabled {
                ProgressDrawTarget::stderr_with_hz(5)
            } else {
                ProgressDrawTarget::hidden()
            };
            Bars {
                multi: MultiProgress::with_draw_target(target),
                enabled,
            }
        })
    }

    /// A bar for a job of `total` messages, or `None` when not drawing.
    pub fn bar(&self, pipeline: &str, total: u64) -> Option<ProgressBar> {
        if !self.enabled {
            return None;
        }
        let style = ProgressStyle::with_template(
            "{prefix:.bold} [{bar:40.cyan/blue}] {human_pos}/{human_len} ({percent}%) {per_sec} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let bar = self.multi.add(
            ProgressBar::new(total)
                .with_style(style)
                .with_prefix(pipeline.to_owned()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Some(bar)
    }
}

/// The share of a job done, for log lines: `"41.5%"`.
pub fn percent(done: u64, total: u64) -> String {
    if total == 0 {
        return "100.0%".to_owned();
    }
    format!("{:.1}%", (done.min(total) as f64) * 100.0 / total as f64)
}

/// The tracing writer: stderr, with the bars hidden during each write.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let bars = Bars::global();
        if bars.enabled {
            bars.multi.suspend(|| io::stderr().write_all(buf))?;
        } else {
            io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogWriter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_is_capped_and_handles_empty_jobs() {
        assert_eq!(percent(0, 200), "0.0%");
        assert_eq!(percent(83, 200), "41.5%");
        assert_eq!(percent(250, 200), "100.0%");
        assert_eq!(percent(0, 0), "100.0%");
    }
}
