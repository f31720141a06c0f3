//! The keyspace source: values by type, tombstones, refusing to start
//! without notifications, snapshot jobs.

use super::*;

#[test]
fn keyspace_changes_arrive_as_values_by_type_and_deletions_as_tombstones() {
    let source = RedisServer::start();
    let verify = RedisServer::start();
    let config = pipeline(
        &format!(
            r#"{{ type = "redis-keyspace", url = "{}", pattern = "user:*", snapshot = false, configure_notifications = true }}"#,
            source.url()
        ),
        &format!(
            "type = \"redis\"\nurl = \"{}\"\nwrite = \"xadd\"\nkey = \"changes\"\n",
            verify.url()
        ),
    );
    let mut ferry = Ferry::start(&config);
    wait_until(Duration::from_secs(30), "the subscription", || {
        ferry.log().contains("pipeline running")
    });
    let mut c = source.conn();
    let mut run = |args: &[&str]| {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        let _: redis::Value = cmd.query(&mut c).unwrap();
        // One change at a time, so each is read on its own.
        std::thread::sleep(Duration::from_millis(150));
    };
    run(&["SET", "user:str", "hello"]);
    run(&["HSET", "user:hash", "name", "ada", "age", "36"]);
    run(&["RPUSH", "user:list", "a", "b"]);
    run(&["SADD", "user:set", "y", "x"]);
    run(&["ZADD", "user:zset", "2", "b", "1.5", "a"]);
    run(&["XADD", "user:stream", "1-1", "f", "v"]);
    run(&["DEL", "user:str"]);
    run(&["SET", "user:ttl", "soon", "PX", "50"]);
    run(&["SET", "other:key", "ignored"]);
    let len = || -> u64 {
        redis::cmd("XLEN")
            .arg("changes")
            .query(&mut verify.conn())
            .unwrap()
    };
    wait_until(
        Duration::from_secs(30),
        "every change and the expiry",
        || len() >= 9,
    );
    ferry.stop(Duration::from_secs(10));

    let seen: Vec<(String, String, String, Option<String>)> = verify
        .xrange("changes")
        .iter()
        .map(|e| {
            (
                e.get::<String>("key").unwrap(),
                e.get::<String>("header.redis.event").unwrap(),
                e.get::<String>("header.redis.type").unwrap(),
                e.get::<String>("payload"),
            )
        })
        .collect();
    let last: HashMap<(String, String), Option<String>> = seen
        .iter()
        .map(|(k, ev, _, p)| ((k.clone(), ev.clone()), p.clone()))
        .collect();
    let get = |k: &str, ev: &str| {
        last.get(&(k.to_owned(), ev.to_owned()))
            .cloned()
            .unwrap_or_else(|| panic!("no {ev} of {k}: {seen:?}"))
    };
    assert_eq!(get("user:str", "set").as_deref(), Some("hello"));
    assert_eq!(
        get("user:hash", "hset").as_deref(),
        Some(r#"{"name":"ada","age":"36"}"#)
    );
    assert_eq!(get("user:list", "rpush").as_deref(), Some(r#"["a","b"]"#));
    assert_eq!(get("user:set", "sadd").as_deref(), Some(r#"["x","y"]"#));
    assert_eq!(
        get("user:zset", "zadd").as_deref(),
        Some(r#"{"a":1.5,"b":2.0}"#)
    );
    assert!(
        get("user:stream", "xadd")
            .unwrap()
            .contains(r#""last_entry":{"f":"v"}"#)
    );
    assert_eq!(get("user:str", "del"), None, "a deleted key is a tombstone");
    assert_eq!(
        get("user:ttl", "expired"),
        None,
        "an expired key is a tombstone"
    );
    assert!(
        seen.iter().all(|(k, ..)| k.starts_with("user:")),
        "only the pattern's keys"
    );
}

#[test]
fn keyspace_refuses_to_start_when_notifications_are_off_and_says_what_to_set() {
    let source = RedisServer::start();
    let verify = RedisServer::start();
    let config = pipeline(
        &format!(
            r#"{{ type = "redis-keyspace", url = "{}", pattern = "user:*" }}"#,
            source.url()
        ),
        &set_orders(&verify.url()),
    );
    let mut ferry = Ferry::start(&config);
    let status = ferry
        .wait_timeout(Duration::from_secs(30))
        .expect("ferry stops");
    assert!(!status.success());
    let log = ferry.log();
    assert!(
        log.contains("CONFIG SET notify-keyspace-events KA"),
        "{log}"
    );
    assert!(log.contains("configure_notifications = true"), "{log}");
}

#[test]
fn a_keyspace_snapshot_job_copies_every_matching_key_and_stops_without_notifications() {
    // Notifications are off (the default of a fresh server): a one-off
    // copy does not need them.
    let source = RedisServer::start();
    let verify = RedisServer::start();
    let mut c = source.conn();
    let mut pipe = redis::pipe();
    for i in 0..1500 {
        pipe.cmd("SET")
            .arg(format!("user:{i}"))
            .arg(format!("v{i}"));
    }
    pipe.cmd("HSET").arg("user:hash").arg("f").arg("v");
    pipe.cmd("SET").arg("other:key").arg("not copied");
    let _: () = pipe.query(&mut c).unwrap();

    let copy = |pattern: &str, stream: &str| {
        let config = pipeline(
            &format!(
                r#"{{ type = "redis-keyspace", url = "{}", pattern = "{pattern}", until = "snapshot" }}"#,
                source.url()
            ),
            &format!(
                "type = \"redis\"\nurl = \"{}\"\nwrite = \"xadd\"\nkey = \"{stream}\"\n",
                verify.url()
            ),
        );
        let mut ferry = Ferry::start(&config);
        ferry.wait_success(Duration::from_secs(30));
        ferry.log()
    };
    let xlen = |stream: &str| -> u64 {
        redis::cmd("XLEN")
            .arg(stream)
            .query(&mut verify.conn())
            .unwrap()
    };

    copy("user:*", "users");
    let keys: std::collections::HashSet<String> = {
        verify
            .xrange("users")
            .iter()
            .map(|e| e.get::<String>("key").unwrap())
            .collect()
    };
    assert_eq!(keys.len(), 1501, "every user key, the hash too");
    assert!(!keys.contains("other:key"));

    // The whole database: the job's size is known up front.
    let log = copy("*", "everything");
    assert!(log.contains("a job of 1502 messages"), "{log}");
    assert!(xlen("everything") >= 1502);
}

#[test]
fn a_snapshot_of_keys_of_every_type_mixed_reads_each_key_by_its_own_type() {
    // Keys of six types interleaved, so every read batch mixes them: the
    // read sent with a key's TYPE is often the wrong one, and those keys
    // must be read again by their own type.
    let source = RedisServer::start();
    let verify = RedisServer::start();
    let kinds = ["string", "hash", "list", "set", "zset", "stream"];
    let mut pipe = redis::pipe();
    for i in 0..600 {
        let key = format!("mix:{i}");
        match kinds[i % kinds.len()] {
            "string" => pipe.cmd("SET").arg(&key).arg(format!("v{i}")),
            "hash" => pipe.cmd("HSET").arg(&key).arg("n").arg(i),
            "list" => pipe.cmd("RPUSH").arg(&key).arg("a").arg(i),
            "set" => pipe.cmd("SADD").arg(&key).arg(i),
            "zset" => pipe.cmd("ZADD").arg(&key).arg(i).arg("m"),
            _ => pipe.cmd("XADD").arg(&key).arg("1-1").arg("f").arg(i),
        };
    }
    let _: () = pipe.query(&mut source.conn()).unwrap();

    let config = pipeline(
        &format!(
            r#"{{ type = "redis-keyspace", url = "{}", pattern = "mix:*", until = "snapshot" }}"#,
            source.url()
        ),
        &format!(
            "type = \"redis\"\nurl = \"{}\"\nwrite = \"xadd\"\nkey = \"mixed\"\n",
            verify.url()
        ),
    );
    let mut ferry = Ferry::start(&config);
    ferry.wait_success(Duration::from_secs(30));

    let got: HashMap<String, (String, String)> = verify
        .xrange("mixed")
        .iter()
        .map(|e| {
            (
                e.get::<String>("key").unwrap(),
                (
                    e.get::<String>("header.redis.type").unwrap(),
                    e.get::<String>("payload").unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(got.len(), 600, "every key once at least");
    for i in 0..600 {
        let kind = kinds[i % kinds.len()];
        let (seen, payload) = &got[&format!("mix:{i}")];
        assert_eq!(seen, kind, "mix:{i}");
        let expected = match kind {
            "string" => format!("v{i}"),
            "hash" => format!(r#"{{"n":"{i}"}}"#),
            "list" => format!(r#"["a","{i}"]"#),
            "set" => format!(r#"["{i}"]"#),
            "zset" => format!(r#"{{"m":{i}.0}}"#),
            _ => String::new(),
        };
        if kind == "stream" {
            assert!(
                payload.contains(&format!(r#""last_entry":{{"f":"{i}"}}"#)),
                "mix:{i}: {payload}"
            );
        } else {
            assert_eq!(payload, &expected, "mix:{i}");
        }
    }
}
