//! jq expressions (the `jaq` implementation), compiled when the config is
//! checked and run per message.
//!
//! The input `.` is the payload parsed as JSON (`null` for a tombstone).
//! Four variables describe the rest of the message: `$key` (string or
//! null), `$headers` (object of name -> string), `$timestamp` (epoch ms or
//! null) and `$origin` (object of the source's coordinates, e.g.
//! `{"topic": "orders", "partition": "2", "offset": "17"}`).

use std::fmt;
use std::sync::Arc;

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data};
use jaq_json::{Map, Val};
use serde::{Deserialize, Deserializer};

use crate::config::values::{Refusal, checked};
use crate::message::{Coordinate, Message};

type Data = data::JustLut<Val>;
type Program = jaq_core::Filter<Data>;

/// The variables every expression can use.
pub const VARIABLES: [&str; 4] = ["$key", "$headers", "$timestamp", "$origin"];

/// Most outputs one expression may give for one message (a runaway
/// `repeat` or `range` must not exhaust memory).
const MAX_OUTPUTS: usize = 10_000;

/// A compiled jq expression.
#[derive(Clone)]
pub struct Jq {
    source: String,
    program: Arc<Program>,
}

/// A jq expression that does not compile.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("jq: {message} at character {position} of `{expression}`")]
pub struct JqError {
    pub expression: String,
    /// 1-based character position in the expression.
    pub position: usize,
    pub message: String,
}

impl Jq {
    pub fn compile(source: &str) -> Result<Self, JqError> {
        let err = |at: &str, message: String| JqError {
            expression: source.to_owned(),
            position: offset(source, at) + 1,
            message,
        };
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs());
        let arena = Arena::default();
        let loader = Loader::new(defs);
        let unknown = || err(source, "cannot be compiled".into());
        let modules = loader
            .load(
                &arena,
                File {
                    code: source,
                    path: (),
                },
            )
            .map_err(|errors| {
                let Some((_, e)) = errors.into_iter().next() else {
                    return unknown();
                };
                let first = match e {
                    jaq_core::load::Error::Lex(es) => es
                        .into_iter()
                        .next()
                        .map(|(expect, at)| err(at, format!("expected {}", expect.as_str()))),
                    jaq_core::load::Error::Parse(es) => {
                        es.into_iter().next().map(|(expect, at)| {
                            let found = if at.is_empty() {
                                "the end".to_owned()
                            } else {
                                format!("`{at}`")
                            };
                            err(at, format!("expected {}, found {found}", expect.as_str()))
                        })
                    }
                    jaq_core::load::Error::Io(es) => {
                        es.into_iter().next().map(|(at, msg)| err(at, msg))
                    }
                };
                first.unwrap_or_else(unknown)
            })?;
        let program = Compiler::default()
            .with_funs(funs)
            .with_global_vars(VARIABLES)
            .compile(modules)
            .map_err(|errors| {
                let first = errors
                    .into_iter()
                    .next()
                    .and_then(|(_, es)| es.into_iter().next());
                let Some((at, undefined)) = first else {
                    return unknown();
                };
                let what = match undefined {
                    jaq_core::compile::Undefined::Var => {
                        format!("unknown variable `{at}` (known: {})", VARIABLES.join(", "))
                    }
                    jaq_core::compile::Undefined::Filter(arity) => {
                        format!("unknown function `{at}/{arity}`")
                    }
                    other => format!("undefined {other:?} `{at}`"),
                };
                err(at, what)
            })?;
        Ok(Self {
            source: source.to_owned(),
            program: Arc::new(program),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Every output of the expression for `input`, or the first error.
    pub fn run(&self, input: Val, vars: &Variables) -> Result<Vec<Val>, String> {
        let ctx = Ctx::<Data>::new(&self.program.lut, Vars::new(vars.0.iter().cloned()));
        let mut out = Vec::new();
        for v in self.program.id.run((ctx, input)) {
            match jaq_core::unwrap_valr(v) {
                Ok(v) => out.push(v),
                Err(e) => return Err(format!("`{}` failed: {e}", self.source)),
            }
            if out.len() > MAX_OUTPUTS {
                return Err(format!(
                    "`{}` gave more than {MAX_OUTPUTS} outputs",
                    self.source
                ));
            }
        }
        Ok(out)
    }
}

/// Byte offset of `part` inside `whole` (the lexer hands out sub-slices),
/// as a character count.
fn offset(whole: &str, part: &str) -> usize {
    let start = whole.as_ptr() as usize;
    let at = part.as_ptr() as usize;
    if at < start || at > start + whole.len() {
        return 0;
    }
    whole[..at - start].chars().count()
}

impl fmt::Debug for Jq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Jq({:?})", self.source)
    }
}

impl PartialEq for Jq {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl<'de> Deserialize<'de> for Jq {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(
            d,
            |s: String| Jq::compile(&s).map_err(|e| Refusal::from(e.to_string())),
            |_| Jq::compile(".").ok(),
        )
    }
}

/// Values of `$key`, `$headers`, `$timestamp` and `$origin` for one message.
pub struct Variables([Val; 4]);

impl Variables {
    pub fn of(message: &Message) -> Self {
        let text = |b: &[u8]| Val::utf8_str(b.to_vec());
        let key = message.key.as_deref().map_or(Val::Null, text);
        let mut headers = Map::default();
        for (name, value) in message.headers.iter() {
            headers.insert(Val::utf8_str(name.as_bytes().to_vec()), text(value));
        }
        let timestamp = message
            .timestamp
            .map_or(Val::Null, |t| Val::from(t as isize));
        let mut origin = Map::default();
        for c in Coordinate::ALL {
            if let Some(v) = message.origin.coordinate(c) {
                origin.insert(Val::utf8_str(c.name().as_bytes().to_vec()), Val::from(v));
            }
        }
        Self([key, Val::obj(headers), timestamp, Val::obj(origin)])
    }
}

/// The payload as a jq value: JSON, or `null` for a tombstone.
pub fn payload_value(message: &Message) -> Result<Val, String> {
    match &message.payload {
        None => Ok(Val::Null),
        Some(p) => serde_json::from_slice::<Val>(p)
            .map_err(|e| format!("the payload is not valid JSON: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Headers, Origin};

    fn msg() -> Message {
        Message {
            key: Some("k-1".into()),
            headers: [("type", "payment")].into_iter().collect::<Headers>(),
            origin: Origin::Kafka {
                topic: "shop".into(),
                partition: 0,
                offset: 9,
            },
            timestamp: Some(1_700_000_000_000),
            ..Message::from_payload(r#"{"order_id": 7, "items": [{"sku": "a"}, {"sku": "b"}]}"#)
        }
    }

    fn run(expr: &str) -> Vec<String> {
        let m = msg();
        Jq::compile(expr)
            .unwrap()
            .run(payload_value(&m).unwrap(), &Variables::of(&m))
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn runs_on_the_payload_with_message_variables() {
        assert_eq!(run(".order_id"), ["7"]);
        assert_eq!(run(".items[].sku"), [r#""a""#, r#""b""#]);
        assert_eq!(run("$key"), [r#""k-1""#]);
        assert_eq!(run("$headers.type == \"payment\""), ["true"]);
        assert_eq!(
            run("$origin.topic + \"/\" + $origin.offset"),
            [r#""shop/9""#]
        );
        assert_eq!(run("$timestamp"), ["1700000000000"]);
        assert_eq!(
            run("{id: .order_id, n: (.items | length)}"),
            [r#"{"id":7,"n":2}"#]
        );
        assert_eq!(run("empty"), Vec::<String>::new());
    }

    #[test]
    fn compile_errors_name_the_position() {
        let e = Jq::compile(".a |").unwrap_err();
        assert!(e.message.contains("expected term"), "{e}");
        assert_eq!(e.position, 5, "{e}");
        let e = Jq::compile(".a | nosuchfn").unwrap_err();
        assert!(e.message.contains("unknown function `nosuchfn/0`"), "{e}");
        assert_eq!(e.position, 6, "{e}");
        let e = Jq::compile("$nope").unwrap_err();
        assert!(e.message.contains("unknown variable `$nope`"), "{e}");
        assert!(e.to_string().contains("`$nope`"), "{e}");
    }

    #[test]
    fn runtime_errors_are_reported_not_panicked() {
        let m = Message::from_payload("\"text\"");
        let e = Jq::compile(".a")
            .unwrap()
            .run(payload_value(&m).unwrap(), &Variables::of(&m))
            .unwrap_err();
        assert!(e.contains("`.a` failed"), "{e}");
        let e = Jq::compile("repeat(1)")
            .unwrap()
            .run(Val::Null, &Variables::of(&m))
            .unwrap_err();
        assert!(e.contains("more than"), "{e}");
        assert!(payload_value(&Message::from_payload("nope")).is_err());
        assert_eq!(
            payload_value(&Message::default()).unwrap().to_string(),
            "null"
        );
    }
}
