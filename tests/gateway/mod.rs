//! Helpers for the tests that run the gateway: fresh stores on both backends, an in-process
//! server on ephemeral loopback ports, and a minimal MLLP client.
#![allow(dead_code)]

pub mod sekmet;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use v2fhir::serve::{Config, Running};

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh, unique scratch directory under the target directory (kept for post-mortems).
pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = root().join("target").join("test-scratch").join(format!(
        "{name}-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        v2fhir::store::now_micros()
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// The admin URL of the test PostgreSQL server (`V2FHIR_TEST_PG_URL`). In CI (`CI` set) a missing
/// URL fails the test: PostgreSQL tests must run there, not skip.
pub fn pg_admin_url() -> Option<String> {
    match std::env::var("V2FHIR_TEST_PG_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "V2FHIR_TEST_PG_URL is not set but CI is: the PostgreSQL tests must run in CI (.ci/run starts the server)"
                );
            }
            eprintln!(
                "note: V2FHIR_TEST_PG_URL not set; PostgreSQL variants not run here (CI runs them)"
            );
            None
        }
    }
}

/// A new empty PostgreSQL database; returns its URL.
pub async fn fresh_pg(admin: &str, name: &str) -> String {
    use sqlx::Connection;
    use sqlx::Executor;
    sqlx::any::install_default_drivers();
    static N: AtomicU32 = AtomicU32::new(0);
    let db = format!(
        "v2fhir_t_{}_{}_{}_{}",
        name.to_ascii_lowercase()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        v2fhir::store::now_micros() % 1_000_000
    );
    let mut conn = sqlx::AnyConnection::connect(admin)
        .await
        .unwrap_or_else(|e| panic!("connect to {admin}: {e}"));
    drop_stale_test_databases(&mut conn).await;
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .await
        .unwrap_or_else(|e| panic!("create database {db}: {e}"));
    let _ = conn.close().await;
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin);
    format!("{base}/{db}")
}

/// Test databases are not dropped by their tests (a test's store may be open until the process
/// ends). The first `fresh_pg` of each test process drops a few databases of earlier runs whose
/// process is gone (the pid is in the name), so that they do not pile up on a developer's server.
async fn drop_stale_test_databases(conn: &mut sqlx::AnyConnection) {
    use sqlx::Executor;
    use sqlx::Row;
    static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    // Liveness is read from /proc: elsewhere nothing is dropped.
    if SWEPT.swap(true, Ordering::Relaxed) || !std::path::Path::new("/proc/self").exists() {
        return;
    }
    let Ok(rows) = conn
        .fetch_all(
            "SELECT CAST(datname AS TEXT) FROM pg_database WHERE datname LIKE 'v2fhir\\_t\\_%'",
        )
        .await
    else {
        return;
    };
    let stale = rows
        .iter()
        .filter_map(|r| r.try_get::<String, _>(0).ok())
        .filter(|name| {
            // v2fhir_t_{name}_{pid}_{n}_{micros}
            let pid = name.rsplit('_').nth(2).and_then(|p| p.parse::<u32>().ok());
            pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
        })
        .take(25);
    for name in stale {
        let _ = conn
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name}"
            )))
            .await;
    }
}

/// Store URLs to run a test against: a fresh SQLite file, and a fresh PostgreSQL database when
/// the server is configured (always in CI).
pub async fn store_urls(name: &str) -> Vec<(&'static str, String)> {
    let mut v = vec![(
        "sqlite",
        format!("sqlite://{}/v2fhir.db", scratch(name).display()),
    )];
    if let Some(admin) = pg_admin_url() {
        v.push(("postgres", fresh_pg(&admin, name).await));
    }
    v
}

/// A config on ephemeral loopback ports with the shipped mappings.
pub fn config(store_url: &str) -> Config {
    let mut c = Config::default();
    c.store.url = store_url.to_string();
    c.store.durability = "process-crash".into();
    c.mllp.listen = "127.0.0.1:0".into();
    c.http.listen = "127.0.0.1:0".into();
    c.mappings.dir = root().join("mappings");
    c.pipeline.lanes = 2;
    c
}

/// Start an in-process gateway.
pub async fn start(cfg: &Config) -> Running {
    // Logs only when asked (RUST_LOG=v2fhir=debug); the test harness captures them per test.
    if std::env::var_os("RUST_LOG").is_some() {
        v2fhir::serve::init_logging(&cfg.log);
    }
    v2fhir::serve::start(cfg)
        .await
        .unwrap_or_else(|e| panic!("gateway did not start: {e:#}"))
}

/// Wrap in MLLP.
pub fn frame(msg: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(msg.len() + 3);
    v.push(0x0b);
    v.extend_from_slice(msg);
    v.extend_from_slice(&[0x1c, 0x0d]);
    v
}

/// Read one MLLP frame (the bytes between VT and FS); `None` on EOF.
pub async fn read_frame<S: tokio::io::AsyncRead + Unpin + ?Sized>(
    s: &mut S,
    pending: &mut Vec<u8>,
) -> Option<Vec<u8>> {
    loop {
        if let Some(start) = pending.iter().position(|&b| b == 0x0b)
            && let Some(end) = pending[start..].iter().position(|&b| b == 0x1c)
        {
            let f = pending[start + 1..start + end].to_vec();
            let cut = (start + end + 2).min(pending.len());
            pending.drain(..cut);
            return Some(f);
        }
        let mut buf = [0u8; 65536];
        let n = s.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        pending.extend_from_slice(&buf[..n]);
    }
}

/// What a test receiver got, frame by frame.
pub type Received = std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>;

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// A downstream MLLP receiver (an EHR) on `listener`, over TLS with `tls`: it keeps every frame
/// and answers each with an ACK whose MSA segment `msa(control id, seen before)` writes. Its
/// connections belong to its task: aborting the task closes them too (a receiver that goes
/// away).
pub fn mllp_receiver(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    msa: fn(&str, bool) -> String,
) -> (Received, tokio::task::JoinHandle<()>) {
    let got: Received = std::sync::Arc::default();
    let seen = got.clone();
    // Cleared when the receiver's task is aborted or ends (its future dropped): a connection task
    // that is mid-poll on another worker then, and so not yet cancelled, answers nothing more.
    struct Alive(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Alive {
        fn drop(&mut self) {
            self.0.store(false, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let alive = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let task = tokio::spawn(async move {
        let _alive = Alive(alive.clone());
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            let tls = tls.clone();
            let alive = alive.clone();
            connections.spawn(async move {
                let mut s: Box<dyn Stream> = match tls {
                    None => Box::new(tcp),
                    // A handshake without the gateway's client certificate fails here.
                    Some(a) => match a.accept(tcp).await {
                        Ok(t) => Box::new(t),
                        Err(_) => return,
                    },
                };
                let mut pending = Vec::new();
                while let Some(message) = read_frame(&mut s, &mut pending).await {
                    if !alive.load(std::sync::atomic::Ordering::SeqCst) {
                        return;
                    }
                    let control = control_id(&message);
                    let seen_before = {
                        let mut g = seen.lock().unwrap_or_else(|e| e.into_inner());
                        let before = g.iter().any(|f| control_id(f) == control);
                        g.push(message);
                        before
                    };
                    let ack = format!(
                        "MSH|^~\\&|EHR|HOSP|V2FHIR|HOSP|20261130120000||ACK|R{control}|P|2.5.1\r{}\r",
                        msa(&control, seen_before)
                    );
                    if s.write_all(&frame(ack.as_bytes())).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (got, task)
}

/// An MLLP client connection.
pub struct Mllp {
    pub stream: TcpStream,
    pending: Vec<u8>,
}

impl Mllp {
    /// Connect.
    pub async fn connect(addr: std::net::SocketAddr) -> Mllp {
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Mllp {
            stream,
            pending: Vec::new(),
        }
    }

    /// Send one message and read `n` acknowledgment frames.
    pub async fn send(&mut self, msg: &[u8], n: usize) -> Vec<String> {
        self.stream
            .write_all(&frame(msg))
            .await
            .unwrap_or_else(|e| panic!("send: {e}"));
        self.read(n).await
    }

    /// Write raw bytes.
    pub async fn write_raw(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(b).await
    }

    /// Read `n` frames as text.
    pub async fn read(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..n {
            match tokio::time::timeout(
                std::time::Duration::from_secs(60),
                read_frame(&mut self.stream, &mut self.pending),
            )
            .await
            {
                Ok(Some(f)) => out.push(String::from_utf8_lossy(&f).into_owned()),
                Ok(None) => break,
                Err(_) => panic!("no acknowledgment within 60 s"),
            }
        }
        out
    }
}

/// MSA-1 and MSA-2 of an acknowledgment.
pub fn msa(ack: &str) -> (String, String) {
    let seg = ack
        .split(['\r', '\n'])
        .find(|s| s.starts_with("MSA"))
        .unwrap_or_else(|| panic!("no MSA in {ack:?}"));
    let fs = seg.chars().nth(3).unwrap_or('|');
    let f: Vec<&str> = seg.split(fs).collect();
    (
        f.get(1).unwrap_or(&"").to_string(),
        f.get(2).unwrap_or(&"").to_string(),
    )
}

/// MSH-10 of a message (by a byte scan, good enough for test inputs).
pub fn control_id(msg: &[u8]) -> String {
    let text = String::from_utf8_lossy(msg);
    let start = text.find("MSH").unwrap_or(0);
    let line = text[start..].split(['\r', '\n']).next().unwrap_or("");
    let fs = line.chars().nth(3).unwrap_or('|');
    line.split(fs).nth(9).unwrap_or("").to_string()
}

/// A small ADT^A08 with a given control id and patient id.
pub fn adt(control: &str, patient: &str, extra: &str) -> String {
    format!(
        "MSH|^~\\&|ADT1|HOSP|V2FHIR|HOSP|20261129120000+0000||ADT^A08^ADT_A01|{control}|P|2.5.1{extra}\r\
         EVN|A08|20261129120000+0000\r\
         PID|1||{patient}^^^HOSP^MR||DOE^JANE^Q||19800101|F\r\
         PV1|1|I|WARD^101^A\r"
    )
}

/// A gateway running as a separate process (`v2fhir serve`), stderr to `log`.
pub struct Server {
    pub child: tokio::process::Child,
    pub mllp: std::net::SocketAddr,
}

pub async fn spawn(store_url: &str, log: &std::path::Path, env: &[(&str, &str)]) -> Server {
    use tokio::io::AsyncBufReadExt;
    let stderr = std::fs::File::create(log).unwrap_or_else(|e| panic!("{e}"));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_v2fhir"))
        .arg("serve")
        .arg("--store")
        .arg(store_url)
        .arg("--mllp")
        .arg("127.0.0.1:0")
        .arg("--http")
        .arg("")
        .arg("--mappings")
        .arg(root().join("mappings"))
        .env("V2FHIR_STORE_DURABILITY", "process-crash")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn the gateway: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut mllp = None;
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(a) = line.strip_prefix("v2fhir: MLLP listening on ") {
            mllp = a.trim().parse().ok();
        }
        if line.contains("store") && line.ends_with("ready") {
            break;
        }
    }
    let mllp = mllp.unwrap_or_else(|| panic!("the gateway did not start; see {}", log.display()));
    Server { child, mllp }
}

/// An MLLP client connected to a running gateway.
pub async fn mllp_of(r: &Running) -> Mllp {
    Mllp::connect(
        r.mllp_addr
            .unwrap_or_else(|| panic!("the gateway has no MLLP listener")),
    )
    .await
}

/// The HTTP address of a running gateway.
pub fn http_of(r: &Running) -> std::net::SocketAddr {
    r.http_addr
        .unwrap_or_else(|| panic!("the gateway has no HTTP listener"))
}

/// A reqwest client (rustls with the ring provider installed once per process).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .build()
        .unwrap_or_else(|e| panic!("http client: {e}"))
}

/// A test PKI: a CA, a server certificate for `localhost` and a client certificate it signed.
/// The files are written to `dir` as PEM (`server.pem`, `server.key`, `ca.pem`, `client.pem`,
/// `client.key`).
pub struct Pki {
    pub dir: PathBuf,
    ca_der: Vec<u8>,
    client_cert_der: Vec<u8>,
    client_key_der: Vec<u8>,
}

impl Pki {
    pub fn new(dir: &Path, client: &str) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let mut ca_params = CertificateParams::new(vec![]).unwrap_or_else(|e| panic!("{e}"));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params
            .self_signed(&ca_key)
            .unwrap_or_else(|e| panic!("{e}"));
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf = |name: &str| {
            let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
            let params =
                CertificateParams::new(vec![name.to_string()]).unwrap_or_else(|e| panic!("{e}"));
            let cert = params
                .signed_by(&key, &issuer)
                .unwrap_or_else(|e| panic!("{e}"));
            (cert, key)
        };
        let (server_cert, server_key) = leaf("localhost");
        let (client_cert, client_key) = leaf(client);
        for (name, text) in [
            ("server.pem", server_cert.pem()),
            ("server.key", server_key.serialize_pem()),
            ("ca.pem", ca.pem()),
            ("client.pem", client_cert.pem()),
            ("client.key", client_key.serialize_pem()),
        ] {
            std::fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        Pki {
            dir: dir.to_path_buf(),
            ca_der: ca.der().to_vec(),
            client_cert_der: client_cert.der().to_vec(),
            client_key_der: client_key.serialize_der(),
        }
    }

    /// A rustls client configuration trusting the CA, presenting the client certificate or not.
    pub fn client(&self, with_cert: bool) -> rustls::ClientConfig {
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.ca_der.clone()))
            .unwrap_or_else(|e| panic!("{e}"));
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| panic!("{e}"))
            .with_root_certificates(roots);
        if with_cert {
            builder
                .with_client_auth_cert(
                    vec![CertificateDer::from(self.client_cert_der.clone())],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.client_key_der.clone())),
                )
                .unwrap_or_else(|e| panic!("{e}"))
        } else {
            builder.with_no_client_auth()
        }
    }
}
