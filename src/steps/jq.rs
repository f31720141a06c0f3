//! jq expressions (the `jaq` implementation), compiled when the config is
//! checked and run per message.
//!
//! The input `.` is the payload parsed as JSON (`null` for a tombstone).
//! Four variables describe the rest of the message: `$key` (string or
//! null), `$headers` (object of name -> string), `$timestamp` (epoch ms or
//! null) and `$origin` (object of the source's coordinates, e.g.
//! `{"topic": "orders", "partition": "2", "offset": "17"}`).

use std::cell::Cell;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;

use jaq_core::data::{DataT, HasLut};
use jaq_core::load::{Arena, File, Loader};
use jaq_core::native::{Fun, v};
use jaq_core::{Compiler, Ctx, Cv, Exn, Lut, ValXs, Vars};
use jaq_json::{Map, Val};
use serde::{Deserialize, Deserializer};

use crate::message::{Coordinate, Message};
use crate::values::{Refusal, checked};

type Program = jaq_core::Filter<Metered>;

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
        let funs = metered_funs();
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

    /// Every output for `input` within the default budget, for tools that
    /// look at one message at a time outside a pipeline (`tap`,
    /// `reconcile`); their own stop is Ctrl-C, which ends the process.
    pub fn run_alone(&self, input: Val, vars: &Variables) -> Result<Vec<Val>, String> {
        let budget = Budget::new(DEFAULT_BUDGET, &|| false);
        self.run(input, vars, &budget).map_err(|f| match f {
            Failure::Error(e) => e,
            Failure::Interrupted => "interrupted".to_owned(),
        })
    }

    /// Every output of the expression for `input`, or why there is none:
    /// the expression failed, or it ran out of `budget`.
    pub fn run(&self, input: Val, vars: &Variables, budget: &Budget) -> Result<Vec<Val>, Failure> {
        let data = Meter {
            lut: &self.program.lut,
            budget,
        };
        let ctx = Ctx::<Metered>::new(data, Vars::new(vars.0.iter().cloned()));
        budget.start();
        // A spent budget unwinds out of jaq (see `Meter::lut`): catching it
        // here ends the evaluation wherever it was, and unwinding drops
        // everything it had built.
        let outputs = catch_unwind(AssertUnwindSafe(|| {
            let mut out = Vec::new();
            for v in self.program.id.run((ctx, input)) {
                match v.map_err(Exn::get_err) {
                    Ok(v) => out.push(v),
                    Err(Ok(e)) => return Err(format!("`{}` failed: {e}", self.source)),
                    // `halt` and `halt_error` end a jq program; in ferry
                    // they must not end the process.
                    Err(Err(_)) => return Err(format!("`{}` called `halt`", self.source)),
                }
                if out.len() > MAX_OUTPUTS {
                    return Err(format!(
                        "`{}` gave more than {MAX_OUTPUTS} outputs",
                        self.source
                    ));
                }
            }
            Ok(out)
        }));
        match outputs {
            Ok(result) => result.map_err(Failure::Error),
            Err(payload) => match payload.downcast::<Spent>() {
                Ok(spent) => Err(match *spent {
                    Spent::Budget => Failure::Error(format!(
                        "`{}` took more than the {} evaluation steps a message may take \
                         (an endless loop? else raise the pipeline's `jq_budget`)",
                        self.source, budget.limit
                    )),
                    Spent::Stack => Failure::Error(format!(
                        "`{}` recursed deeper than ferry allows (a recursion that never ends?)",
                        self.source
                    )),
                    Spent::Interrupted => Failure::Interrupted,
                }),
                // A panic inside jaq (printed by the panic hook): this
                // message cannot be handled, the next one may.
                Err(_) => Err(Failure::Error(format!(
                    "`{}`: the jq engine failed on this message",
                    self.source
                ))),
            },
        }
    }
}

/// Evaluation steps a message may take unless the pipeline says otherwise
/// (`jq_budget`): about 0.1 s of work in a release build.
pub const DEFAULT_BUDGET: u64 = 1_000_000;

/// Why a jq expression gave no result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The message cannot be handled (it goes to the dead-letter sink).
    Error(String),
    /// ferry is stopping: the message is left for the next run.
    Interrupted,
}

/// Evaluation steps that the jq expressions may take for one message, and
/// the way to interrupt them. jaq looks up every term it evaluates in the
/// program's table ([`HasLut::lut`]); each look-up spends one step, so a
/// loop that never ends (`def f: f; f`, `repeat(.)`, `last(range(1e18))`)
/// spends the budget and stops, within milliseconds.
pub struct Budget<'s> {
    left: Cell<u64>,
    limit: u64,
    /// Where the stack was when the evaluation began: recursion that is
    /// not a tail call (`def f: f + 1; f`) grows the stack faster than it
    /// spends the budget, and a stack overflow would abort ferry.
    stack_base: Cell<usize>,
    /// Polled every [`POLL_EVERY`] steps: true once ferry is stopping.
    stopping: &'s dyn Fn() -> bool,
}

/// How many steps pass between two looks at the stop request.
const POLL_EVERY: u64 = 4096;

/// Stack an evaluation may use: each level of a recursion that is not a
/// tail call takes about 24 KiB in a debug build and a few KiB in a
/// release build. ferry's threads have [`THREAD_STACK`].
pub const MAX_STACK: usize = 4 * 1024 * 1024;

/// Stack of every thread that evaluates jq (`main.rs` builds the runtime
/// with it): room for [`MAX_STACK`], the caller and unwinding.
pub const THREAD_STACK: usize = 16 * 1024 * 1024;

/// The address of a local: how deep the stack is (it grows downwards on
/// every platform ferry builds for).
#[inline(always)]
fn stack_address() -> usize {
    let here = 0u8;
    std::hint::black_box(&here) as *const u8 as usize
}

impl<'s> Budget<'s> {
    pub fn new(limit: u64, stopping: &'s dyn Fn() -> bool) -> Self {
        Self {
            left: Cell::new(limit),
            limit,
            stack_base: Cell::new(0),
            stopping,
        }
    }

    /// Marks the stack depth an evaluation starts at.
    fn start(&self) {
        self.stack_base.set(stack_address());
    }

    /// Spends one step; unwinds out of the evaluation when none is left
    /// or ferry is stopping.
    fn spend(&self) {
        let left = self.left.get();
        if left == 0 {
            resume_unwind(Box::new(Spent::Budget));
        }
        self.left.set(left - 1);
        if self.stack_base.get().saturating_sub(stack_address()) > MAX_STACK {
            resume_unwind(Box::new(Spent::Stack));
        }
        if left.is_multiple_of(POLL_EVERY) && (self.stopping)() {
            resume_unwind(Box::new(Spent::Interrupted));
        }
    }
}

// Stopping an evaluation unwinds; with `panic = "abort"` it would end the
// process instead.
#[cfg(panic = "abort")]
compile_error!("ferry's jq budget needs `panic = \"unwind\"`");

/// The unwinding payload that ends an evaluation (never a panic message:
/// `resume_unwind` does not call the panic hook).
enum Spent {
    Budget,
    Stack,
    Interrupted,
}

/// jaq's data for one evaluation: the program and the message's budget.
struct Metered;

impl DataT for Metered {
    type V<'a> = Val;
    type Data<'a> = Meter<'a>;
}

#[derive(Clone)]
struct Meter<'a> {
    lut: &'a Lut<Metered>,
    budget: &'a Budget<'a>,
}

impl<'a> HasLut<'a, Metered> for Meter<'a> {
    fn lut(&self) -> &'a Lut<Metered> {
        self.budget.spend();
        self.lut
    }
}

/// jaq's native filters, with `range/3` replaced by one that spends a step
/// per output: jaq's own yields numbers without evaluating a term, so
/// `[range(1e12)]` would run (and grow) without spending anything.
fn metered_funs() -> impl Iterator<Item = Fun<Metered>> {
    let range: Fun<Metered> = jaq_core::native::run::<Metered>(("range", v(3), metered_range));
    jaq_core::funs()
        .filter(|(name, args, _)| !(*name == "range" && args.len() == 3))
        .chain([range])
        .chain(jaq_std::funs())
        .chain(jaq_json::funs())
}

/// `range($from; $to; $by)` as jaq has it: while below `$to` for a positive
/// `$by`, above it for a negative one, until equal for zero.
fn metered_range<'a>(mut cv: Cv<'a, Metered>) -> ValXs<'a, <Metered as DataT>::V<'a>> {
    use std::cmp::Ordering::{Equal, Greater, Less};
    let by = cv.0.pop_var();
    let to = cv.0.pop_var();
    let from = cv.0.pop_var();
    let budget = cv.0.data().budget;
    let direction = by.partial_cmp(&Val::from(0isize)).unwrap_or(Equal);
    let mut next = Some(Ok(from));
    Box::new(std::iter::from_fn(move || match next.take()? {
        Ok(x) => {
            let more = match direction {
                Greater => x < to,
                Less => x > to,
                Equal => x != to,
            };
            if !more {
                return None;
            }
            budget.spend();
            next = Some(x.clone() + by.clone());
            Some(Ok(x))
        }
        Err(e) => Some(Err(Exn::from(e))),
    }))
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
mod tests;
