//! Steps: what a pipeline does to messages between source and sinks.
//!
//! ```toml
//! [[pipeline.step]]
//! filter = '.type == "payment"'             # keep when true
//! [[pipeline.step]]
//! map = '{order_id, total: .amount}'        # new payload (each output a message)
//! [[pipeline.step]]
//! key = '.order_id'                          # new key
//! [[pipeline.step]]
//! headers = '{source: "web"}'               # add or replace headers (null removes)
//! ```
//!
//! Each step is one jq expression (see [`jq`]); steps run in order. A
//! `map` with several outputs (`.items[]`) turns one message into several;
//! they share the source message's acknowledgement. A message a step cannot
//! handle (payload not JSON, the expression fails) goes to the dead-letter
//! sink with the reason.

pub mod jq;

use bytes::Bytes;
use jaq_json::Val;
use serde::Deserialize;

use crate::error::MessageError;
use crate::message::Message;
use crate::problem::{ConfigPath, Problem};
pub use jq::{Budget, Jq};
use jq::{Failure, Variables, payload_value};

/// `[[pipeline.step]]` as written: exactly one of the fields.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// Keep the message when the expression's first output is neither
    /// `false` nor `null` (no output drops it too).
    pub filter: Option<Jq>,
    /// Replace the payload with each output, as JSON (`null` = tombstone).
    pub map: Option<Jq>,
    /// Replace the key with the first output (a string or number; `null`
    /// removes the key).
    pub key: Option<Jq>,
    /// Merge the first output, an object, into the headers (`null` values
    /// remove a header).
    pub headers: Option<Jq>,
}

/// A checked step.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    Filter(Jq),
    Map(Jq),
    Key(Jq),
    Headers(Jq),
}

impl StepConfig {
    /// The step, or a problem when not exactly one field is set.
    pub fn step(&self, path: &ConfigPath, problems: &mut Vec<Problem>) -> Option<Step> {
        let set: Vec<Step> = [
            self.filter.clone().map(Step::Filter),
            self.map.clone().map(Step::Map),
            self.key.clone().map(Step::Key),
            self.headers.clone().map(Step::Headers),
        ]
        .into_iter()
        .flatten()
        .collect();
        if set.len() == 1 {
            return set.into_iter().next();
        }
        problems.push(
            Problem::at_path(
                path.clone(),
                if set.is_empty() {
                    "an empty step"
                } else {
                    "a step does one thing"
                },
            )
            .with_help(
                "write exactly one of `filter`, `map`, `key` or `headers` per [[pipeline.step]]",
            ),
        );
        None
    }
}

impl Step {
    pub fn name(&self) -> &'static str {
        match self {
            Step::Filter(_) => "filter",
            Step::Map(_) => "map",
            Step::Key(_) => "key",
            Step::Headers(_) => "headers",
        }
    }
}

/// A message and its payload as a jq value, parsed once for all steps.
struct Item {
    message: Message,
    value: Option<Val>,
}

impl Item {
    fn value(&mut self) -> Result<Val, MessageError> {
        if self.value.is_none() {
            self.value = Some(payload_value(&self.message).map_err(MessageError::Unsupported)?);
        }
        Ok(self.value.clone().unwrap_or_default())
    }
}

/// Why steps gave no result for a message.
#[derive(Debug)]
pub enum StepError {
    /// The message cannot be handled (it is dead-lettered with the reason).
    Message(MessageError),
    /// ferry is stopping; the message is left for the next run.
    Interrupted,
}

impl From<MessageError> for StepError {
    fn from(e: MessageError) -> Self {
        Self::Message(e)
    }
}

impl StepError {
    /// A jq failure, with `what` (the step or route) named.
    pub fn from_jq(what: &str, failure: Failure) -> Self {
        match failure {
            Failure::Error(e) => Self::Message(MessageError::Unsupported(format!("{what}: {e}"))),
            Failure::Interrupted => Self::Interrupted,
        }
    }
}

/// Runs `steps` over `message`: zero (filtered out), one or several
/// messages come out. Every expression spends from the message's `budget`.
pub fn apply(steps: &[Step], message: Message, budget: &Budget) -> Result<Vec<Message>, StepError> {
    let mut items = vec![Item {
        message,
        value: None,
    }];
    for step in steps {
        let mut next = Vec::with_capacity(items.len());
        for mut item in items {
            let vars = Variables::of(&item.message);
            let input = item.value()?;
            let what = format!("{} step", step.name());
            let jq_failed = |f: Failure| StepError::from_jq(&what, f);
            let fail = |e: String| MessageError::Unsupported(format!("{what}: {e}"));
            match step {
                Step::Filter(jq) => {
                    let out = jq.run(input, &vars, budget).map_err(jq_failed)?;
                    if out.first().is_some_and(truthy) {
                        next.push(item);
                    }
                }
                Step::Map(jq) => {
                    for v in jq.run(input, &vars, budget).map_err(jq_failed)? {
                        let mut message = item.message.clone();
                        message.payload = match &v {
                            Val::Null => None,
                            v => Some(Bytes::from(v.to_string())),
                        };
                        next.push(Item {
                            message,
                            value: Some(v),
                        });
                    }
                }
                Step::Key(jq) => {
                    let out = jq.run(input, &vars, budget).map_err(jq_failed)?;
                    item.message.key = match out.first() {
                        None | Some(Val::Null) => None,
                        Some(v) => Some(scalar(v).ok_or_else(|| {
                            fail(format!("a key must be a string or number, not {v}"))
                        })?),
                    };
                    next.push(item);
                }
                Step::Headers(jq) => {
                    let out = jq.run(input, &vars, budget).map_err(jq_failed)?;
                    match out.first() {
                        Some(Val::Obj(fields)) => {
                            for (name, value) in fields.iter() {
                                let name = scalar(name)
                                    .map(|n| String::from_utf8_lossy(&n).into_owned())
                                    .ok_or_else(|| {
                                        fail(format!("a header name must be a string, not {name}"))
                                    })?;
                                match value {
                                    Val::Null => item.message.headers.remove(&name),
                                    v => item.message.headers.set(&name, Bytes::from(text(v))),
                                }
                            }
                        }
                        None | Some(Val::Null) => {}
                        Some(other) => {
                            return Err(
                                fail(format!("headers must be an object, not {other}")).into()
                            );
                        }
                    }
                    next.push(item);
                }
            }
        }
        items = next;
    }
    Ok(items.into_iter().map(|i| i.message).collect())
}

/// jq truthiness: everything but `false` and `null`.
pub fn truthy(v: &Val) -> bool {
    !matches!(v, Val::Null | Val::Bool(false))
}

/// A string's bytes, or a number's digits.
fn scalar(v: &Val) -> Option<Bytes> {
    match v {
        Val::TStr(b) | Val::BStr(b) => Some(Bytes::copy_from_slice(b)),
        Val::Num(_) | Val::Bool(_) => Some(Bytes::from(v.to_string())),
        _ => None,
    }
}

/// Text of a header value: strings as they are, anything else as JSON.
fn text(v: &Val) -> Vec<u8> {
    scalar(v).map_or_else(|| v.to_string().into_bytes(), |b| b.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Headers;

    fn steps(toml_steps: &str) -> Vec<Step> {
        #[derive(Deserialize)]
        struct W {
            step: Vec<StepConfig>,
        }
        let w: W = toml::from_str(toml_steps).unwrap();
        let mut problems = Vec::new();
        let s = w
            .step
            .iter()
            .filter_map(|c| c.step(&ConfigPath::root(), &mut problems))
            .collect();
        assert!(problems.is_empty(), "{problems:?}");
        s
    }

    fn apply_(s: &[Step], m: Message) -> Result<Vec<Message>, MessageError> {
        match apply(s, m, &Budget::new(1_000_000, &|| false)) {
            Ok(out) => Ok(out),
            Err(StepError::Message(e)) => Err(e),
            Err(StepError::Interrupted) => panic!("nothing stops these tests"),
        }
    }

    fn payloads(out: &[Message]) -> Vec<String> {
        out.iter()
            .map(|m| {
                m.payload.as_deref().map_or("<tombstone>".into(), |p| {
                    String::from_utf8_lossy(p).into_owned()
                })
            })
            .collect()
    }

    #[test]
    fn filter_keeps_only_matching_messages() {
        let s = steps("[[step]]\nfilter = '.type == \"payment\"'");
        assert_eq!(
            apply_(&s, Message::from_payload(r#"{"type":"payment"}"#))
                .unwrap()
                .len(),
            1
        );
        assert!(
            apply_(&s, Message::from_payload(r#"{"type":"weblog"}"#))
                .unwrap()
                .is_empty()
        );
        let s = steps("[[step]]\nfilter = 'empty'");
        assert!(apply_(&s, Message::from_payload("{}")).unwrap().is_empty());
    }

    #[test]
    fn map_reshapes_and_can_split_one_message_into_several() {
        let s = steps("[[step]]\nmap = '.items[] | {sku, order: $key}'");
        let m = Message {
            key: Some("o-1".into()),
            ..Message::from_payload(r#"{"items":[{"sku":"a","q":1},{"sku":"b","q":2}]}"#)
        };
        let out = apply_(&s, m).unwrap();
        assert_eq!(
            payloads(&out),
            [
                r#"{"sku":"a","order":"o-1"}"#,
                r#"{"sku":"b","order":"o-1"}"#
            ]
        );
        let s = steps("[[step]]\nmap = 'null'");
        assert_eq!(
            payloads(&apply_(&s, Message::from_payload("{}")).unwrap()),
            ["<tombstone>"]
        );
    }

    #[test]
    fn key_and_headers_are_computed_and_later_steps_see_them() {
        let s = steps(
            "[[step]]\nkey = '.order_id'\n[[step]]\nheaders = '{kind: .type, drop: null, n: 3}'\n[[step]]\nfilter = '$key == \"7\" and $headers.kind == \"payment\"'",
        );
        let m = Message {
            headers: [("drop", "x")].into_iter().collect::<Headers>(),
            ..Message::from_payload(r#"{"order_id":7,"type":"payment"}"#)
        };
        let out = apply_(&s, m).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key.as_deref(), Some(&b"7"[..]));
        assert_eq!(out[0].headers.get("kind").unwrap().as_ref(), b"payment");
        assert_eq!(out[0].headers.get("n").unwrap().as_ref(), b"3");
        assert!(out[0].headers.get("drop").is_none());
    }

    #[test]
    fn a_message_a_step_cannot_handle_is_an_error_with_the_reason() {
        let s = steps("[[step]]\nfilter = '.a.b'");
        let e = apply_(&s, Message::from_payload("not json")).unwrap_err();
        assert!(e.to_string().contains("not valid JSON"), "{e}");
        let e = apply_(&s, Message::from_payload(r#"{"a":"text"}"#)).unwrap_err();
        assert!(e.to_string().contains("filter step"), "{e}");
        let s = steps("[[step]]\nkey = '.obj'");
        let e = apply_(&s, Message::from_payload(r#"{"obj":{}}"#)).unwrap_err();
        assert!(e.to_string().contains("string or number"), "{e}");
    }

    #[test]
    fn a_step_must_do_exactly_one_thing() {
        let c: StepConfig = toml::from_str("filter = 'true'\nmap = '.'").unwrap();
        let mut problems = Vec::new();
        assert!(c.step(&ConfigPath::root(), &mut problems).is_none());
        assert!(problems[0].help.as_deref().unwrap().contains("exactly one"));
    }
}
