//! Small config value types that check themselves while being parsed, so
//! that a bad value is reported with its line and can never reach the code
//! that uses it.

use std::fmt;
use std::num::NonZeroUsize;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

use crate::template::Template;

/// A duration written as `"500ms"`, `"5s"`, `"2m"`, `"1h"` or `"30d"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span(pub Duration);

impl Span {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits.parse().map_err(|_| bad_duration(s))?;
        let d = match unit.trim() {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            "d" => Duration::from_secs(n * 86_400),
            _ => return Err(bad_duration(s)),
        };
        Ok(Self(d))
    }
}

fn bad_duration(s: &str) -> String {
    format!(
        "invalid duration \"{s}\": write a whole number and a unit, e.g. \"500ms\", \"5s\", \"2m\", \"1h\""
    )
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Span::parse(&s).map_err(de::Error::custom)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
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
        let s = String::deserialize(d)?;
        if s.trim().is_empty() {
            return Err(de::Error::custom("must not be empty"));
        }
        Ok(Self(s))
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
        let s = String::deserialize(d)?;
        TopicName::parse(&s).map_err(de::Error::custom)
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A positive count (batch sizes, buffer sizes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Count(pub NonZeroUsize);

impl Count {
    pub const fn new(n: usize) -> Self {
        match NonZeroUsize::new(n) {
            Some(n) => Self(n),
            None => panic!("Count::new(0)"),
        }
    }

    pub fn get(self) -> usize {
        self.0.get()
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        usize::try_from(n)
            .ok()
            .and_then(NonZeroUsize::new)
            .map(Count)
            .ok_or_else(|| {
                de::Error::custom(format!("must be a whole number of at least 1, not {n}"))
            })
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Template::parse(&s).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(Span::parse("500ms").unwrap().0, Duration::from_millis(500));
        assert_eq!(Span::parse("2m").unwrap().0, Duration::from_secs(120));
        assert_eq!(
            Span::parse("30d").unwrap().0,
            Duration::from_secs(30 * 86_400)
        );
        assert!(Span::parse("5").unwrap_err().contains("e.g. \"500ms\""));
        assert!(Span::parse("5 days").is_err());
        assert!(Span::parse("-1s").is_err());
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
