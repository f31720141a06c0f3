//! Small config value types that check themselves while being parsed, so
//! that a bad value is reported with its line and can never reach the code
//! that uses it. [`time`] holds the points in time (`--from`, `start_at`).
//!
//! Low in the house: connectors, steps and config all use these types, and
//! they use nothing above [`crate::problem`] and [`crate::template`].

pub mod time;

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::num::NonZeroUsize;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

use crate::problem::Problem;
use crate::template::Template;

/// The range a size or duration setting accepts, and why: every such
/// setting names its own, so that a value ferry cannot run with (a batch
/// that cannot be allocated, a TTL of zero) is refused by `ferry check`
/// with the line and a hint instead of breaking `ferry run`.
pub trait Limit {
    /// Least value (milliseconds for durations).
    const MIN: u64;
    /// Greatest value (milliseconds for durations).
    const MAX: u64;
    /// Why the range is what it is (the hint `ferry check` prints).
    const WHY: &'static str;
}

macro_rules! limits {
    ($($(#[$doc:meta])* $name:ident: $min:literal ..= $max:expr, $why:literal;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $name;
        impl Limit for $name {
            const MIN: u64 = $min;
            const MAX: u64 = $max;
            const WHY: &'static str = $why;
        }
    )*};
}

const SECOND: u64 = 1000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

limits! {
    /// Messages in one batch (a sink's write, a Redis source's read).
    Batch: 1 ..= 100_000, "every message of a batch is held in memory at once";
    /// Messages waiting between two stages of a pipeline.
    Buffer: 1 ..= 1_000_000, "the buffer is memory, reserved as messages arrive";
    /// Batches a sink may have sent and not yet had confirmed.
    InFlight: 1 ..= 1000, "every batch in flight is held in memory until it is confirmed";
    /// Message kilobytes a sink may have in flight.
    InFlightKbytes: 1 ..= 4_194_304, "what is in flight is held in memory until it is confirmed";
    /// Pipelines a message may go through.
    Hops: 1 ..= 1000, "a message that went through more pipelines than this is in a loop";
    /// Write attempts, deliveries of one entry.
    Attempts: 1 ..= 1_000_000, "leave the setting out to retry without a limit";
    /// RabbitMQ's prefetch (a 16-bit number in AMQP).
    Prefetch: 1 ..= 65_535, "AMQP's prefetch count is a 16-bit number";
    /// librdkafka's `queued.max.messages.kbytes`.
    PrefetchKbytes: 1 ..= 2_097_151, "librdkafka's queued.max.messages.kbytes accepts 1 to 2097151";
    /// Changed keys the keyspace source remembers.
    PendingKeys: 1 ..= 10_000_000, "every pending key is held in memory";
    /// Stream or queue length caps (`maxlen`, `max_length`).
    Length: 1 ..= 1_000_000_000_000, "the server keeps this many messages";
    /// Messages per second (`generate`).
    Rate: 1 ..= 10_000_000, "a rate in messages per second";
    /// Kafka partitions of a created topic.
    Partitions: 1 ..= 10_000, "Kafka topics have at most a few thousand partitions";
    /// Kafka replicas of a created topic.
    Replicas: 1 ..= 100, "one replica per broker at most";
    /// Waits for a reply (Redis commands).
    Timeout: 1 ..= HOUR, "a timeout of 0 would fail every command";
    /// How long a blocking read waits before it looks again.
    Block: 1 ..= 10 * MINUTE, "a blocking read also delays a stop and a reconnect by up to this long";
    /// Delays between retries.
    RetryDelay: 1 ..= DAY, "retries are delayed by this much at most";
    /// Idle time before another consumer's pending entry is claimed.
    ClaimIdle: 1 ..= 30 * DAY, "entries pending longer than this are taken over";
    /// How often a Kafka source commits.
    CommitInterval: 1 ..= HOUR, "what was written but not committed is written again after a crash";
    /// librdkafka's `linger.ms` (0 to 900000).
    Linger: 0 ..= 900_000, "librdkafka's linger.ms accepts 0 to 900000 (15m)";
    /// Redis key expiry (`ttl`); 0 would delete the key as it is written.
    KeyTtl: 1 ..= 3650 * DAY, "leave `ttl` out for keys that do not expire";
    /// RabbitMQ's `x-message-ttl`, a 32-bit number of milliseconds.
    MessageTtl: 0 ..= 4_294_967_295, "RabbitMQ's x-message-ttl is a 32-bit number of milliseconds";
    /// jq evaluation steps per message.
    JqBudget: 1 ..= 1_000_000_000, "a message that needs more steps is dead-lettered; a loop that never ends spends any budget";
    /// Durations given on the command line.
    Wait: 0 ..= DAY, "a day at most";
}

/// A duration written as `"500ms"`, `"5s"`, `"2m"`, `"1h"` or `"30d"`,
/// within the range `L` allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span<L>(pub Duration, PhantomData<L>);

impl<L: Limit> Span<L> {
    /// A duration from the code (a default), not from the user.
    pub const fn new(d: Duration) -> Self {
        Self(d, PhantomData)
    }

    pub fn parse(s: &str) -> Result<Self, Refusal> {
        let d = parse_duration(s).map_err(Refusal::from)?;
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        within::<L>(ms, || s.trim().to_owned(), &show_ms).map(|_| Self::new(d))
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad_duration(s))?;
    let scale = match unit.trim() {
        "ms" => 1,
        "s" => SECOND,
        "m" => MINUTE,
        "h" => HOUR,
        "d" => DAY,
        _ => return Err(bad_duration(s)),
    };
    n.checked_mul(scale)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration \"{s}\" is too long"))
}

fn bad_duration(s: &str) -> String {
    format!(
        "invalid duration \"{s}\": write a whole number and a unit, e.g. \"500ms\", \"5s\", \"2m\", \"1h\""
    )
}

/// Milliseconds as the largest unit that writes them whole (`90s`, `2m`).
fn show_ms(ms: u64) -> String {
    for (unit, scale) in [("d", DAY), ("h", HOUR), ("m", MINUTE), ("s", SECOND)] {
        if ms != 0 && ms.is_multiple_of(scale) {
            return format!("{}{unit}", ms / scale);
        }
    }
    format!("{ms}ms")
}

/// `Ok` when `n` is in `L`'s range; otherwise the refusal names the range
/// and `L`'s reason.
fn within<L: Limit>(
    n: u64,
    written: impl Fn() -> String,
    show: &dyn Fn(u64) -> String,
) -> Result<u64, Refusal> {
    if (L::MIN..=L::MAX).contains(&n) {
        return Ok(n);
    }
    Err(out_of_range::<L>(n < L::MIN, written, show))
}

/// The refusal of a value below (`below`) or above `L`'s range.
fn out_of_range<L: Limit>(
    below: bool,
    written: impl Fn() -> String,
    show: &dyn Fn(u64) -> String,
) -> Refusal {
    let message = if below {
        format!("must be at least {}, not {}", show(L::MIN), written())
    } else {
        format!("must be at most {}, not {}", show(L::MAX), written())
    };
    Refusal {
        message,
        help: Some(format!(
            "write {} to {}: {}",
            show(L::MIN),
            show(L::MAX),
            L::WHY
        )),
    }
}

impl<'de, L: Limit> Deserialize<'de> for Span<L> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(
            d,
            |s: String| Span::parse(&s),
            |_| Some(Span::new(Duration::from_millis(L::MIN))),
        )
    }
}

impl<L> fmt::Display for Span<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Why a value was refused, and what to write instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    pub help: Option<String>,
}

impl From<String> for Refusal {
    fn from(message: String) -> Self {
        Self {
            message,
            help: None,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(help) = &self.help {
            write!(f, " ({help})")?;
        }
        Ok(())
    }
}

thread_local! {
    /// Problems with single values, while [`collecting`] runs.
    static REFUSED: RefCell<Option<Vec<Problem>>> = const { RefCell::new(None) };
}

/// Runs `parse` and returns, beside its result, every value that was
/// refused meanwhile. A refused value does not end the parse (it is
/// replaced by a stand-in), so one bad duration or jq expression does not
/// hide the problems after it.
pub fn collecting<T>(parse: impl FnOnce() -> T) -> (T, Vec<Problem>) {
    let outer = REFUSED.with(|r| r.borrow_mut().replace(Vec::new()));
    let result = parse();
    let refused = REFUSED.with(|r| std::mem::replace(&mut *r.borrow_mut(), outer));
    (result, refused.unwrap_or_default())
}

/// Deserializes a value that checks itself: `check` turns what was written
/// (`R`) into the value. Inside [`collecting`], a refusal is recorded with
/// the value's span and `stand_in` (given what was written) takes its
/// place (the config is refused as a whole, so a stand-in never runs);
/// elsewhere it is the error.
pub fn checked<'de, D, R, T>(
    d: D,
    check: impl FnOnce(R) -> Result<T, Refusal>,
    stand_in: impl FnOnce(R) -> Option<T>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    R: Deserialize<'de> + Clone,
{
    let written = toml::Spanned::<R>::deserialize(d)?;
    let span = written.span();
    let written = written.into_inner();
    match check(written.clone()) {
        Ok(v) => Ok(v),
        Err(refusal) => REFUSED.with(|r| match (r.borrow_mut().as_mut(), stand_in(written)) {
            (Some(refused), Some(v)) => {
                refused.push(Problem::at_span(span, refusal.message, refusal.help));
                Ok(v)
            }
            _ => Err(de::Error::custom(refusal)),
        }),
    }
}

/// A string that is not empty (after trimming).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NonEmpty(String);

impl NonEmpty {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for NonEmpty {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(
            d,
            |s: String| {
                if s.trim().is_empty() {
                    Err(Refusal::from("must not be empty".to_owned()))
                } else {
                    Ok(Self(s))
                }
            },
            |s| Some(Self(s)),
        )
    }
}

impl fmt::Display for NonEmpty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Kafka topic name: 1 to 249 characters from `a-z A-Z 0-9 . _ -`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(String);

impl TopicName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 249
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "invalid topic name \"{s}\": use 1 to 249 characters from a-z, A-Z, 0-9, '.', '_' and '-'"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for TopicName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(
            d,
            |s: String| TopicName::parse(&s).map_err(Refusal::from),
            |s| Some(Self(s)),
        )
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A positive count (batch sizes, buffer sizes) within the range `L`
/// allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Count<L>(NonZeroUsize, PhantomData<L>);

impl<L: Limit> Count<L> {
    /// A count from the code (a default), not from the user.
    pub const fn new(n: usize) -> Self {
        match NonZeroUsize::new(n) {
            Some(n) => Self(n, PhantomData),
            None => panic!("Count::new(0)"),
        }
    }

    pub fn parse(n: i64) -> Result<Self, Refusal> {
        let show = |n: u64| n.to_string();
        // A negative count is below every range.
        let n = u64::try_from(n).map_err(|_| out_of_range::<L>(true, || n.to_string(), &show))?;
        let n = within::<L>(n, || n.to_string(), &show)?;
        usize::try_from(n)
            .ok()
            .and_then(NonZeroUsize::new)
            .map(|n| Self(n, PhantomData))
            .ok_or_else(|| Refusal::from(format!("{n} is too large for this machine")))
    }
}

impl<L> Count<L> {
    pub fn get(self) -> usize {
        self.0.get()
    }
}

impl<'de, L: Limit> Deserialize<'de> for Count<L> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(d, Count::parse, |_| Some(Count::new(1)))
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(
            d,
            |s: String| Template::parse(&s).map_err(|e| Refusal::from(e.to_string())),
            |_| Template::parse("-").ok(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(
            Span::<Wait>::parse("500ms").unwrap().0,
            Duration::from_millis(500)
        );
        assert_eq!(
            Span::<Wait>::parse("2m").unwrap().0,
            Duration::from_secs(120)
        );
        assert_eq!(
            Span::<ClaimIdle>::parse("30d").unwrap().0,
            Duration::from_secs(30 * 86_400)
        );
        assert!(
            Span::<Wait>::parse("5")
                .unwrap_err()
                .message
                .contains("e.g. \"500ms\"")
        );
        assert!(Span::<Wait>::parse("5 days").is_err());
        assert!(Span::<Wait>::parse("-1s").is_err());
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(TopicName::parse("orders.v1_eu-2").is_ok());
        assert!(TopicName::parse("").is_err());
        assert!(TopicName::parse("orders!").is_err());
        assert!(TopicName::parse(&"a".repeat(250)).is_err());
    }
}

/// When a source that could go on forever ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Until {
    /// Never: a daemon.
    #[default]
    Forever,
    /// Once everything that was there when ferry started has been read: a
    /// one-off copy.
    End,
}
