//! Points in time written in a config or on the command line: RFC 3339
//! (`2024-05-01T10:00:00Z`, `2024-05-01T12:00:00.250+02:00`) or
//! milliseconds since the Unix epoch (`1714557600000`). Kafka timestamps
//! and Redis stream ids count milliseconds, so that is what a [`Time`]
//! holds. Pure, no dependency: the calendar arithmetic is the civil-date
//! algorithm (proleptic Gregorian, UTC).

use std::fmt;

use serde::{Deserialize, Deserializer, de};

/// Milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub i64);

impl Time {
    pub fn parse(s: &str) -> Result<Time, String> {
        let s = s.trim();
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return s.parse().map(Time).map_err(|_| bad_time(s));
        }
        parse_rfc3339(s).ok_or_else(|| bad_time(s))
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn now() -> Time {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Time(i64::try_from(ms).unwrap_or(i64::MAX))
    }
}

fn bad_time(s: &str) -> String {
    format!(
        "invalid time \"{s}\": write RFC 3339 (e.g. \"2024-05-01T10:00:00Z\") \
         or milliseconds since the epoch"
    )
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Millis(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Millis(ms) if ms >= 0 => Ok(Time(ms)),
            Raw::Millis(ms) => Err(de::Error::custom(bad_time(&ms.to_string()))),
            Raw::Text(s) => Time::parse(&s).map_err(de::Error::custom),
        }
    }
}

/// RFC 3339 in UTC with milliseconds: `2024-05-01T10:00:00.250Z`.
impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0.div_euclid(86_400_000);
        let ms_of_day = self.0.rem_euclid(86_400_000);
        let (y, m, d) = civil_from_days(days);
        let (h, min, s, ms) = (
            ms_of_day / 3_600_000,
            ms_of_day / 60_000 % 60,
            ms_of_day / 1000 % 60,
            ms_of_day % 1000,
        );
        write!(f, "{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{ms:03}Z")
    }
}

fn parse_rfc3339(s: &str) -> Option<Time> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (h, mi, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60
    {
        return None;
    }
    let mut i = 19;
    let mut ms = 0;
    if b.get(i) == Some(&b'.') {
        let digits = s[i + 1..].bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        // Milliseconds: the first three digits, the rest cut off.
        let frac = &s[i + 1..i + 1 + digits.min(3)];
        ms = frac.parse::<i64>().ok()? * 10_i64.pow(3 - frac.len() as u32);
        i += 1 + digits;
    }
    let offset_minutes = match s.get(i..)? {
        "Z" | "z" => 0,
        zone if zone.len() == 6 && matches!(zone.as_bytes()[0], b'+' | b'-') => {
            if zone.as_bytes()[3] != b':' {
                return None;
            }
            let (oh, om) = (num(i + 1, 2)?, num(i + 4, 2)?);
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            sign * (oh * 60 + om)
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_minutes * 60;
    Some(Time(secs * 1000 + ms))
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_and_epoch_milliseconds_name_the_same_instant() {
        let t = Time::parse("2024-05-01T10:00:00Z").unwrap();
        assert_eq!(t, Time(1_714_557_600_000));
        assert_eq!(Time::parse("1714557600000").unwrap(), t);
        assert_eq!(Time::parse("2024-05-01T12:00:00+02:00").unwrap(), t);
        assert_eq!(
            Time::parse("2024-05-01T10:00:00.25Z").unwrap(),
            Time(1_714_557_600_250)
        );
        assert_eq!(
            Time::parse("2024-05-01T10:00:00.123456Z").unwrap(),
            Time(1_714_557_600_123)
        );
        assert_eq!(Time::parse("1970-01-01T00:00:00Z").unwrap(), Time(0));
    }

    #[test]
    fn bad_times_are_refused_with_an_example() {
        for bad in [
            "",
            "yesterday",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-05-01 10:00",
            "2024-05-01T10:00:00",
            "2024-05-01T10:00:00+0200",
        ] {
            let e = Time::parse(bad).unwrap_err();
            assert!(e.contains("2024-05-01T10:00:00Z"), "{bad}: {e}");
        }
        assert!(Time::parse("2024-02-29T00:00:00Z").is_ok(), "a leap day");
    }

    #[test]
    fn times_print_as_utc_with_milliseconds() {
        assert_eq!(
            Time(1_714_557_600_250).to_string(),
            "2024-05-01T10:00:00.250Z"
        );
        assert_eq!(Time(0).to_string(), "1970-01-01T00:00:00.000Z");
        let t = Time::parse("2000-02-29T23:59:59.999Z").unwrap();
        assert_eq!(t.to_string(), "2000-02-29T23:59:59.999Z");
    }
}
