//! Servers with TLS and logins for the tests of issue 10: certificates made
//! with `openssl`, a private `redis-server` with a TLS port, a tansu broker
//! with SCRAM logins, and `socat` terminating TLS in front of tansu (tansu
//! 0.6.0 takes `--cert`/`--key` but serves plaintext). All on 127.0.0.1,
//! all stopped on drop.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{free_port, wait_until};

mod cluster;
pub mod kafka_wire;
mod oidc;
mod rabbit;
mod sasl_gate;
pub mod sentinel;
#[allow(unused_imports)]
pub use cluster::TlsCluster;
#[allow(unused_imports)]
pub use oidc::TokenEndpoint;
#[allow(unused_imports)]
pub use rabbit::TlsRabbit;
#[allow(unused_imports)]
pub use sasl_gate::{Credentials, Login, SaslGate};

/// A test CA, a server certificate for `localhost`/`127.0.0.1` and a client
/// certificate signed by it, and an unrelated CA. Server certificates serve
/// as client certificates too: cluster nodes show them to each other.
pub struct Certs {
    pub dir: tempfile::TempDir,
}

/// A new P-256 key, unencrypted.
const EC: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Certs {
    pub fn make() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for ca in ["ca", "other-ca"] {
            let mut args = vec!["req", "-x509"];
            args.extend(EC);
            let (key, pem, subj) = (
                format!("{ca}.key"),
                format!("{ca}.pem"),
                format!("/CN=ferry test {ca}"),
            );
            args.extend(["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subj]);
            openssl(d, &args);
        }
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for (name, cn) in [("server", "localhost"), ("client", "ferry")] {
            issue(d, name, cn);
        }
        Self { dir }
    }

    /// A server certificate (`{file}.pem`, `{file}.key`) signed by the CA
    /// for the DNS name `name` only: not for 127.0.0.1 nor localhost.
    pub fn server_named(&self, file: &str, name: &str) {
        let d = self.dir.path();
        std::fs::write(
            d.join(format!("{file}.ext")),
            format!("subjectAltName=DNS:{name}\nextendedKeyUsage=serverAuth,clientAuth\n"),
        )
        .unwrap();
        issue(d, file, name);
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// `{name}.key` and `{name}.pem` for the subject `cn`, signed by `ca.pem`
/// with the extensions of `{name}.ext`.
fn issue(d: &Path, name: &str, cn: &str) {
    let mut args = vec!["req"];
    args.extend(EC);
    let (key, csr, subj) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("/CN={cn}"),
    );
    args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
    openssl(d, &args);
    let (pem, ext) = (format!("{name}.pem"), format!("{name}.ext"));
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A private redis-server: a plaintext port for the test's own set-up and a
/// TLS port for ferry.
pub struct TlsRedis {
    pub port: u16,
    pub tls_port: u16,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl TlsRedis {
    /// `client_certs`: the server requires a client certificate.
    pub fn start(certs: &Certs, client_certs: bool) -> Self {
        Self::start_as(certs, "server", client_certs)
    }

    /// With the server certificate `{cert}.pem` (see `Certs::server_named`).
    pub fn start_as(certs: &Certs, cert: &str, client_certs: bool) -> Self {
        Self::start_with(certs, cert, client_certs, &[])
    }

    /// With more `redis-server` arguments.
    pub fn start_with(certs: &Certs, cert: &str, client_certs: bool, extra: &[&str]) -> Self {
        let (port, tls_port) = (free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--tls-port",
                &tls_port.to_string(),
            ])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--tls-cert-file", &certs.path(&format!("{cert}.pem"))])
            .args(["--tls-key-file", &certs.path(&format!("{cert}.key"))])
            .args(["--tls-ca-cert-file", &certs.path("ca.pem")])
            .args([
                "--tls-auth-clients",
                if client_certs { "yes" } else { "no" },
            ])
            .args(extra)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/setup.sh installs it)");
        let server = Self {
            port,
            tls_port,
            child: Some(child),
            _dir: dir,
        };
        wait_until(
            Duration::from_secs(10),
            "redis-server with TLS to start",
            || {
                server.try_conn().is_some()
                    && std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_ok()
            },
        );
        server
    }

    fn try_conn(&self) -> Option<redis::Connection> {
        let mut c = redis::Client::open(format!("redis://127.0.0.1:{}", self.port))
            .ok()?
            .get_connection()
            .ok()?;
        redis::cmd("PING").query::<String>(&mut c).ok()?;
        Some(c)
    }

    /// A plaintext connection as the default (admin) user, for set-up.
    pub fn admin(&self) -> redis::Connection {
        self.try_conn().expect("redis is up")
    }

    pub fn get(&self, key: &str) -> Option<String> {
        redis::cmd("GET").arg(key).query(&mut self.admin()).unwrap()
    }

    /// `ACL SETUSER name on >password rules...`.
    pub fn acl_user(&self, name: &str, password: &str, rules: &[&str]) {
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER")
            .arg(name)
            .arg("on")
            .arg(format!(">{password}"));
        for r in rules {
            cmd.arg(*r);
        }
        cmd.query::<()>(&mut self.admin()).unwrap();
    }

    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.tls_port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

fn tansu_bin() -> String {
    let home = format!(
        "{}/.cargo/bin/tansu",
        std::env::var("HOME").unwrap_or_default()
    );
    ["tansu", home.as_str()]
        .into_iter()
        .find(|t| {
            Command::new(t)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("tansu must be installed (scripts/setup.sh builds it)")
        .to_owned()
}

/// A tansu broker of the test's own, optionally requiring SASL logins
/// (SCRAM users are created with `tansu user create`), and optionally
/// behind a TLS-terminating `socat`: clients then reach it only with TLS,
/// on the port it advertises.
pub struct SecureKafka {
    /// The port clients use (socat's with TLS, tansu's without).
    pub port: u16,
    children: Vec<Child>,
    pub dir: tempfile::TempDir,
}

impl SecureKafka {
    /// `users`: SCRAM users `(name, password, mechanism)`; the broker then
    /// requires a login. tansu creates users only while it does not require
    /// logins, so it is started once without, then again with.
    /// `tls`: the certificates, and whether a client certificate is required.
    pub fn start(users: &[(&str, &str, &str)], tls: Option<(&Certs, bool)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tansu_port = free_port();
        if !users.is_empty() {
            let mut open = spawn_tansu(dir.path(), tansu_port, tansu_port, false);
            for (name, password, mechanism) in users {
                let out = Command::new(tansu_bin())
                    .args(["user", "create", name, password, "--mechanism", mechanism])
                    .args(["--broker", &format!("tcp://127.0.0.1:{tansu_port}")])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "tansu user create: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let _ = open.kill();
            let _ = open.wait();
        }
        let port = if tls.is_some() {
            free_port()
        } else {
            tansu_port
        };
        let mut children = vec![spawn_tansu(dir.path(), tansu_port, port, !users.is_empty())];
        if let Some((certs, client_certs)) = tls {
            children.push(spawn_socat(
                dir.path(),
                port,
                tansu_port,
                certs,
                client_certs,
            ));
        }
        Self {
            port,
            children,
            dir,
        }
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }
}

/// A tansu broker without authentication behind a [`SaslGate`] that does
/// the PLAIN and OAUTHBEARER logins tansu cannot check, and with `tls` a
/// TLS-terminating `socat` in front of the gate (ferry refuses PLAIN
/// without TLS). tansu advertises the outermost port, so every client
/// connection, the test's own included, logs in at the gate.
pub struct GatedKafka {
    /// The port clients use (socat's with TLS, the gate's without).
    pub port: u16,
    pub gate: SaslGate,
    children: Vec<Child>,
    pub dir: tempfile::TempDir,
}

impl GatedKafka {
    pub fn start(credentials: Credentials, tls: Option<&Certs>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (tansu_port, gate_port) = (free_port(), free_port());
        let port = if tls.is_some() {
            free_port()
        } else {
            gate_port
        };
        let mut children = vec![spawn_tansu(dir.path(), tansu_port, port, false)];
        let upstream = format!("127.0.0.1:{tansu_port}");
        let gate = SaslGate::start_at(gate_port, &upstream, credentials);
        if let Some(certs) = tls {
            children.push(spawn_socat(dir.path(), port, gate_port, certs, false));
        }
        Self {
            port,
            gate,
            children,
            dir,
        }
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }
}

impl Drop for GatedKafka {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `socat` terminating TLS on `port` and forwarding to `target_port`
/// (`client_certs`: a client certificate is required).
fn spawn_socat(
    dir: &Path,
    port: u16,
    target_port: u16,
    certs: &Certs,
    client_certs: bool,
) -> Child {
    let listen = format!(
        "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},cafile={},verify={}",
        certs.path("server.pem"),
        certs.path("server.key"),
        certs.path("ca.pem"),
        if client_certs { 1 } else { 0 },
    );
    let socat = Command::new("socat")
        .arg(listen)
        .arg(format!("TCP:127.0.0.1:{target_port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("socat.log")).unwrap())
        .spawn()
        .expect("socat must be installed (scripts/setup.sh installs it)");
    wait_until(Duration::from_secs(10), "socat to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    socat
}

fn spawn_tansu(dir: &Path, tansu_port: u16, advertised_port: u16, authentication: bool) -> Child {
    let listen = format!("tcp://127.0.0.1:{tansu_port}");
    let advertised = format!("tcp://127.0.0.1:{advertised_port}");
    let mut broker = Command::new(tansu_bin());
    broker
        .args(["broker", "--storage-engine", "sqlite://tansu.db"])
        .args([
            "--listener-url",
            &listen,
            "--advertised-listener-url",
            &advertised,
        ]);
    if authentication {
        broker.arg("--authentication");
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("tansu.log"))
        .unwrap();
    let child = broker
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(20), "tansu to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", tansu_port)).is_ok()
    });
    child
}

impl Drop for SecureKafka {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `ferry ARGS...`: exit code, stdout and stderr. A ferry still running
/// after 90 s (retrying what it should have given up on) is killed and
/// reported with exit code -1.
pub fn ferry(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(crate::support::ferry_bin())
        .args(args)
        .envs(env.iter().copied())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code().unwrap_or(-1);
        }
        if started.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            let _ = child.wait();
            break -1;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        code,
        std::fs::read_to_string(out).unwrap_or_default(),
        std::fs::read_to_string(err).unwrap_or_default(),
    )
}

/// Writes `config` to a file in `dir` and runs `ferry check --connect` on it.
pub fn check_connect(dir: &Path, config: &str) -> (i32, String, String) {
    let path = dir.join("check.toml");
    std::fs::write(&path, config).unwrap();
    ferry(&["check", "--connect", path.to_str().unwrap()], &[])
}
