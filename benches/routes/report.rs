//! The harness's output: text tables, a JSON file and an SVG plot (drawn
//! here: two bar charts need no plotting crate).

use std::fmt::Write as _;

use crate::backlog::Backlog;
use crate::loaded::Loaded;
use crate::throughput::Throughput;

#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub mode: String,
    pub started: String,
    pub machine: String,
    pub load_at_start: String,
    pub load_at_end: String,
    pub peer: Option<String>,
    pub throughput: Vec<Throughput>,
    pub latency: Vec<Loaded>,
    pub backlog: Vec<Backlog>,
}

fn k(rate: f64) -> String {
    if rate.is_nan() {
        "-".into()
    } else {
        format!("{:.1}k", rate / 1000.0)
    }
}

fn size(bytes: usize) -> String {
    match bytes {
        b if b >= 1024 && b % 1024 == 0 => format!("{}KB", b / 1024),
        b => format!("{b}B"),
    }
}

fn opt_pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.0}%", v * 100.0))
}

pub fn tables(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "ferry benchmark ({} mode), {}; load {} at start, {} at end{}",
        r.mode,
        r.machine,
        r.load_at_start,
        r.load_at_end,
        r.peer
            .as_ref()
            .map_or(String::new(), |p| format!("; peer: {p}"))
    );
    let _ = writeln!(
        s,
        "\nThroughput (messages/s, start of the process to the last message arriving; medians of {} runs)",
        r.throughput.first().map_or(1, |t| t.repeats)
    );
    let _ = writeln!(
        s,
        "{:<22} {:>5} {:>7} {:>9} {:>9} {:>9} {:>6} {:>7} {:>8} {:>5} {:>4} {:>6} {:>6} {:>6} {:>9} {:>8} {:>7}  limiter",
        "route",
        "size",
        "msgs",
        "plain-src",
        "plain-snk",
        "ferry",
        "ratio",
        "steady",
        "us/msg",
        "busy",
        "sys",
        "RSS MB",
        "srcsrv",
        "snksrv",
        "peer",
        "peer us",
        "vs peer"
    );
    for t in &r.throughput {
        let f = t.ferry.clone().unwrap_or_default();
        let _ = writeln!(
            s,
            "{:<22} {:>5} {:>7} {:>9} {:>9} {:>9} {:>6} {:>7} {:>8.1} {:>5} {:>4} {:>6.1} {:>6} {:>6} {:>9} {:>8} {:>7}  {}",
            t.route,
            size(t.size),
            t.messages,
            k(t.raw_source),
            k(t.raw_sink),
            t.ferry.as_ref().map_or("-".into(), |f| k(f.rate)),
            if t.ratio.is_nan() {
                "-".into()
            } else {
                format!("{:.2}", t.ratio)
            },
            k(f.steady_rate),
            f.cpu_us_per_msg,
            format!("{:.0}%", f.busy * 100.0),
            format!("{:.0}%", f.sys_share * 100.0),
            f.peak_rss_mb,
            opt_pct(f.source_server_busy),
            opt_pct(f.sink_server_busy),
            t.peer.as_ref().map_or("-".into(), |p| k(p.rate)),
            t.peer
                .as_ref()
                .map_or("-".into(), |p| format!("{:.1}", p.cpu_us_per_msg)),
            t.vs_peer.map_or("-".into(), |v| format!("{v:.2}")),
            t.limiter
        );
        for e in &t.errors {
            let _ = writeln!(s, "    ! {}", e.lines().next().unwrap_or_default());
        }
    }
    let _ = writeln!(
        s,
        "\nferry's sink writes (from its metrics): batches, mean batch, mean time inside one write, writes in flight on average (the time inside writes over the run: below 1 the sink waited for messages; a window of writes goes above 1)"
    );
    for t in &r.throughput {
        if let Some(w) = t.ferry.as_ref().and_then(|f| f.sink_writes.as_ref()) {
            let _ = writeln!(
                s,
                "{:<22} {:>5} {:>8.0} writes {:>7.0} msgs/write {:>8.2} ms/write {:>6.2} in flight",
                t.route,
                size(t.size),
                w.writes,
                w.mean_batch,
                w.mean_write_ms,
                w.write_share
            );
        }
    }
    let _ = writeln!(
        s,
        "\nServers' CPU per message (us): the source server under the plain source client / under ferry, the sink server under the plain sink client / under ferry (the shared RabbitMQ node counts all its work)"
    );
    let us = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
    for t in &r.throughput {
        let f = t.ferry.as_ref();
        let _ = writeln!(
            s,
            "{:<22} {:>5} source {:>7} / {:>7}   sink {:>7} / {:>7}",
            t.route,
            size(t.size),
            us(t.raw_source_server_us),
            us(f.and_then(|f| f.source_server_us)),
            us(t.raw_sink_server_us),
            us(f.and_then(|f| f.sink_server_us)),
        );
    }
    if !r.latency.is_empty() {
        let _ = writeln!(
            s,
            "\nLatency at half of ferry's saturation rate (ms; source-only = the load generator to a plain reader of the source system)"
        );
        let _ = writeln!(
            s,
            "{:<22} {:>5} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} {:>8} {:>6}",
            "route",
            "size",
            "offered",
            "received",
            "p50",
            "p99",
            "p99.9",
            "max",
            "src p50",
            "src p99",
            "src p999",
            "us/msg",
            "busy"
        );
        for l in &r.latency {
            let e = &l.end_to_end;
            let so = &l.source_only;
            let _ = writeln!(
                s,
                "{:<22} {:>5} {:>8.0}/s {:>8} {:>8.2} {:>8.2} {:>8.2} {:>8.1} | {:>8.2} {:>8.2} {:>8.2} {:>8.1} {:>5.0}%",
                l.route,
                size(l.size),
                l.offered,
                e.received,
                e.p50_ms,
                e.p99_ms,
                e.p999_ms,
                e.max_ms,
                so.p50_ms,
                so.p99_ms,
                so.p999_ms,
                l.ferry_cpu_us_per_msg,
                l.ferry_busy * 100.0
            );
            for err in &l.errors {
                let _ = writeln!(s, "    ! {}", err.lines().next().unwrap_or_default());
            }
        }
    }
    if !r.backlog.is_empty() {
        let _ = writeln!(
            s,
            "\nMemory with a backlog behind a paused sink (ferry's peak RSS)"
        );
        let _ = writeln!(
            s,
            "{:<22} {:>9} {:>5} {:>10} {:>12} {:>12} {:>12}",
            "route", "backlog", "size", "paused (s)", "RSS paused", "RSS overall", "drain msg/s"
        );
        for b in &r.backlog {
            let _ = writeln!(
                s,
                "{:<22} {:>9} {:>5} {:>10.0} {:>9.1} MB {:>9.1} MB {:>12}",
                b.route,
                b.messages,
                size(b.size),
                b.paused_seconds,
                b.peak_rss_paused_mb,
                b.peak_rss_mb,
                k(b.drain_rate)
            );
            for err in &b.errors {
                let _ = writeln!(s, "    ! {}", err.lines().next().unwrap_or_default());
            }
        }
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One horizontal bar chart: per group (route), one bar per series.
struct Chart<'a> {
    title: &'a str,
    unit: &'a str,
    log: bool,
    /// Labels in thousands (`12.3k`), for rates.
    kilo: bool,
    series: &'a [(&'a str, &'a str)],
    groups: Vec<(String, Vec<Option<f64>>)>,
}

const BAR: f64 = 9.0;
const LABEL_W: f64 = 170.0;
const PLOT_W: f64 = 520.0;

impl Chart<'_> {
    fn height(&self) -> f64 {
        50.0 + self.groups.len() as f64 * (self.series.len() as f64 * BAR + 12.0) + 30.0
    }

    fn draw(&self, out: &mut String, top: f64) {
        let max = self
            .groups
            .iter()
            .flat_map(|(_, v)| v.iter().flatten())
            .fold(0.0f64, |a, &b| a.max(b))
            .max(1e-9);
        let (lo, hi) = (0.1f64, max.max(1.0) * 1.2);
        let x = |v: f64| -> f64 {
            if self.log {
                let v = v.max(lo);
                PLOT_W * (v.log10() - lo.log10()) / (hi.log10() - lo.log10())
            } else {
                PLOT_W * v / (max * 1.1)
            }
        };
        let _ = writeln!(
            out,
            r#"<text x="10" y="{}" font-size="14" font-weight="bold">{}</text>"#,
            top + 18.0,
            esc(self.title)
        );
        let mut legend_x = LABEL_W;
        for (name, color) in self.series {
            let _ = writeln!(
                out,
                r#"<rect x="{legend_x}" y="{}" width="10" height="10" fill="{color}"/><text x="{}" y="{}" font-size="11">{}</text>"#,
                top + 28.0,
                legend_x + 14.0,
                top + 37.0,
                esc(name)
            );
            legend_x += 30.0 + name.len() as f64 * 6.5;
        }
        let mut y = top + 50.0;
        for (label, values) in &self.groups {
            let h = self.series.len() as f64 * BAR;
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{}" font-size="11" text-anchor="end">{}</text>"#,
                LABEL_W - 6.0,
                y + h / 2.0 + 4.0,
                esc(label)
            );
            for (i, v) in values.iter().enumerate() {
                let Some(v) = v.filter(|v| v.is_finite()) else {
                    continue;
                };
                let w = x(v).max(1.0);
                let by = y + i as f64 * BAR;
                let _ = writeln!(
                    out,
                    r#"<rect x="{LABEL_W}" y="{by}" width="{w:.1}" height="{}" fill="{}"/><text x="{:.1}" y="{}" font-size="8">{}</text>"#,
                    BAR - 1.0,
                    self.series[i].1,
                    LABEL_W + w + 3.0,
                    by + BAR - 2.0,
                    match v {
                        v if self.kilo => format!("{:.1}k", v / 1000.0),
                        v if v >= 10.0 => format!("{v:.0}"),
                        v => format!("{v:.2}"),
                    }
                );
            }
            y += h + 12.0;
        }
        let _ = writeln!(
            out,
            r#"<line x1="{LABEL_W}" y1="{}" x2="{LABEL_W}" y2="{}" stroke="black"/><text x="{}" y="{}" font-size="10">{}{}</text>"#,
            top + 45.0,
            y,
            LABEL_W,
            y + 14.0,
            esc(self.unit),
            if self.log { " (log scale)" } else { "" }
        );
    }
}

pub fn svg(r: &Report, size: usize) -> String {
    let tp = Chart {
        title: &format!("Throughput at {} messages (msg/s)", self::size(size)),
        unit: "messages per second",
        log: false,
        kilo: true,
        series: &[
            ("plain source client", "#9ecae1"),
            ("plain sink client", "#c6dbef"),
            ("ferry", "#e6550d"),
            ("mq-bridge", "#756bb1"),
        ],
        groups: r
            .throughput
            .iter()
            .filter(|t| t.size == size)
            .map(|t| {
                (
                    t.route.clone(),
                    vec![
                        Some(t.raw_source),
                        Some(t.raw_sink),
                        t.ferry.as_ref().map(|f| f.rate),
                        t.peer.as_ref().map(|p| p.rate),
                    ],
                )
            })
            .collect(),
    };
    let lat = Chart {
        title: "End-to-end latency at half of saturation (ms)",
        unit: "milliseconds",
        log: true,
        kilo: false,
        series: &[
            ("p50", "#fdae6b"),
            ("p99", "#e6550d"),
            ("p99.9", "#a63603"),
            ("source only p99", "#9ecae1"),
        ],
        groups: r
            .latency
            .iter()
            .map(|l| {
                (
                    l.route.clone(),
                    vec![
                        Some(l.end_to_end.p50_ms),
                        Some(l.end_to_end.p99_ms),
                        Some(l.end_to_end.p999_ms),
                        Some(l.source_only.p99_ms),
                    ],
                )
            })
            .collect(),
    };
    let width = LABEL_W + PLOT_W + 80.0;
    let height = tp.height() + lat.height() + 30.0;
    let mut out = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="16" font-size="11" fill="#555">{}</text>
"##,
        esc(&format!(
            "ferry benchmark, {} mode, {}; load {} .. {}",
            r.mode, r.started, r.load_at_start, r.load_at_end
        ))
    );
    tp.draw(&mut out, 24.0);
    lat.draw(&mut out, 24.0 + tp.height());
    out.push_str("</svg>\n");
    out
}
