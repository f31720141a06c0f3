//! What happens to a message between its source and its sinks: loop
//! protection, steps, routes. Pure: no I/O, unit-tested.
//!
//! Loop protection: every message ferry writes carries `ferry.hops` (how
//! many ferry pipelines it went through) and, when an origin is configured,
//! `ferry.origin` (where it first entered ferry). A message that already
//! went through `max_hops` pipelines, or that carries this pipeline's own
//! origin, is dropped: in a two-way sync, a change that went out does not
//! come back in.

use bytes::Bytes;
use smallvec::{SmallVec, smallvec};

use crate::config::pipeline::{Condition, Route, RoutingMode};
use crate::config::{Config, PipelineConfig};
use crate::error::MessageError;
use crate::message::Message;
use crate::steps::jq::{Variables, payload_value};
use crate::steps::{self, Budget, Step, StepError, truthy};

/// Header: the origin a message first entered ferry from.
pub(crate) const ORIGIN_HEADER: &str = "ferry.origin";
/// Header: how many ferry pipelines a message went through.
pub(crate) const HOPS_HEADER: &str = "ferry.hops";

/// The sinks one message goes to, by index. Inline: a pipeline has a
/// handful of sinks, and the read loop plans every message.
pub(crate) type Sinks = SmallVec<[usize; 4]>;

/// The messages made from one source message, each with its sinks. Room
/// for one inline: without steps there is exactly one.
pub(crate) type Deliveries = SmallVec<[(Message, Sinks); 1]>;

/// Where the messages made from one source message go.
// Deliver is large on purpose: it is the plan of nearly every message, and
// inline it costs no allocation; a plan is moved once, from plan() to send.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// Not delivered anywhere, on purpose (loop protection).
    Dropped(String),
    /// An echo of this deployment's own change, for the sinks of a two-way
    /// sync only (they learn from it that the change went through the log);
    /// unchanged, without steps.
    Echo(Box<Message>, Sinks),
    /// Each message with the indices of its sinks; an empty list means no
    /// route matched. Filters may leave no message at all.
    Deliver(Deliveries),
    /// ferry is stopping and interrupted the steps: the message is left
    /// unacknowledged, for the next run.
    Interrupted,
}

/// A message the steps or routes could not handle, given back as it came
/// from the source (for the dead-letter sink), with the reason.
#[derive(Debug)]
pub struct Refused {
    pub message: Message,
    pub error: MessageError,
}

pub struct Router {
    steps: Vec<Step>,
    routes: Vec<Route>,
    mode: RoutingMode,
    sinks: usize,
    /// This deployment's origin, as the header value it is compared with
    /// and shared by every message (not copied into each).
    origin: Option<Bytes>,
    max_hops: usize,
    /// The sinks of a two-way sync, which take echoes.
    sync_sinks: Sinks,
    /// jq evaluation steps one message may take (steps and routes).
    jq_budget: u64,
}

impl Router {
    pub fn new(config: &Config, pipeline: &PipelineConfig) -> Self {
        Self {
            steps: pipeline.compiled_steps(),
            routes: pipeline.compiled_routes(),
            mode: pipeline.routing,
            sinks: pipeline.sinks.len(),
            origin: (pipeline.origin.as_ref())
                .or(config.origin.as_ref())
                .map(|o| Bytes::from(o.to_string())),
            max_hops: pipeline.max_hops.unwrap_or(config.max_hops).get(),
            sync_sinks: (pipeline.sinks.iter().enumerate())
                .filter(|(_, s)| s.connector.syncs())
                .map(|(i, _)| i)
                .collect(),
            jq_budget: pipeline.jq_budget.get() as u64,
        }
    }

    /// What to do with `message`. Its steps and route conditions share one
    /// jq budget; `stopping` is asked now and then during them, and a stop
    /// interrupts them.
    ///
    /// The message is taken, not borrowed: without steps it goes on as it
    /// is, uncopied. With steps, the original is kept until the plan is
    /// made, for the dead letter of a step that fails.
    pub fn plan(
        &self,
        message: Message,
        stopping: &dyn Fn() -> bool,
    ) -> Result<Plan, Box<Refused>> {
        let hops: usize = message
            .headers
            .get(HOPS_HEADER)
            .and_then(|h| std::str::from_utf8(h).ok()?.parse().ok())
            .unwrap_or(0);
        if hops >= self.max_hops {
            return Ok(Plan::Dropped(format!(
                "it went through {hops} ferry pipelines already (max_hops = {})",
                self.max_hops
            )));
        }
        if let Some(origin) = &self.origin
            && message
                .headers
                .get(ORIGIN_HEADER)
                .is_some_and(|o| o == origin)
        {
            if !self.sync_sinks.is_empty() {
                let echo = Message {
                    echo: true,
                    ..message
                };
                return Ok(Plan::Echo(Box::new(echo), self.sync_sinks.clone()));
            }
            return Ok(Plan::Dropped(format!(
                "it came back to its origin `{}`",
                String::from_utf8_lossy(origin)
            )));
        }
        let budget = Budget::new(self.jq_budget, stopping);
        let (outputs, original): (SmallVec<[Message; 1]>, _) = if self.steps.is_empty() {
            (smallvec![message], None)
        } else {
            match steps::apply(&self.steps, message.clone(), &budget) {
                Ok(outputs) => (SmallVec::from_vec(outputs), Some(message)),
                Err(e) => return refuse(message, e),
            }
        };
        let mut plan = Deliveries::with_capacity(outputs.len());
        for mut out in outputs {
            let sinks = match self.route(&out, &budget) {
                Ok(sinks) => sinks,
                // Without steps `out` is still the source's message.
                Err(e) => return refuse(original.unwrap_or(out), e),
            };
            out.headers.set(HOPS_HEADER, count_value(hops + 1));
            if let Some(origin) = &self.origin
                && out.headers.get(ORIGIN_HEADER).is_none()
            {
                out.headers.set(ORIGIN_HEADER, origin.clone());
            }
            plan.push((out, sinks));
        }
        Ok(Plan::Deliver(plan))
    }

    /// Sink indices for one message; empty when no route matches.
    fn route(&self, message: &Message, budget: &Budget) -> Result<Sinks, StepError> {
        if self.routes.is_empty() {
            return Ok((0..self.sinks).collect());
        }
        let mut sinks = Sinks::new();
        let mut matched = false;
        let mut vars = None;
        let mut input = None;
        for route in &self.routes {
            let Condition::When(jq) = &route.when else {
                continue;
            };
            let value = match &input {
                Some(v) => Clone::clone(v),
                None => {
                    let v = payload_value(message).map_err(MessageError::Unsupported)?;
                    input = Some(v.clone());
                    v
                }
            };
            let vars = vars.get_or_insert_with(|| Variables::of(message));
            let out = jq
                .run(value, vars, budget)
                .map_err(|f| StepError::from_jq("route condition", f))?;
            if out.first().is_some_and(truthy) {
                matched = true;
                for s in &route.sinks {
                    if !sinks.contains(s) {
                        sinks.push(*s);
                    }
                }
                if self.mode == RoutingMode::First {
                    break;
                }
            }
        }
        if !matched && let Some(route) = self.routes.iter().find(|r| r.when == Condition::Otherwise)
        {
            sinks.extend(route.sinks.iter().copied());
        }
        Ok(sinks)
    }
}

/// What a step error means for the plan: a stop leaves the message
/// unacknowledged; anything else refuses it.
fn refuse(message: Message, error: StepError) -> Result<Plan, Box<Refused>> {
    match error {
        StepError::Message(error) => Err(Box::new(Refused { message, error })),
        StepError::Interrupted => Ok(Plan::Interrupted),
    }
}

/// A hop count as a header value; the small ones (all but a misconfigured
/// loop) without an allocation.
fn count_value(n: usize) -> Bytes {
    const DIGITS: [&[u8]; 10] = [b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"8", b"9"];
    match DIGITS.get(n) {
        Some(digit) => Bytes::from_static(digit),
        None => Bytes::from(n.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn router(extra_top: &str, pipeline_extra: &str) -> Router {
        let text = format!(
            r#"{extra_top}
[[pipeline]]
name = "p"
source = {{ type = "generate" }}
{pipeline_extra}
[[pipeline.sink]]
name = "db"
type = "redis"
url = "redis://x"
write = "set"
key = "k"
[[pipeline.sink]]
name = "mail"
type = "redis"
url = "redis://x"
write = "set"
key = "k"
[[pipeline.sink]]
name = "crm"
type = "redis"
url = "redis://x"
write = "set"
key = "k"
"#
        );
        let config =
            Config::parse(&text, Path::new("t.toml"), &|_| None).unwrap_or_else(|e| panic!("{e}"));
        Router::new(&config, &config.pipelines[0])
    }

    fn sinks_of(r: &Router, payload: &str) -> Vec<Vec<usize>> {
        match r
            .plan(Message::from_payload(payload.to_owned()), &|| false)
            .unwrap()
        {
            Plan::Deliver(v) => v.into_iter().map(|(_, s)| s.to_vec()).collect(),
            other => panic!("not delivered: {other:?}"),
        }
    }

    const ROUTES: &str = r#"
[[pipeline.route]]
when = '.type == "payment"'
sinks = ["db", "mail", "crm"]
[[pipeline.route]]
when = '.type == "payment" or .type == "weblog"'
sinks = ["db"]
[[pipeline.route]]
otherwise = true
sinks = ["crm"]
"#;

    #[test]
    fn without_routes_every_message_goes_to_every_sink() {
        let r = router("", "");
        assert_eq!(sinks_of(&r, "{}"), [vec![0, 1, 2]]);
    }

    #[test]
    fn fan_out_takes_every_matching_route_once_and_otherwise_the_rest() {
        let r = router("", ROUTES);
        assert_eq!(sinks_of(&r, r#"{"type":"payment"}"#), [vec![0, 1, 2]]);
        assert_eq!(sinks_of(&r, r#"{"type":"weblog"}"#), [vec![0]]);
        assert_eq!(sinks_of(&r, r#"{"type":"other"}"#), [vec![2]]);
    }

    #[test]
    fn first_match_stops_at_the_first_route() {
        let r = router(
            "",
            &format!(
                "routing = \"first\"\n{}",
                ROUTES.replace("sinks = [\"db\", \"mail\", \"crm\"]", "sinks = [\"mail\"]")
            ),
        );
        assert_eq!(sinks_of(&r, r#"{"type":"payment"}"#), [vec![1]]);
    }

    #[test]
    fn a_message_no_route_matches_has_no_sinks() {
        let routes = "[[pipeline.route]]\nwhen = '.a'\nsinks = [\"db\", \"mail\", \"crm\"]";
        let r = router("", routes);
        assert_eq!(sinks_of(&r, r#"{"a":false}"#), [Vec::<usize>::new()]);
    }

    #[test]
    fn steps_run_before_routes_and_can_split_messages() {
        let extra = "[[pipeline.step]]\nmap = '.items[]'\n[[pipeline.route]]\nwhen = '.big'\nsinks = [\"db\"]\n[[pipeline.route]]\notherwise = true\nsinks = [\"mail\", \"crm\"]";
        let r = router("", extra);
        assert_eq!(
            sinks_of(&r, r#"{"items":[{"big":true},{"big":false}]}"#),
            [vec![0], vec![1, 2]]
        );
    }

    #[test]
    fn outgoing_messages_carry_origin_and_hops_and_echoes_are_dropped() {
        let r = router("origin = \"site-a\"\nmax_hops = 3", "");
        let Plan::Deliver(out) = r.plan(Message::from_payload("{}"), &|| false).unwrap() else {
            panic!("delivered")
        };
        let m = &out[0].0;
        assert_eq!(m.headers.get(ORIGIN_HEADER).unwrap().as_ref(), b"site-a");
        assert_eq!(m.headers.get(HOPS_HEADER).unwrap().as_ref(), b"1");
        assert!(
            matches!(r.plan(m.clone(), &|| false).unwrap(), Plan::Dropped(why) if why.contains("origin `site-a`"))
        );

        let mut foreign = Message::from_payload("{}");
        foreign.headers.set(ORIGIN_HEADER, "site-b");
        foreign.headers.set(HOPS_HEADER, "2");
        let Plan::Deliver(out) = r.plan(foreign, &|| false).unwrap() else {
            panic!("delivered")
        };
        assert_eq!(
            out[0].0.headers.get(ORIGIN_HEADER).unwrap().as_ref(),
            b"site-b",
            "first origin kept"
        );
        assert_eq!(out[0].0.headers.get(HOPS_HEADER).unwrap().as_ref(), b"3");
        assert!(
            matches!(r.plan(out[0].0.clone(), &|| false).unwrap(), Plan::Dropped(why) if why.contains("max_hops = 3"))
        );
    }

    #[test]
    fn echoes_go_unchanged_to_the_sinks_of_a_two_way_sync_only() {
        let text = r#"
origin = "site-a"
[[pipeline]]
name = "p"
source = { type = "generate" }
[[pipeline.step]]
map = '{wrapped: .}'
[[pipeline.sink]]
type = "redis"
url = "redis://x"
write = "xadd"
key = "log"
[[pipeline.sink]]
type = "redis"
url = "redis://x"
write = "set"
key = "{key}"
sync = true
"#;
        let config =
            Config::parse(text, Path::new("t.toml"), &|_| None).unwrap_or_else(|e| panic!("{e}"));
        let r = Router::new(&config, &config.pipelines[0]);
        let mut echo = Message::from_payload("{}");
        echo.headers.set(ORIGIN_HEADER, "site-a");
        let Plan::Echo(m, sinks) = r.plan(echo.clone(), &|| false).unwrap() else {
            panic!("an echo")
        };
        assert_eq!(sinks.as_slice(), [1], "only the sync sink");
        assert!(m.echo);
        assert_eq!(m.payload, echo.payload, "no steps ran");
    }

    #[test]
    fn a_route_condition_that_fails_is_a_message_error() {
        let r = router(
            "",
            "[[pipeline.route]]\nwhen = '.a.b'\nsinks = [\"db\", \"mail\", \"crm\"]",
        );
        let e = r
            .plan(Message::from_payload(r#"{"a":"x"}"#), &|| false)
            .unwrap_err()
            .error;
        assert!(e.to_string().contains("route condition"), "{e}");
    }

    #[test]
    fn a_route_condition_shares_the_message_budget_with_the_steps() {
        let r = router(
            "",
            "jq_budget = 1000\n[[pipeline.step]]\nmap = '[range(400)] | length'\n[[pipeline.route]]\nwhen = '[range(700)] | length > 0'\nsinks = [\"db\", \"mail\", \"crm\"]",
        );
        let e = r
            .plan(Message::from_payload("{}"), &|| false)
            .unwrap_err()
            .error;
        assert!(e.to_string().contains("route condition: `[range(700)] | length > 0` took more than the 1000 evaluation steps"), "{e}");
    }

    #[test]
    fn a_stop_interrupts_a_plan_and_leaves_the_message() {
        let r = router("", "[[pipeline.step]]\nfilter = 'def f: f; f'");
        assert_eq!(
            r.plan(Message::from_payload("{}"), &|| true).unwrap(),
            Plan::Interrupted
        );
        let e = r
            .plan(Message::from_payload("{}"), &|| false)
            .unwrap_err()
            .error;
        assert!(
            e.to_string()
                .contains("filter step: `def f: f; f` took more than the 1000000 evaluation steps"),
            "{e}"
        );
    }
}
