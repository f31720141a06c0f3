//! One field of a JSON payload, read without building the whole document:
//! a key template needs one value per message, and parsing every payload
//! into a `serde_json::Value` (a map, a string per key and value) was 15%
//! of the CPU on a Redis route (docs/performance.md). The parser still
//! reads, and checks, the whole payload; it only allocates for the field.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The value found at a path.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    String(String),
    /// As `serde_json::Number` prints it.
    Number(String),
    Bool(bool),
    /// Anything else: what it is ("null", "an object", ...).
    Other(&'static str),
    /// The path leads nowhere.
    Missing,
}

/// The value at `path` (object keys; numeric segments index arrays, as
/// [`crate::template::lookup`] does) in `payload`, or the parse error of
/// an invalid payload. With duplicate keys the last one counts, as in
/// `serde_json::Value`.
pub fn field(payload: &[u8], path: &[String]) -> Result<Found, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(payload);
    let found = Seek { path }.deserialize(&mut de)?;
    de.end()?;
    Ok(found)
}

struct Seek<'p> {
    path: &'p [String],
}

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = Found;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Found, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seek<'_> {
    type Value = Found;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Found, E> {
        Ok(self.leaf(Found::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Found, E> {
        Ok(self.leaf(Found::Number(serde_json::Number::from(v).to_string())))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Found, E> {
        Ok(self.leaf(Found::Number(serde_json::Number::from(v).to_string())))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Found, E> {
        Ok(self.leaf(match serde_json::Number::from_f64(v) {
            Some(n) => Found::Number(n.to_string()),
            None => Found::Other("null"),
        }))
    }

    fn visit_str<E>(self, v: &str) -> Result<Found, E> {
        Ok(self.leaf(Found::String(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Found, E> {
        Ok(self.leaf(Found::String(v)))
    }

    fn visit_unit<E>(self) -> Result<Found, E> {
        Ok(self.leaf(Found::Other("null")))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found, A::Error> {
        let Some((first, rest)) = self.path.split_first() else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(Found::Other("an object"));
        };
        let mut found = Found::Missing;
        while let Some(wanted) = map.next_key_seed(KeyIs(first))? {
            if wanted {
                found = map.next_value_seed(Seek { path: rest })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Found, A::Error> {
        let Some((first, rest)) = self.path.split_first() else {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(Found::Other("an array"));
        };
        let index = first.parse::<usize>().ok();
        let mut found = Found::Missing;
        let mut i = 0;
        loop {
            let more = if Some(i) == index {
                match seq.next_element_seed(Seek { path: rest })? {
                    Some(f) => {
                        found = f;
                        true
                    }
                    None => false,
                }
            } else {
                seq.next_element::<IgnoredAny>()?.is_some()
            };
            if !more {
                return Ok(found);
            }
            i += 1;
        }
    }
}

/// Whether an object's key is `0`, compared where the parser holds it: a
/// `String` per key (what `Cow<str>` deserializes to) was 7% of the CPU
/// of a route with a key template (callgrind, docs/performance.md).
struct KeyIs<'p>(&'p str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

impl Seek<'_> {
    /// A scalar is the answer only at the end of the path.
    fn leaf(&self, found: Found) -> Found {
        if self.path.is_empty() {
            found
        } else {
            Found::Missing
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(payload: &str, path: &str) -> Found {
        let path: Vec<String> = path.split('.').map(str::to_owned).collect();
        field(payload.as_bytes(), &path).unwrap()
    }

    #[test]
    fn finds_what_a_parsed_value_would_hold_at_the_path() {
        let doc = r#"{"order_id": 7, "customer": {"name": "Ada \"L\"", "vip": true},
            "lines": [{"sku": "a"}, {"sku": "b"}], "price": 1.5, "none": null, "big": -3}"#;
        let value: serde_json::Value = serde_json::from_str(doc).unwrap();
        for path in [
            "order_id",
            "customer.name",
            "customer.vip",
            "lines.1.sku",
            "price",
            "big",
        ] {
            let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
            let expected = match crate::template::lookup(&value, &segments).unwrap() {
                serde_json::Value::String(s) => Found::String(s.clone()),
                serde_json::Value::Number(n) => Found::Number(n.to_string()),
                serde_json::Value::Bool(b) => Found::Bool(*b),
                other => Found::Other(crate::template::json_kind(other)),
            };
            assert_eq!(at(doc, path), expected, "{path}");
        }
        assert_eq!(at(doc, "none"), Found::Other("null"));
        assert_eq!(at(doc, "customer"), Found::Other("an object"));
        assert_eq!(at(doc, "lines"), Found::Other("an array"));
        assert_eq!(at(doc, "lines.5.sku"), Found::Missing);
        assert_eq!(at(doc, "order_id.x"), Found::Missing);
        assert_eq!(at(doc, "nope"), Found::Missing);
    }

    #[test]
    fn the_last_of_duplicate_keys_counts_and_invalid_json_is_an_error() {
        assert_eq!(at(r#"{"a": 1, "a": 2}"#, "a"), Found::Number("2".into()));
        // A key written with an escape is the key it spells.
        assert_eq!(at(r#"{"\u0061": 3}"#, "a"), Found::Number("3".into()));
        let path = vec!["a".to_owned()];
        assert!(field(br#"{"a": 1"#, &path).is_err());
        assert!(
            field(br#"{"a": 1} x"#, &path).is_err(),
            "trailing characters"
        );
        assert!(field(b"[1, 2", &path).is_err());
    }
}
