//! An OpenID Connect token endpoint for `sasl.oidc`: librdkafka posts the
//! client-credentials grant (`grant_type=client_credentials`, the client
//! id and secret as HTTP Basic) and takes the JWT in `access_token` (it
//! reads its `exp` and `sub`). One client, one token; plain HTTP on
//! 127.0.0.1, answered on a thread of its own.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

pub struct TokenEndpoint {
    port: u16,
    issued: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl TokenEndpoint {
    /// Issues `token` to the client `id` with `secret`; anyone else gets
    /// 401 `invalid_client`, as a provider answers.
    pub fn start(id: &str, secret: &str, token: &str) -> TokenEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let basic = format!("basic {}", STANDARD.encode(format!("{id}:{secret}")));
        let ok = format!(r#"{{"access_token":"{token}","token_type":"bearer","expires_in":3600}}"#);
        let (issued, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (counted, stopped) = (Arc::clone(&issued), Arc::clone(&stop));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let Some((authorization, body)) = read_request(&conn) else {
                    continue;
                };
                let granted = authorization.eq_ignore_ascii_case(&basic)
                    && body.contains("grant_type=client_credentials");
                let (status, reply) = if granted {
                    counted.fetch_add(1, Ordering::Relaxed);
                    ("200 OK", ok.clone())
                } else {
                    (
                        "401 Unauthorized",
                        r#"{"error":"invalid_client"}"#.to_owned(),
                    )
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                    reply.len()
                );
            }
        });
        TokenEndpoint { port, issued, stop }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/oauth2/token", self.port)
    }

    /// Tokens handed out so far.
    pub fn issued(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }
}

impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees the stop.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// The `Authorization` header and the body of one request.
fn read_request(conn: &std::net::TcpStream) -> Option<(String, String)> {
    let mut reader = BufReader::new(conn);
    let (mut authorization, mut length) = (String::new(), 0usize);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "authorization" => authorization = value.trim().to_owned(),
                "content-length" => length = value.trim().parse().ok()?,
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some((authorization, String::from_utf8_lossy(&body).into_owned()))
}
