//! Fault injection: a TCP proxy a test puts between ferry and a server.
//!
//! ferry connects to [`Proxy::addr`] instead of the server. The test can then
//! - cut every current connection ([`Proxy::cut`]),
//! - refuse new connections for a while ([`Proxy::refuse_for`]; accepted
//!   and closed at once, as a restarting server or a firewall would),
//! - delay traffic in both directions ([`Proxy::delay`]),
//! - lose the reply to a command ([`Proxy::drop_reply_to`]): the request
//!   that matches a [`Trigger`] reaches the server, which executes it, but
//!   its reply (and anything after it on that connection) is discarded and
//!   the connection is cut. This is the fault a plain outage does not
//!   produce: the client cannot know whether its command took effect.
//!
//! The proxy runs on a runtime of its own, on its own thread, so that sync
//! tests and async tests (whatever their runtime) use it alike, and a test
//! blocked in `wait_until` does not stall the traffic it waits for.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Whether a read from the client holds the request to lose the reply of.
type Matcher = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// Which request's reply to lose. Matched against what the client sends,
/// one read at a time (a request split across two reads is not seen).
#[derive(Clone)]
pub struct Trigger {
    what: String,
    matches: Matcher,
}

impl Trigger {
    /// A Redis command by name, as clients send it (`LMOVE`, `XREADGROUP`,
    /// `EVALSHA`): a RESP bulk string, so `LMOVE` does not match `BLMOVE`.
    pub fn redis(command: &str) -> Trigger {
        let needle = format!("\r\n{command}\r\n").into_bytes();
        Trigger {
            what: format!("redis {command}"),
            matches: Arc::new(move |bytes| contains(bytes, &needle)),
        }
    }

    /// Any read that contains `needle`.
    pub fn contains(needle: &[u8]) -> Trigger {
        let needle = needle.to_vec();
        Trigger {
            what: format!("bytes {:?}", String::from_utf8_lossy(&needle)),
            matches: Arc::new(move |bytes| contains(bytes, &needle)),
        }
    }

    /// A Kafka request of API `key` (0 produce, 1 fetch, 8 offset commit):
    /// walks the length-prefixed request frames from the start of the read.
    /// Clients write whole frames, so a read mostly starts at a frame; when
    /// it does not, a reply to some other request may be lost instead,
    /// which is still a lost reply.
    pub fn kafka(api_key: i16) -> Trigger {
        Trigger {
            what: format!("kafka api {api_key}"),
            matches: Arc::new(move |mut bytes: &[u8]| {
                while bytes.len() >= 6 {
                    if i16::from_be_bytes([bytes[4], bytes[5]]) == api_key {
                        return true;
                    }
                    let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                    let Some(next) = bytes.get(4 + len as usize..) else {
                        return false;
                    };
                    bytes = next;
                }
                false
            }),
        }
    }

    /// An AMQP method frame of `class`.`method` (60.40 `basic.publish`,
    /// 60.80 `basic.ack`), anywhere in the read.
    pub fn amqp(class: u16, method: u16) -> Trigger {
        let [c0, c1] = class.to_be_bytes();
        let [m0, m1] = method.to_be_bytes();
        let needle = [c0, c1, m0, m1];
        Trigger {
            what: format!("amqp method {class}.{method}"),
            matches: Arc::new(move |bytes| {
                // frame type 1 (method), channel, size, then class and method
                bytes.windows(11).any(|w| w[0] == 1 && w[7..11] == needle)
            }),
        }
    }

    /// Whatever the client sends next: "the next reply" on any connection.
    pub fn next_request() -> Trigger {
        Trigger {
            what: "the next request".to_owned(),
            matches: Arc::new(|bytes| !bytes.is_empty()),
        }
    }
}

impl std::fmt::Debug for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.what)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[derive(Default)]
struct Faults {
    refuse_until: Option<Instant>,
    delay: Duration,
    /// Armed: the next matching request loses its reply (once).
    drop_reply: Option<Trigger>,
}

struct Shared {
    upstream: SocketAddr,
    faults: Mutex<Faults>,
    /// Bumped by [`Proxy::cut`]; every connection watches it.
    cuts: watch::Sender<u64>,
    accepted: AtomicU64,
    refused: AtomicU64,
    cut: AtomicU64,
    dropped_replies: AtomicU64,
    open: AtomicU64,
}

/// A TCP proxy in front of one server address. Dropping it stops it.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _server: Background,
}

/// A listener served by a runtime of its own on a thread of its own, so
/// that blocking tests and async tests (whatever their runtime) use it
/// alike; stopped and joined when dropped (connection tasks end with the
/// runtime).
pub struct Background {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Serves `listener` (non-blocking) with `serve` on a thread named `name`.
    pub fn serve<F, Fut>(name: String, listener: StdListener, serve: F) -> Background
    where
        F: FnOnce(TcpListener) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).unwrap();
                    tokio::select! {
                        _ = serve(listener) => {}
                        _ = stopped => {}
                    }
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .unwrap();
        Background {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Proxy {
    /// A proxy on a free port of 127.0.0.1 forwarding to `upstream`
    /// (`host:port`). The server need not be up yet.
    pub fn start(upstream: &str) -> Proxy {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        Self::start_on(listener, upstream)
    }

    /// A proxy on `port` (free, e.g. from `free_port`), so that a server
    /// started later can be told to advertise it.
    pub fn start_at(port: u16, upstream: &str) -> Proxy {
        let listener = StdListener::bind(("127.0.0.1", port)).unwrap();
        Self::start_on(listener, upstream)
    }

    fn start_on(listener: StdListener, upstream: &str) -> Proxy {
        use std::net::ToSocketAddrs;
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = upstream.to_socket_addrs().unwrap().next().unwrap();
        let shared = Arc::new(Shared {
            upstream,
            faults: Mutex::new(Faults::default()),
            cuts: watch::channel(0).0,
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            cut: AtomicU64::new(0),
            dropped_replies: AtomicU64::new(0),
            open: AtomicU64::new(0),
        });
        let server = {
            let shared = Arc::clone(&shared);
            Background::serve(format!("proxy-{}", addr.port()), listener, |listener| {
                accept_loop(listener, shared)
            })
        };
        Proxy {
            addr,
            shared,
            _server: server,
        }
    }

    /// `127.0.0.1:PORT`, where clients connect.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Cuts every connection open now. Returns how many were cut.
    pub fn cut(&self) -> u64 {
        let open = self.shared.open.load(Ordering::Relaxed);
        self.shared.cuts.send_modify(|n| *n += 1);
        open
    }

    /// New connections are accepted and closed at once for `duration`.
    pub fn refuse_for(&self, duration: Duration) {
        self.faults().refuse_until = Some(Instant::now() + duration);
    }

    /// An outage: cuts every connection and refuses new ones for `duration`.
    pub fn outage(&self, duration: Duration) {
        self.refuse_for(duration);
        self.cut();
    }

    /// Holds every read in both directions this long before forwarding it
    /// (`Duration::ZERO` to stop delaying).
    pub fn delay(&self, delay: Duration) {
        self.faults().delay = delay;
    }

    /// Arms the proxy: the next request matching `trigger` is forwarded, and
    /// once the server has answered it, the answer is discarded and the
    /// connection cut. One request only; arm again for another.
    pub fn drop_reply_to(&self, trigger: Trigger) {
        self.faults().drop_reply = Some(trigger);
    }

    /// Whether an armed [`Proxy::drop_reply_to`] has not fired yet.
    pub fn armed(&self) -> bool {
        self.faults().drop_reply.is_some()
    }

    /// Disarms [`Proxy::drop_reply_to`] if it has not fired.
    pub fn disarm(&self) {
        self.faults().drop_reply = None;
    }

    /// Replies discarded so far.
    pub fn dropped_replies(&self) -> u64 {
        self.shared.dropped_replies.load(Ordering::Relaxed)
    }

    /// Waits until `drop_reply_to` fired; false after `timeout`.
    pub fn wait_dropped(&self, before: u64, timeout: Duration) -> bool {
        let start = Instant::now();
        while self.dropped_replies() <= before {
            if start.elapsed() > timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Connections accepted and forwarded so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> u64 {
        self.shared.open.load(Ordering::Relaxed)
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.shared.faults.lock().unwrap()
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let refuse = {
            let f = shared.faults.lock().unwrap();
            f.refuse_until.is_some_and(|until| Instant::now() < until)
        };
        if refuse {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            drop(client);
            continue;
        }
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(shared.upstream).await else {
                return;
            };
            shared.accepted.fetch_add(1, Ordering::Relaxed);
            shared.open.fetch_add(1, Ordering::Relaxed);
            relay(client, server, &shared).await;
            shared.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Copies both ways until either side closes, the proxy cuts every
/// connection, or a reply is dropped (then this connection is cut).
async fn relay(client: TcpStream, server: TcpStream, shared: &Arc<Shared>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut cuts = shared.cuts.subscribe();
    cuts.mark_unchanged();
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    // Set once this connection carried a request whose reply must be lost.
    let doomed = AtomicBool::new(false);
    let delay = || shared.faults.lock().unwrap().delay;

    let upstream = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            {
                let mut f = shared.faults.lock().unwrap();
                if f.drop_reply
                    .as_ref()
                    .is_some_and(|t| (t.matches)(&buf[..n]))
                {
                    f.drop_reply = None;
                    doomed.store(true, Ordering::SeqCst);
                }
            }
            let d = delay();
            if !d.is_zero() {
                tokio::time::sleep(d).await;
            }
            if server_tx.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let downstream = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if doomed.load(Ordering::SeqCst) {
                // The server answered: the command ran. Lose the answer,
                // and whatever else comes in the next moment, then cut.
                shared.dropped_replies.fetch_add(1, Ordering::Relaxed);
                let settle = tokio::time::sleep(Duration::from_millis(100));
                tokio::pin!(settle);
                loop {
                    tokio::select! {
                        _ = &mut settle => return,
                        r = server_rx.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) { return },
                    }
                }
            }
            let d = delay();
            if !d.is_zero() {
                tokio::time::sleep(d).await;
            }
            if client_tx.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
        _ = cuts.changed() => {
            shared.cut.fetch_add(1, Ordering::Relaxed);
        }
    }
    // Dropping both halves of both sockets closes them.
}
