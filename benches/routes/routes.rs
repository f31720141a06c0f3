//! The routes the harness measures, and for one route the private services
//! it runs on, the names it uses, and what each side's plain client does.
//!
//! Every consumer of a measurement (the plain client, ferry, the peer) has a
//! role, and each role reads its own copy of the input where reading takes
//! it away (AMQP queues) and writes its own output (topic, stream, queue;
//! the SET sink's keys are flushed between roles).

use std::time::Duration;

use crate::R;
use crate::clients::{amqp, kafka, redis as rc};
use crate::services::{Redis, Tansu, unique};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Kafka,
    RedisStream,
    Amqp,
    Keyspace,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sink {
    RedisSet,
    RedisXadd,
    Kafka,
    Amqp,
}

#[derive(Clone, Copy, Debug)]
pub struct Route {
    pub name: &'static str,
    pub source: Source,
    pub sink: Sink,
    /// The Redis sink with `exactly_once = true`.
    pub exactly_once: bool,
}

const fn route(name: &'static str, source: Source, sink: Sink) -> Route {
    Route {
        name,
        source,
        sink,
        exactly_once: false,
    }
}

pub const ROUTES: &[Route] = &[
    route("kafka->redis-set", Source::Kafka, Sink::RedisSet),
    route("kafka->redis-xadd", Source::Kafka, Sink::RedisXadd),
    Route {
        exactly_once: true,
        ..route("kafka->redis-xadd-eo", Source::Kafka, Sink::RedisXadd)
    },
    route("stream->kafka", Source::RedisStream, Sink::Kafka),
    route("stream->amqp", Source::RedisStream, Sink::Amqp),
    route("amqp->redis-xadd", Source::Amqp, Sink::RedisXadd),
    route("kafka->amqp", Source::Kafka, Sink::Amqp),
    route("keyspace->kafka", Source::Keyspace, Sink::Kafka),
    // No broker in the way: ferry's own ceiling.
    route("stream->redis-set", Source::RedisStream, Sink::RedisSet),
];

impl Route {
    /// Whether mq-bridge-app 1.3.0 has both endpoints (Kafka, AMQP, and
    /// Redis streams only, read with groups and written with XADD).
    pub fn peer_supported(&self) -> bool {
        !self.exactly_once
            && matches!(
                self.source,
                Source::Kafka | Source::RedisStream | Source::Amqp
            )
            && matches!(self.sink, Sink::Kafka | Sink::RedisXadd | Sink::Amqp)
    }
}

/// Counts what has arrived at an output.
pub type Counter = Box<dyn FnMut() -> R<u64>>;
/// Sends a range of orders into a source.
pub type LoadWriter = Box<dyn FnMut(std::ops::Range<u64>) -> R<()>>;

/// Who reads and writes in a measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Raw,
    Ferry,
    Peer,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Raw => "raw",
            Role::Ferry => "ferry",
            Role::Peer => "peer",
        }
    }
}

/// Orders for the keyspace source are keys `bench:{id}`.
const KEYSPACE_PREFIX: &str = "bench:";
const KEYSPACE_PATTERN: &str = "bench:*";
/// The SET sink writes `order:{order_id}`; the plain writer `raw:{id}`.
const SET_PATTERN: &str = "order:*";

/// The private services and names of one measurement of one route.
pub struct Setup {
    pub route: Route,
    pub size: usize,
    src_kafka: Option<Tansu>,
    src_redis: Option<Redis>,
    dst_kafka: Option<Tansu>,
    dst_redis: Option<Redis>,
    amqp_url: String,
    tag: String,
}

impl Setup {
    /// Starts the servers `route` needs.
    pub fn start(route: Route, size: usize, amqp_url: &str) -> R<Self> {
        let s = Self {
            route,
            size,
            src_kafka: match route.source {
                Source::Kafka => Some(Tansu::start()?),
                _ => None,
            },
            src_redis: match route.source {
                Source::RedisStream | Source::Keyspace => Some(Redis::start()?),
                _ => None,
            },
            dst_kafka: match route.sink {
                Sink::Kafka => Some(Tansu::start()?),
                _ => None,
            },
            dst_redis: match route.sink {
                Sink::RedisSet | Sink::RedisXadd => Some(Redis::start()?),
                _ => None,
            },
            amqp_url: amqp_url.to_owned(),
            tag: unique("b"),
        };
        if let Some(k) = &s.src_kafka {
            crate::rt().block_on(kafka::create_topic(&k.brokers(), &s.input(Role::Ferry)))?;
        }
        if let Some(r) = &s.src_redis
            && route.source == Source::Keyspace
        {
            rc::enable_notifications(&r.url())?;
        }
        for role in [Role::Raw, Role::Ferry, Role::Peer] {
            match route.sink {
                Sink::Kafka => crate::rt().block_on(kafka::create_topic(
                    &s.dst_kafka_brokers()?,
                    &s.output(role),
                ))?,
                Sink::Amqp => amqp::declare(&s.amqp_url, &s.output(role))?,
                _ => {}
            }
            if route.source == Source::Amqp {
                amqp::declare(&s.amqp_url, &s.input(role))?;
            }
        }
        Ok(s)
    }

    fn src_kafka_brokers(&self) -> R<String> {
        Ok(self.src_kafka.as_ref().ok_or("no source broker")?.brokers())
    }

    fn dst_kafka_brokers(&self) -> R<String> {
        Ok(self.dst_kafka.as_ref().ok_or("no sink broker")?.brokers())
    }

    fn src_redis_url(&self) -> R<String> {
        Ok(self.src_redis.as_ref().ok_or("no source redis")?.url())
    }

    fn dst_redis_url(&self) -> R<String> {
        Ok(self.dst_redis.as_ref().ok_or("no sink redis")?.url())
    }

    /// The topic, stream, queue or key pattern `role` reads.
    pub fn input(&self, role: Role) -> String {
        match self.route.source {
            Source::Kafka => format!("orders-in-{}", self.tag),
            Source::RedisStream => "orders-in".to_owned(),
            Source::Amqp => format!("in-{}-{}", role.name(), self.tag),
            Source::Keyspace => KEYSPACE_PATTERN.to_owned(),
        }
    }

    /// The topic, stream or queue `role` writes (the SET sink: keys).
    pub fn output(&self, role: Role) -> String {
        match self.route.sink {
            Sink::RedisSet => SET_PATTERN.to_owned(),
            _ => format!("out-{}-{}", role.name(), self.tag),
        }
    }

    /// Puts orders `ids` where `roles` will read them.
    pub fn fill(&self, ids: std::ops::Range<u64>, roles: &[Role]) -> R<Duration> {
        let size = self.size;
        match self.route.source {
            Source::Kafka => kafka::produce(
                &self.src_kafka_brokers()?,
                &self.input(Role::Ferry),
                ids,
                size,
            ),
            Source::RedisStream => rc::write(
                &self.src_redis_url()?,
                rc::Write::Xadd {
                    stream: self.input(Role::Ferry),
                },
                ids,
                size,
            ),
            Source::Keyspace => rc::write(
                &self.src_redis_url()?,
                rc::Write::Set {
                    prefix: KEYSPACE_PREFIX.to_owned(),
                },
                ids,
                size,
            ),
            Source::Amqp => {
                let mut took = Duration::ZERO;
                for role in roles {
                    took += amqp::publish(&self.amqp_url, &self.input(*role), ids.clone(), size)?;
                }
                Ok(took)
            }
        }
    }

    /// How long the source side's plain client takes to read `n` orders.
    pub fn raw_source(&self, n: u64, timeout: Duration) -> R<Duration> {
        let input = self.input(Role::Raw);
        match self.route.source {
            Source::Kafka => kafka::consume(&self.src_kafka_brokers()?, &input, n, timeout),
            Source::RedisStream => rc::read_group(&self.src_redis_url()?, &input, n, timeout),
            Source::Keyspace => rc::scan_get(&self.src_redis_url()?, &input, n),
            Source::Amqp => amqp::consume(&self.amqp_url, &input, n, timeout),
        }
    }

    /// How long the sink side's plain client takes to write `n` orders.
    pub fn raw_sink(&self, n: u64) -> R<Duration> {
        let output = self.output(Role::Raw);
        let ids = 1..n + 1;
        match self.route.sink {
            Sink::Kafka => kafka::produce(&self.dst_kafka_brokers()?, &output, ids, self.size),
            Sink::Amqp => amqp::publish(&self.amqp_url, &output, ids, self.size),
            Sink::RedisXadd => {
                let url = self.dst_redis_url()?;
                let took = rc::write(
                    &url,
                    rc::Write::Xadd {
                        stream: output.clone(),
                    },
                    ids,
                    self.size,
                )?;
                redis::cmd("DEL")
                    .arg(&output)
                    .query::<()>(&mut rc::conn(&url)?)?;
                Ok(took)
            }
            Sink::RedisSet => {
                let url = self.dst_redis_url()?;
                let prefix = "raw:".to_owned();
                let took = rc::write(&url, rc::Write::Set { prefix }, ids, self.size)?;
                redis::cmd("FLUSHDB").query::<()>(&mut rc::conn(&url)?)?;
                Ok(took)
            }
        }
    }

    /// Counts what has arrived at `role`'s output.
    pub fn counter(&self, role: Role) -> R<Counter> {
        let output = self.output(role);
        Ok(match self.route.sink {
            Sink::Kafka => {
                let mut c = kafka::Counter::new(&self.dst_kafka_brokers()?, &output)?;
                Box::new(move || c.count())
            }
            Sink::Amqp => {
                let mut c = amqp::Counter::new(&self.amqp_url, &output)?;
                Box::new(move || c.count())
            }
            Sink::RedisXadd => {
                let mut c = rc::Counter::stream(&self.dst_redis_url()?, &output)?;
                Box::new(move || c.count())
            }
            Sink::RedisSet => {
                let mut c = rc::Counter::keys(&self.dst_redis_url()?)?;
                Box::new(move || c.count())
            }
        })
    }

    /// Forgets what `role` wrote where the next role would count it.
    pub fn clear_output(&self) -> R<()> {
        if self.route.sink == Sink::RedisSet {
            redis::cmd("FLUSHDB").query::<()>(&mut rc::conn(&self.dst_redis_url()?)?)?;
        }
        Ok(())
    }

    /// PIDs of the source and sink servers: the private ones, and the
    /// shared RabbitMQ (whose CPU then also counts other vhosts' work).
    pub fn server_pids(&self) -> (Option<i32>, Option<i32>) {
        let src = match (&self.src_kafka, &self.src_redis) {
            (Some(k), _) => Some(k.pid()),
            (_, Some(r)) => Some(r.pid()),
            _ if self.route.source == Source::Amqp => crate::rabbitmq_pid(),
            _ => None,
        };
        let dst = match (&self.dst_kafka, &self.dst_redis) {
            (Some(k), _) => Some(k.pid()),
            (_, Some(r)) => Some(r.pid()),
            _ if self.route.sink == Sink::Amqp => crate::rabbitmq_pid(),
            _ => None,
        };
        (src, dst)
    }

    pub fn pause_sink(&self, pause: bool) -> R<()> {
        match (&self.dst_kafka, &self.dst_redis) {
            (Some(k), _) if pause => k.pause(),
            (Some(k), _) => k.resume(),
            (_, Some(r)) if pause => r.pause(),
            (_, Some(r)) => r.resume(),
            _ => Err("only a private sink server can be paused".into()),
        }
    }

    /// ferry's config for this route at default settings: the source reads
    /// `role`'s input from the start, the sink writes `role`'s output.
    pub fn ferry_config(&self, role: Role) -> R<String> {
        let input = self.input(role);
        let group = unique("ferry");
        let source = match self.route.source {
            Source::Kafka => format!(
                r#"{{ type = "kafka", brokers = "{}", topics = ["{input}"], group = "{group}" }}"#,
                self.src_kafka_brokers()?
            ),
            Source::RedisStream => format!(
                r#"{{ type = "redis-stream", url = "{}", streams = ["{input}"], group = "{group}" }}"#,
                self.src_redis_url()?
            ),
            Source::Amqp => format!(
                r#"{{ type = "amqp", url = "{}", queue = "{input}" }}"#,
                self.amqp_url
            ),
            Source::Keyspace => format!(
                r#"{{ type = "redis-keyspace", url = "{}", pattern = "{input}" }}"#,
                self.src_redis_url()?
            ),
        };
        let (source_set, sink_set) = crate::overrides();
        let source = match source_set {
            "" => source,
            set => format!("{}, {set} }}", source.trim_end_matches('}').trim_end()),
        };
        let output = self.output(role);
        let sink = match self.route.sink {
            Sink::RedisSet => format!(
                "type = \"redis\"\nurl = \"{}\"\nwrite = \"set\"\nkey = \"order:{{order_id}}\"\n",
                self.dst_redis_url()?
            ),
            Sink::RedisXadd => format!(
                "type = \"redis\"\nurl = \"{}\"\nwrite = \"xadd\"\nkey = \"{output}\"\n{}",
                self.dst_redis_url()?,
                if self.route.exactly_once {
                    "exactly_once = true\n"
                } else {
                    ""
                }
            ),
            Sink::Kafka => format!(
                "type = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{output}\"\n",
                self.dst_kafka_brokers()?
            ),
            Sink::Amqp => format!(
                "type = \"amqp\"\nurl = \"{}\"\nrouting_key = \"{output}\"\n",
                self.amqp_url
            ),
        };
        Ok(format!(
            "[[pipeline]]\nname = \"bench\"\nsource = {source}\n[[pipeline.sink]]\n{sink}{sink_set}\n"
        ))
    }

    /// mq-bridge-app's config (YAML) for the same route at its defaults,
    /// reading `role`'s input and writing `role`'s output.
    pub fn peer_config(&self, role: Role) -> R<String> {
        let input = self.input(role);
        let output = self.output(role);
        let group = unique("peer");
        let source = match self.route.source {
            Source::Kafka => format!(
                "kafka: {{ url: \"{}\", topic: \"{input}\", group_id: \"{group}\" }}",
                self.src_kafka_brokers()?
            ),
            Source::RedisStream => format!(
                "redis_streams: {{ url: \"{}\", stream: \"{input}\", group: \"{group}\", read_from_start: true }}",
                self.src_redis_url()?
            ),
            Source::Amqp => format!("amqp: {{ url: \"{}\", queue: \"{input}\" }}", self.amqp_url),
            Source::Keyspace => return Err("mq-bridge has no keyspace source".into()),
        };
        let sink = match self.route.sink {
            Sink::RedisXadd => format!(
                "redis_streams: {{ url: \"{}\", stream: \"{output}\" }}",
                self.dst_redis_url()?
            ),
            Sink::Kafka => format!(
                "kafka: {{ url: \"{}\", topic: \"{output}\" }}",
                self.dst_kafka_brokers()?
            ),
            Sink::Amqp => format!(
                "amqp: {{ url: \"{}\", queue: \"{output}\" }}",
                self.amqp_url
            ),
            Sink::RedisSet => return Err("mq-bridge has no Redis SET sink".into()),
        };
        Ok(format!(
            "log_level: warn\nroutes:\n  bench:\n    input:\n      {source}\n    output:\n      {sink}\n"
        ))
    }

    // --- what the latency run needs ---

    /// A live reader of `role`'s output.
    pub fn read_output(
        &self,
        role: Role,
        arrivals: std::sync::Arc<crate::latency::Arrivals>,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> R<std::thread::JoinHandle<R<()>>> {
        let output = self.output(role);
        match self.route.sink {
            Sink::Kafka => kafka::read_live(&self.dst_kafka_brokers()?, &output, arrivals, stop),
            Sink::Amqp => amqp::read_live(&self.amqp_url, &output, arrivals, stop),
            Sink::RedisXadd => {
                rc::read_stream_live(&self.dst_redis_url()?, &output, arrivals, stop)
            }
            Sink::RedisSet => rc::read_keys_live(&self.dst_redis_url()?, &output, arrivals, stop),
        }
    }

    /// A live plain reader of the source itself (beside ferry): what the
    /// source system alone costs in latency. For AMQP, the load goes through
    /// a fanout exchange to ferry's queue and to this reader's.
    pub fn read_input(
        &self,
        arrivals: std::sync::Arc<crate::latency::Arrivals>,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> R<std::thread::JoinHandle<R<()>>> {
        match self.route.source {
            Source::Kafka => kafka::read_live(
                &self.src_kafka_brokers()?,
                &self.input(Role::Ferry),
                arrivals,
                stop,
            ),
            Source::RedisStream => rc::read_stream_live(
                &self.src_redis_url()?,
                &self.input(Role::Ferry),
                arrivals,
                stop,
            ),
            Source::Keyspace => {
                rc::read_keys_live(&self.src_redis_url()?, KEYSPACE_PATTERN, arrivals, stop)
            }
            Source::Amqp => {
                amqp::declare_fanout(
                    &self.amqp_url,
                    &self.fanout(),
                    &[&self.input(Role::Ferry), &self.input(Role::Raw)],
                )?;
                amqp::read_live(&self.amqp_url, &self.input(Role::Raw), arrivals, stop)
            }
        }
    }

    fn fanout(&self) -> String {
        format!("load-{}", self.tag)
    }

    /// A writer of the load into the source (for AMQP, into the fanout
    /// exchange [`Setup::read_input`] declared).
    pub fn load_writer(&self) -> R<LoadWriter> {
        let size = self.size;
        Ok(match self.route.source {
            Source::Kafka => {
                let mut w = kafka::Writer::new(
                    &self.src_kafka_brokers()?,
                    &self.input(Role::Ferry),
                    size,
                    0,
                )?;
                Box::new(move |ids| w.send(ids))
            }
            Source::RedisStream => {
                let what = rc::Write::Xadd {
                    stream: self.input(Role::Ferry),
                };
                let mut w = rc::Writer::new(&self.src_redis_url()?, what, size)?;
                Box::new(move |ids| w.send(ids))
            }
            Source::Keyspace => {
                let what = rc::Write::Set {
                    prefix: KEYSPACE_PREFIX.to_owned(),
                };
                let mut w = rc::Writer::new(&self.src_redis_url()?, what, size)?;
                Box::new(move |ids| w.send(ids))
            }
            Source::Amqp => {
                let mut w = amqp::Writer::new(&self.amqp_url, &self.fanout(), "", size, false)?;
                Box::new(move |ids| w.send(ids))
            }
        })
    }
}
