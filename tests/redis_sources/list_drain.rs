//! A list drained until the end.

use super::*;

#[test]
fn a_list_drain_until_the_end_takes_leftovers_and_the_list_then_stops() {
    let source = RedisServer::start();
    let verify = RedisServer::start();
    let mut pipe = redis::pipe();
    for n in 1..=700u64 {
        pipe.cmd("LPUSH")
            .arg("in")
            .arg(ferry::connectors::generate::order(n));
    }
    // Popped by an earlier run that crashed before its sinks confirmed.
    for n in 701..=703u64 {
        pipe.cmd("LPUSH")
            .arg("in:processing:c")
            .arg(ferry::connectors::generate::order(n));
    }
    let _: () = pipe.query(&mut source.conn()).unwrap();
    let config = pipeline(
        &format!(
            r#"{{ type = "redis-list", url = "{}", list = "in", consumer = "c", until = "end" }}"#,
            source.url()
        ),
        &set_orders(&verify.url()),
    );
    let mut ferry = Ferry::start(&config);
    ferry.wait_success(Duration::from_secs(30));
    assert!(
        ferry.log().contains("a job of 703 messages"),
        "{}",
        ferry.log()
    );
    assert_eq!(verify.dbsize(), 703);
    let lens: (u64, u64) = redis::pipe()
        .cmd("LLEN")
        .arg("in")
        .cmd("LLEN")
        .arg("in:processing:c")
        .query(&mut source.conn())
        .unwrap();
    assert_eq!(lens, (0, 0), "popped and confirmed: removed");
}
