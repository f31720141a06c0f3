//! Unit tests of `jq.rs`.

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
        .run(
            payload_value(&m).unwrap(),
            &Variables::of(&m),
            &Budget::new(1_000_000, &|| false),
        )
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
        .run(
            payload_value(&m).unwrap(),
            &Variables::of(&m),
            &Budget::new(1_000_000, &|| false),
        )
        .unwrap_err();
    assert!(
        matches!(&e, Failure::Error(e) if e.contains("`.a` failed")),
        "{e:?}"
    );
    let e = Jq::compile("repeat(1)")
        .unwrap()
        .run(
            Val::Null,
            &Variables::of(&m),
            &Budget::new(1_000_000, &|| false),
        )
        .unwrap_err();
    assert!(
        matches!(&e, Failure::Error(e) if e.contains("more than")),
        "{e:?}"
    );
    assert!(payload_value(&Message::from_payload("nope")).is_err());
    assert_eq!(
        payload_value(&Message::default()).unwrap().to_string(),
        "null"
    );
}

/// Runs `expr` on a thread with ferry's stack size.
fn run_with(
    expr: &str,
    steps: u64,
    stopping: &(dyn Fn() -> bool + Sync),
) -> Result<Vec<String>, Failure> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(THREAD_STACK)
            .spawn_scoped(scope, || {
                let m = msg();
                Jq::compile(expr)
                    .unwrap()
                    .run(
                        payload_value(&m).unwrap(),
                        &Variables::of(&m),
                        &Budget::new(steps, stopping),
                    )
                    .map(|out| out.iter().map(ToString::to_string).collect())
            })
            .unwrap()
            .join()
            .unwrap()
    })
}

fn budget_spent(r: Result<Vec<String>, Failure>) -> bool {
    matches!(&r, Err(Failure::Error(e)) if e.contains("more than the 100000 evaluation steps"))
}

#[test]
fn an_expression_that_never_ends_spends_its_budget_and_stops() {
    for endless in [
        "def f: f; f",
        "repeat(.) | empty",
        "last(range(1e18))",
        "[range(1e12)] | length",
        "[limit(1e12; repeat(1))] | length",
        "until(false; .)",
        "try (def f: f; f) catch \"caught\"",
        "(def f: f; f) // 1",
        "label $out | def f: f; f",
    ] {
        assert!(
            budget_spent(run_with(endless, 100_000, &|| false)),
            "{endless}"
        );
    }
    // The same budget is plenty for ordinary work.
    assert_eq!(
        run_with("[range(1000)] | add", 100_000, &|| false).unwrap(),
        ["499500"]
    );
    assert_eq!(
        run_with(".items | map(.sku) | join(\",\")", 100_000, &|| false).unwrap(),
        [r#""a,b""#]
    );
}

#[test]
fn a_recursion_that_is_no_tail_call_stops_before_the_stack_overflows() {
    for deep in [
        "def f: f + 1; f",
        "def f: [f]; f",
        "def f: try f catch f; f",
    ] {
        let e = run_with(deep, u64::MAX, &|| false);
        assert!(
            matches!(&e, Err(Failure::Error(e)) if e.contains("recursed deeper")),
            "{deep}: {e:?}"
        );
    }
    // A deep but finite recursion is fine.
    assert_eq!(
        run_with(
            "def f: if . < 128 then (. + 1 | f) + 0 else . end; 0 | f",
            u64::MAX,
            &|| false
        )
        .unwrap(),
        ["128"]
    );
}

#[test]
fn a_stop_request_interrupts_an_evaluation() {
    assert_eq!(
        run_with("def f: f; f", u64::MAX, &|| true),
        Err(Failure::Interrupted)
    );
    // Short expressions finish before they look.
    assert!(run_with(".order_id", u64::MAX, &|| true).is_ok());
}

#[test]
fn halt_fails_the_message_instead_of_ending_ferry() {
    for halting in ["halt", "halt_error", "halt_error(1)"] {
        let e = run_with(halting, 100_000, &|| false);
        assert!(
            matches!(&e, Err(Failure::Error(e)) if e.contains("called `halt`")),
            "{halting}: {e:?}"
        );
    }
}
