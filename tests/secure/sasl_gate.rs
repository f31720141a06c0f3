//! A Kafka SASL gate: a TCP proxy in front of a private tansu that does the
//! SASL logins tansu 0.6.0 cannot check (it accepts any PLAIN password and
//! cannot be configured to validate OAUTHBEARER tokens; librdkafka's mock
//! cluster has no SASL at all). tansu runs without authentication and
//! advertises the gate (or the TLS-terminating socat in front of it), so
//! every client connection goes through the gate.
//!
//! Per connection the gate reads Kafka request frames and
//! - forwards ApiVersions, rewriting the answer so that SaslHandshake and
//!   SaslAuthenticate offer the versions the gate implements;
//! - answers SaslHandshake and SaslAuthenticate itself: PLAIN against the
//!   user and password it was given (RFC 4616), OAUTHBEARER against the
//!   tokens it accepts (RFC 7628, KIP-255);
//! - refuses, by closing the connection, any other request before a login
//!   (as a Kafka broker with a SASL listener does), and forwards everything
//!   after one.
//!
//! Refusals are worded as Apache Kafka words them, so ferry's diagnosis is
//! tested against the broker's real text: PLAIN gets error 58 with
//! "Authentication failed: Invalid username or password"; OAUTHBEARER gets
//! the RFC 7628 error challenge `{"status":"invalid_token"}`, and once the
//! client has answered it with %x01, error 58 with that JSON as message.
//! After error 58 the connection is closed.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::kafka_wire::{self as wire, RequestHeader};
use crate::support::faults::Background;

/// Who may log in.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    /// PLAIN: the one user and its password.
    pub plain: Option<(String, String)>,
    /// OAUTHBEARER: the tokens accepted (more than one while rotating).
    pub tokens: Vec<String>,
}

/// One SASL login the gate decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    pub mechanism: &'static str,
    /// PLAIN: the user name; OAUTHBEARER: the token.
    pub who: String,
    /// OAUTHBEARER: the SASL extensions sent with the token (`key=value`).
    pub extensions: Vec<String>,
    pub accepted: bool,
}

struct Shared {
    upstream: SocketAddr,
    credentials: Mutex<Credentials>,
    logins: Mutex<Vec<Login>>,
    /// Requests refused because they came before a login.
    refused: AtomicU64,
    /// ApiVersions answers rewritten to offer the gate's SASL versions.
    rewritten: AtomicU64,
    /// Bumped by [`SaslGate::cut`]; every connection watches it.
    cuts: watch::Sender<u64>,
}

/// The gate, on its own thread and runtime (so sync and async tests use it
/// alike). Dropping it stops it.
pub struct SaslGate {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _server: Background,
}

impl SaslGate {
    /// A gate on `port` (free, so that the broker started before it can
    /// already advertise it) in front of the broker at `upstream`.
    pub fn start_at(port: u16, upstream: &str, credentials: Credentials) -> SaslGate {
        use std::net::ToSocketAddrs;
        let listener = StdListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream: upstream.to_socket_addrs().unwrap().next().unwrap(),
            credentials: Mutex::new(credentials),
            logins: Mutex::new(Vec::new()),
            refused: AtomicU64::new(0),
            rewritten: AtomicU64::new(0),
            cuts: watch::channel(0).0,
        });
        let server = {
            let shared = Arc::clone(&shared);
            Background::serve(format!("sasl-gate-{port}"), listener, |listener| {
                accept_loop(listener, shared)
            })
        };
        SaslGate {
            addr,
            shared,
            _server: server,
        }
    }

    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// From now on, OAUTHBEARER logins need one of `tokens`.
    pub fn accept_tokens(&self, tokens: &[&str]) {
        self.shared.credentials.lock().unwrap().tokens =
            tokens.iter().map(|t| (*t).to_owned()).collect();
    }

    /// Every login decided so far, oldest first.
    pub fn logins(&self) -> Vec<Login> {
        self.shared.logins.lock().unwrap().clone()
    }

    /// Requests refused so far because they came before a login.
    pub fn refused_before_login(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// ApiVersions answers rewritten so far (each client connection asks).
    pub fn api_versions_rewritten(&self) -> u64 {
        self.shared.rewritten.load(Ordering::Relaxed)
    }

    /// Closes every connection open now: clients reconnect and log in again.
    pub fn cut(&self) {
        self.shared.cuts.send_modify(|n| *n += 1);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            if let Ok(server) = TcpStream::connect(shared.upstream).await {
                serve(client, server, &shared).await;
            }
        });
    }
}

/// What goes to the client: a frame, or the end of the connection once
/// everything before it is written.
enum Out {
    Frame(Vec<u8>),
    Close,
}

/// Where a connection's login stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// No mechanism chosen yet.
    Open,
    Plain,
    Bearer,
    /// OAUTHBEARER refused with the error challenge; the client's %x01
    /// is awaited before the final error.
    BearerRefused,
    LoggedIn,
}

async fn read_frame(rx: &mut OwnedReadHalf) -> Option<Vec<u8>> {
    let mut size = [0u8; 4];
    rx.read_exact(&mut size).await.ok()?;
    let size = usize::try_from(i32::from_be_bytes(size)).ok()?;
    if size > 64 << 20 {
        return None;
    }
    let mut frame = vec![0u8; size];
    rx.read_exact(&mut frame).await.ok()?;
    Some(frame)
}

async fn serve(client: TcpStream, server: TcpStream, shared: &Arc<Shared>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut cuts = shared.cuts.subscribe();
    cuts.mark_unchanged();
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let (out, mut to_client) = mpsc::unbounded_channel::<Out>();
    // ApiVersions requests in flight: correlation id -> version.
    let api_versions: Mutex<HashMap<i32, i16>> = Mutex::new(HashMap::new());

    let writer = async {
        while let Some(Out::Frame(f)) = to_client.recv().await {
            if client_tx.write_all(&f).await.is_err() {
                return;
            }
        }
    };
    let downstream = async {
        while let Some(mut frame) = read_frame(&mut server_rx).await {
            let correlation_id = wire::Reader::new(&frame).i32();
            let asked = correlation_id.and_then(|c| api_versions.lock().unwrap().remove(&c));
            if let Some(version) = asked
                && let Some(rewritten) = wire::offer_gate_versions(version, &frame)
            {
                frame = rewritten;
                shared.rewritten.fetch_add(1, Ordering::Relaxed);
            }
            if out.send(Out::Frame(wire::frame(frame))).is_err() {
                return;
            }
        }
    };
    let upstream = async {
        let mut stage = Stage::Open;
        while let Some(frame) = read_frame(&mut client_rx).await {
            let Some((header, body)) = wire::request(&frame) else {
                break;
            };
            match header.api_key {
                wire::API_VERSIONS => {
                    api_versions
                        .lock()
                        .unwrap()
                        .insert(header.correlation_id, header.api_version);
                }
                wire::SASL_HANDSHAKE | wire::SASL_AUTHENTICATE => {
                    let (reply, next) = login_step(shared, header, body, stage);
                    let _ = out.send(Out::Frame(wire::frame(reply)));
                    match next {
                        Some(next) => {
                            stage = next;
                            continue;
                        }
                        None => break,
                    }
                }
                _ if stage != Stage::LoggedIn => {
                    shared.refused.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                _ => {}
            }
            if server_tx.write_all(&wire::frame(frame)).await.is_err() {
                break;
            }
        }
        let _ = out.send(Out::Close);
        // The writer ends the connection once the last reply is out.
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = writer => {}
        _ = downstream => {}
        _ = upstream => {}
        _ = cuts.changed() => {}
    }
}

/// The gate's answer to a SaslHandshake or SaslAuthenticate, and the stage
/// after it (`None`: close the connection once the answer is sent).
fn login_step(
    shared: &Shared,
    header: RequestHeader,
    body: &[u8],
    stage: Stage,
) -> (Vec<u8>, Option<Stage>) {
    let id = header.correlation_id;
    let version = header.api_version;
    if header.api_key == wire::SASL_HANDSHAKE {
        let offered = ["PLAIN", "OAUTHBEARER"];
        // v0 would send the SASL bytes unframed; the gate offers v1 only.
        let chosen = match wire::handshake_mechanism(body).as_deref() {
            _ if version < wire::HANDSHAKE_VERSIONS.0 => None,
            Some("PLAIN") => Some(Stage::Plain),
            Some("OAUTHBEARER") => Some(Stage::Bearer),
            _ => None,
        };
        let error = match chosen {
            Some(_) => wire::NONE,
            None => wire::UNSUPPORTED_SASL_MECHANISM,
        };
        return (wire::handshake_response(id, error, &offered), chosen);
    }
    let answer = |error, message: Option<&str>, bytes: &[u8]| {
        wire::authenticate_response(id, version, error, message, bytes)
    };
    let Some(bytes) = wire::authenticate_bytes(version, body) else {
        return (
            answer(wire::ILLEGAL_SASL_STATE, Some("malformed request"), b""),
            None,
        );
    };
    let credentials = shared.credentials.lock().unwrap().clone();
    let record = |mechanism, who: String, extensions, accepted| {
        shared.logins.lock().unwrap().push(Login {
            mechanism,
            who,
            extensions,
            accepted,
        });
    };
    match stage {
        Stage::Plain => {
            let (user, ok) = check_plain(&bytes, credentials.plain.as_ref());
            record("PLAIN", user, Vec::new(), ok);
            if ok {
                (answer(wire::NONE, None, b""), Some(Stage::LoggedIn))
            } else {
                let why = "Authentication failed: Invalid username or password";
                (
                    answer(wire::SASL_AUTHENTICATION_FAILED, Some(why), b""),
                    None,
                )
            }
        }
        Stage::Bearer => {
            let (token, extensions) = bearer_token(&bytes).unwrap_or_default();
            let ok = !token.is_empty() && credentials.tokens.contains(&token);
            record("OAUTHBEARER", token, extensions, ok);
            if ok {
                (answer(wire::NONE, None, b""), Some(Stage::LoggedIn))
            } else {
                let challenge = INVALID_TOKEN.as_bytes();
                (
                    answer(wire::NONE, None, challenge),
                    Some(Stage::BearerRefused),
                )
            }
        }
        Stage::BearerRefused => (
            answer(wire::SASL_AUTHENTICATION_FAILED, Some(INVALID_TOKEN), b""),
            None,
        ),
        Stage::Open | Stage::LoggedIn => (
            answer(
                wire::ILLEGAL_SASL_STATE,
                Some("SaslAuthenticate without a SaslHandshake"),
                b"",
            ),
            None,
        ),
    }
}

/// The RFC 7628 error a Kafka broker sends for a token it refuses.
const INVALID_TOKEN: &str = r#"{"status":"invalid_token"}"#;

/// PLAIN (RFC 4616): `authzid NUL authcid NUL passwd`; the authorization
/// id, if any, must be the user. Returns the user named and whether the
/// login is good.
fn check_plain(message: &[u8], expected: Option<&(String, String)>) -> (String, bool) {
    let parts: Vec<&[u8]> = message.split(|b| *b == 0).collect();
    let [authzid, user, password] = parts.as_slice() else {
        return (String::new(), false);
    };
    let user = String::from_utf8_lossy(user).into_owned();
    let ok = expected.is_some_and(|(u, p)| {
        *u == user && p.as_bytes() == *password && (authzid.is_empty() || *authzid == u.as_bytes())
    });
    (user, ok)
}

/// The token of an OAUTHBEARER client-first message (RFC 7628 3.1):
/// `gs2-header %x01 *(key=value %x01) %x01`, with `auth=Bearer <token>`
/// among the pairs; the other pairs are SASL extensions (KIP-342).
fn bearer_token(message: &[u8]) -> Option<(String, Vec<String>)> {
    let text = std::str::from_utf8(message).ok()?;
    let (gs2, pairs) = text.split_once('\x01')?;
    if !gs2.starts_with("n,") && !gs2.starts_with("y,") {
        return None;
    }
    let pairs: Vec<&str> = pairs.split('\x01').filter(|p| !p.is_empty()).collect();
    let auth = pairs.iter().find_map(|p| p.strip_prefix("auth="))?;
    let (scheme, token) = auth.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let extensions = pairs
        .iter()
        .filter(|p| !p.starts_with("auth="))
        .map(|p| (*p).to_owned())
        .collect();
    Some((token.trim().to_owned(), extensions))
}
