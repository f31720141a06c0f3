//! Key templates such as `order:{order_id}`.
//!
//! A template is literal text with placeholders in braces, parsed once when
//! the config is checked and rendered for every message:
//!
//! | placeholder          | value                                            |
//! |----------------------|--------------------------------------------------|
//! | `{order_id}`         | field of the JSON payload (`{customer.id}` nests, `{items.0}` indexes) |
//! | `{payload.key}`      | payload field whose name is also a reserved word |
//! | `{key}`              | the message key                                  |
//! | `{header.NAME}`      | a header's value                                 |
//! | `{topic}`, `{partition}`, `{offset}` | Kafka coordinates                |
//! | `{stream}`, `{entry_id}`, `{list}`, `{channel}`, `{keyspace_event}` | Redis coordinates |
//! | `{queue}`, `{exchange}`, `{routing_key}` | AMQP coordinates             |
//! | `{source}`           | topic, stream, list, channel, queue or changed key |
//! | `{timestamp}`        | the message timestamp in epoch milliseconds      |
//!
//! `{{` and `}}` write literal braces. Rendering fails (and the message goes
//! to the dead-letter sink) when the value is missing or is not a string,
//! number or boolean; a key is never silently rendered as `order:null`.

use std::fmt;

use crate::json_field::{self, Found};
use crate::message::{Coordinate, JsonError, Message};

/// A parsed template.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq)]
enum Part {
    Literal(String),
    Key,
    Timestamp,
    Coordinate(Coordinate),
    Header(String),
    Field(Vec<String>),
}

/// A template that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at character {position} of `{template}`)")]
pub struct TemplateError {
    pub template: String,
    /// 1-based character position.
    pub position: usize,
    pub message: String,
}

/// Why a template could not be rendered for one message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("template `{template}` needs {{{placeholder}}} but {reason}")]
    Missing {
        template: String,
        placeholder: String,
        reason: String,
    },
}

impl Template {
    /// The literal text that every rendering starts with (`{{orders}}:` for
    /// `{{orders}}:{id}`): a Redis Cluster hash tag written there puts every
    /// key the template renders in one slot.
    pub fn literal_prefix(&self) -> &str {
        match self.parts.first() {
            Some(Part::Literal(s)) => s,
            _ => "",
        }
    }

    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let err = |position: usize, message: &str| TemplateError {
            template: source.to_owned(),
            position: position + 1,
            message: message.to_owned(),
        };
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|&(_, c)| c) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|&(_, c)| c) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => return Err(err(i, "unmatched `}` (write `}}` for a literal brace)")),
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '}')) => break,
                            Some((j, '{')) => {
                                return Err(err(j, "`{` inside a placeholder"));
                            }
                            Some((_, c)) => name.push(c),
                            None => {
                                return Err(err(
                                    i,
                                    "unclosed `{` (write `{{` for a literal brace)",
                                ));
                            }
                        }
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(parse_placeholder(&name).map_err(|m| err(i, &m))?);
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Self {
            source: source.to_owned(),
            parts,
        })
    }

    /// The template as written in the config.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The text every message renders to, when the template has no
    /// placeholder.
    pub fn literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Literal(text)] => Some(text),
            _ => None,
        }
    }

    /// Whether rendering reads the payload as JSON.
    pub fn uses_payload(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Field(_)))
    }

    /// Source coordinates the template names, so that config validation can
    /// refuse `{partition}` on a source that has no partitions.
    pub fn coordinates(&self) -> impl Iterator<Item = Coordinate> + '_ {
        self.parts.iter().filter_map(|p| match p {
            Part::Coordinate(c) => Some(*c),
            _ => None,
        })
    }

    pub fn render(&self, msg: &Message) -> Result<Vec<u8>, RenderError> {
        let missing = |placeholder: &str, reason: String| RenderError::Missing {
            template: self.source.clone(),
            placeholder: placeholder.to_owned(),
            reason,
        };
        let mut out = Vec::with_capacity(self.source.len() + 16);
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.extend_from_slice(s.as_bytes()),
                Part::Key => match &msg.key {
                    Some(k) => out.extend_from_slice(k),
                    None => return Err(missing("key", "the message has no key".into())),
                },
                Part::Timestamp => match msg.timestamp {
                    Some(t) => out.extend_from_slice(t.to_string().as_bytes()),
                    None => {
                        return Err(missing("timestamp", "the message has no timestamp".into()));
                    }
                },
                Part::Coordinate(c) => match msg.origin.coordinate(*c) {
                    Some(v) => out.extend_from_slice(v.as_bytes()),
                    None => {
                        let reason = format!("a message from {} has none", msg.origin);
                        return Err(missing(c.name(), reason));
                    }
                },
                Part::Header(name) => match msg.headers.get(name) {
                    Some(v) => out.extend_from_slice(v),
                    None => {
                        let reason = format!("the message has no header `{name}`");
                        return Err(missing(&format!("header.{name}"), reason));
                    }
                },
                Part::Field(path) => {
                    let shown = path.join(".");
                    let found = field_of(msg, path).map_err(|e| missing(&shown, e.to_string()))?;
                    match found {
                        Found::String(s) => out.extend_from_slice(s.as_bytes()),
                        Found::Number(n) => out.extend_from_slice(n.as_bytes()),
                        Found::Bool(b) => out.extend_from_slice(b.to_string().as_bytes()),
                        Found::Missing => {
                            return Err(missing(&shown, "the payload has no such field".into()));
                        }
                        Found::Other(kind) => {
                            return Err(missing(&shown, format!("the field is {kind}")));
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn parse_placeholder(name: &str) -> Result<Part, String> {
    if name.is_empty() {
        return Err("empty placeholder `{}`".into());
    }
    if name.trim() != name {
        return Err(format!(
            "placeholder `{{{name}}}` has spaces around its name"
        ));
    }
    Ok(match name {
        "key" => Part::Key,
        "timestamp" => Part::Timestamp,
        "payload" => {
            return Err("`{payload}` needs a field: write `{payload.FIELD}` or `{FIELD}`".into());
        }
        "header" => return Err("`{header}` needs a name: write `{header.NAME}`".into()),
        _ => {
            if let Some(c) = Coordinate::from_name(name) {
                Part::Coordinate(c)
            } else if let Some(header) = name.strip_prefix("header.") {
                if header.is_empty() {
                    return Err("`{header.}` needs a name".into());
                }
                Part::Header(header.to_owned())
            } else {
                let path = name.strip_prefix("payload.").unwrap_or(name);
                let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
                if segments.iter().any(String::is_empty) {
                    return Err(format!("field path `{name}` has an empty segment"));
                }
                Part::Field(segments)
            }
        }
    })
}

/// The payload's field at `path`: from the parsed JSON when a step parsed
/// it already, else read from the payload without parsing it whole.
fn field_of(msg: &Message, path: &[String]) -> Result<Found, JsonError> {
    if let Some(json) = msg.parsed_json() {
        let json = json?;
        return Ok(match lookup(&json, path) {
            None => Found::Missing,
            Some(serde_json::Value::String(s)) => Found::String(s.clone()),
            Some(serde_json::Value::Number(n)) => Found::Number(n.to_string()),
            Some(serde_json::Value::Bool(b)) => Found::Bool(*b),
            Some(other) => Found::Other(json_kind(other)),
        });
    }
    let payload = msg.payload.as_ref().ok_or(JsonError::Tombstone)?;
    json_field::field(payload, path).map_err(|e| JsonError::Invalid(e.to_string()))
}

/// Follows a dotted path into a JSON value; numeric segments index arrays.
pub fn lookup<'a>(value: &'a serde_json::Value, path: &[String]) -> Option<&'a serde_json::Value> {
    path.iter().try_fold(value, |v, seg| match v {
        serde_json::Value::Object(map) => map.get(seg),
        serde_json::Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// "an object", "null", ... for error messages.
pub fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Headers, Origin};

    fn msg(payload: &str) -> Message {
        Message {
            key: Some("k1".into()),
            headers: [("trace", "t-9")].into_iter().collect::<Headers>(),
            origin: Origin::Kafka {
                topic: "orders".into(),
                partition: 1,
                offset: 42,
            },
            timestamp: Some(1_700_000_000_000),
            ..Message::from_payload(payload.to_owned())
        }
    }

    fn render(t: &str, payload: &str) -> Result<String, RenderError> {
        Template::parse(t)
            .unwrap()
            .render(&msg(payload))
            .map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn renders_payload_fields_and_metadata() {
        let p = r#"{"order_id": 17, "customer": {"id": "c-3"}, "items": ["a", "b"], "key": "pk", "vip": true}"#;
        assert_eq!(render("order:{order_id}", p).unwrap(), "order:17");
        assert_eq!(render("{customer.id}/{items.1}", p).unwrap(), "c-3/b");
        assert_eq!(
            render("{key}|{payload.key}|{vip}", p).unwrap(),
            "k1|pk|true"
        );
        assert_eq!(
            render("{topic}-{partition}-{offset}", p).unwrap(),
            "orders-1-42"
        );
        assert_eq!(
            render("{header.trace}@{timestamp}", p).unwrap(),
            "t-9@1700000000000"
        );
        assert_eq!(render("{{literal}}", p).unwrap(), "{literal}");
        assert_eq!(render("plain", "not json").unwrap(), "plain");
    }

    #[test]
    fn rendering_fails_with_the_reason_instead_of_writing_a_wrong_key() {
        let err = render("order:{order_id}", "not json").unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
        let err = render("order:{order_id}", r#"{"id": 1}"#).unwrap_err();
        assert!(err.to_string().contains("no such field"), "{err}");
        let err = render("order:{order_id}", r#"{"order_id": null}"#).unwrap_err();
        assert!(err.to_string().contains("null"), "{err}");
        let err = render("order:{order_id}", r#"{"order_id": {"a": 1}}"#).unwrap_err();
        assert!(err.to_string().contains("an object"), "{err}");
        let err = render("{header.missing}", "{}").unwrap_err();
        assert!(err.to_string().contains("no header `missing`"), "{err}");
    }

    #[test]
    fn bad_templates_are_refused_with_a_position() {
        for (t, needle, pos) in [
            ("order:{", "unclosed", 7),
            ("order:}", "unmatched", 7),
            ("a{}", "empty placeholder", 2),
            ("{a.}", "empty segment", 1),
            ("{ id }", "spaces", 1),
            ("{payload}", "needs a field", 1),
            ("{header.}", "needs a name", 1),
            ("{a{b}}", "inside a placeholder", 3),
        ] {
            let e = Template::parse(t).unwrap_err();
            assert!(e.message.contains(needle), "{t}: {e}");
            assert_eq!(e.position, pos, "{t}: {e}");
        }
    }

    #[test]
    fn reports_what_it_needs() {
        let t = Template::parse("{topic}:{order_id}").unwrap();
        assert!(t.uses_payload());
        assert_eq!(t.coordinates().collect::<Vec<_>>(), vec![Coordinate::Topic]);
        assert!(!Template::parse("{key}").unwrap().uses_payload());
    }
}
