//! `v2fhir serve`: configuration (defaults → TOML file → `V2FHIR_*` environment → command line),
//! start-up (mappings, store with migrations, pipeline, listeners) and graceful shutdown.

use crate::api::{self, AppState, HttpConfig};
use crate::ingest::{IngestConfig, Pipeline};
use crate::mapping::eval::BundleType;
use crate::sinks::upstream::{DeliveryMode, Upstream, UpstreamConfig};
use crate::sources::{TlsFiles, mllp};
use crate::store::{Durability, Store};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// All settings. Every field has a default, so an empty file (or none) is a working config.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[store]`
    pub store: StoreSection,
    /// `[mllp]`
    pub mllp: MllpSection,
    /// `[http]`
    pub http: HttpSection,
    /// `[mappings]`
    pub mappings: MappingsSection,
    /// `[convert]`
    pub convert: ConvertSection,
    /// `[pipeline]`
    pub pipeline: PipelineSection,
    /// `[log]`
    pub log: LogSection,
    /// `[sink]`
    pub sink: SinkSection,
    /// `[upstream]`
    pub upstream: UpstreamSection,
    /// `[file]`
    pub file: FileSection,
    /// `[forward]`
    pub forward: ForwardSection,
}

/// `[forward]`: accepted HL7 v2 messages passed on, as received, to a downstream MLLP system
/// (destination `default`); `[forward.routes.NAME]`, with the same keys, adds more destinations,
/// each with its own queue, order and filter.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardSection {
    /// The receiver's `host:port`; empty (the default) disables forwarding.
    pub mllp: String,
    /// Comma-separated MSH-9 patterns (`ADT^*,ORU^R01`); empty: every type.
    pub types: String,
    /// Also forward messages whose FHIR conversion failed (answered AE).
    pub include_errors: bool,
    /// Longest wait for the receiver's ACK.
    pub timeout_secs: u64,
    /// Longest wait for a connection.
    pub connect_timeout_secs: u64,
    /// Longest pause between attempts at one message (the pause doubles from 1 s).
    pub retry_max_secs: u64,
    /// PEM CA certificates: set, MLLP over TLS, the receiver's certificate checked against them.
    pub tls_ca: Option<PathBuf>,
    /// The name the receiver's certificate must carry; empty: the host of `mllp`.
    pub tls_server_name: String,
    /// PEM client certificate chain and key, for receivers that require one.
    pub tls_cert: Option<PathBuf>,
    /// Key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// FHIR writes that store Observations (device readings) are sent too, as ORU^R01.
    pub fhir_observations: bool,
    /// FHIR writes that store Immunizations are sent too, as VXU^V04.
    pub fhir_immunizations: bool,
    /// MSH-3 of those ORU^R01 and VXU^V04.
    pub oru_sending_application: String,
    /// MSH-4.
    pub oru_sending_facility: String,
    /// MSH-5.
    pub oru_receiving_application: String,
    /// MSH-6.
    pub oru_receiving_facility: String,
    /// `after-commit` (default: ACK once stored; forwarding follows) or `after-receiver` (the
    /// sender's ACK waits for this receiver's answer: AA when it took the message, AE with its
    /// reason when it refused it or did not answer within `ack_timeout_secs`). `[forward]` only.
    pub ack: String,
    /// `after-receiver`: longest wait for the receiver before answering AE.
    pub ack_timeout_secs: u64,
    /// More destinations, by name (`[forward.routes.lab]`); a route's own `routes` must be empty.
    pub routes: std::collections::BTreeMap<String, ForwardSection>,
}

impl Default for ForwardSection {
    fn default() -> Self {
        ForwardSection {
            mllp: String::new(),
            types: String::new(),
            include_errors: false,
            timeout_secs: 30,
            connect_timeout_secs: 10,
            retry_max_secs: 60,
            tls_ca: None,
            tls_server_name: String::new(),
            tls_cert: None,
            tls_key: None,
            fhir_observations: false,
            fhir_immunizations: false,
            oru_sending_application: "V2FHIR".into(),
            oru_sending_facility: String::new(),
            oru_receiving_application: String::new(),
            oru_receiving_facility: String::new(),
            ack: "after-commit".into(),
            ack_timeout_secs: 30,
            routes: Default::default(),
        }
    }
}

impl ForwardSection {
    /// TLS toward the receiver, if `tls_ca` is set (reads the files).
    pub fn tls(&self) -> Result<Option<crate::sinks::forward::ForwardTls>, ConfigError> {
        self.tls_named("forward")
    }

    /// [`ForwardSection::tls`], errors naming the section (`forward`, `forward.routes.lab`).
    fn tls_named(
        &self,
        section: &str,
    ) -> Result<Option<crate::sinks::forward::ForwardTls>, ConfigError> {
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let client = match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            (None, None) => None,
            _ => {
                return Err(ConfigError(format!(
                    "{section}.tls_cert and {section}.tls_key must be given together"
                )));
            }
        };
        let name = if self.tls_server_name.is_empty() {
            // The host of host:port (an IPv6 literal in brackets loses them).
            self.mllp
                .rsplit_once(':')
                .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
                .unwrap_or(&self.mllp)
        } else {
            &self.tls_server_name
        };
        crate::sinks::forward::ForwardTls::new(ca, client, name)
            .map(Some)
            .map_err(|e| ConfigError(format!("{section}.tls: {e}")))
    }

    /// Every destination: `default` (this section, when `mllp` is set) and the routes, by name,
    /// with the section name errors use.
    pub fn destinations(&self) -> Vec<(String, String, &ForwardSection)> {
        let mut out = Vec::new();
        if !self.mllp.is_empty() {
            out.push((
                crate::store::forward::DEFAULT_DESTINATION.to_string(),
                "forward".to_string(),
                self,
            ));
        }
        for (name, route) in &self.routes {
            out.push((name.clone(), format!("forward.routes.{name}"), route));
        }
        out
    }

    /// Check every destination: an address, MSH-9 patterns, TLS files; route names.
    fn check(&self) -> Result<(), ConfigError> {
        use std::net::ToSocketAddrs;
        match self.ack.as_str() {
            "after-commit" => {}
            "after-receiver" if !self.mllp.is_empty() => {}
            "after-receiver" => {
                return Err(ConfigError(
                    "forward.ack 'after-receiver' needs forward.mllp (the receiver to wait for)"
                        .into(),
                ));
            }
            o => {
                return Err(ConfigError(format!(
                    "forward.ack '{o}' is not after-commit or after-receiver"
                )));
            }
        }
        for (name, section, d) in self.destinations() {
            if section != "forward" && name == crate::store::forward::DEFAULT_DESTINATION {
                return Err(ConfigError(format!(
                    "{section}: 'default' names [forward] itself; give the route another name"
                )));
            }
            if section != "forward" && !d.routes.is_empty() {
                return Err(ConfigError(format!(
                    "{section}: a route has no routes of its own"
                )));
            }
            if section != "forward" && d.ack != "after-commit" {
                return Err(ConfigError(format!(
                    "{section}.ack: only [forward] can hold the sender's ACK for its receiver"
                )));
            }
            if d.mllp.to_socket_addrs().is_err() {
                return Err(ConfigError(format!(
                    "{section}.mllp '{}' is not host:port",
                    d.mllp
                )));
            }
            d.tls_named(&section)?;
            for t in d.types.split(',').map(str::trim) {
                if !t.is_empty() && (t.contains('|') || t.starts_with('^')) {
                    return Err(ConfigError(format!(
                        "{section}.types: '{t}' is not an MSH-9 pattern such as ADT^A01 or ADT^*"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Each destination's name and what a commit queues for it.
    pub fn filters(&self) -> Vec<(String, crate::store::ForwardFilter)> {
        self.destinations()
            .into_iter()
            .map(|(name, _, d)| (name, d.filter()))
            .collect()
    }

    /// What a commit queues for this destination.
    fn filter(&self) -> crate::store::ForwardFilter {
        crate::store::ForwardFilter {
            types: self
                .types
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect(),
            include_errors: self.include_errors,
            fhir_observations: self.fhir_observations,
            fhir_immunizations: self.fhir_immunizations,
        }
    }
}

/// `[file]`: HL7 v2 files dropped into a directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileSection {
    /// The directory polled; empty (the default) disables the file source.
    pub dir: String,
    /// Files whose messages were all accepted go here; empty: `DIR/done`.
    pub done_dir: String,
    /// Files with a message not accepted go here; empty: `DIR/error`.
    pub error_dir: String,
    /// Milliseconds between polls.
    pub poll_ms: u64,
    /// A file modified less than this many milliseconds ago is left for the next poll.
    pub settle_ms: u64,
    /// Larger files are not read (moved to the error directory).
    pub max_bytes: u64,
}

impl Default for FileSection {
    fn default() -> Self {
        FileSection {
            dir: String::new(),
            done_dir: String::new(),
            error_dir: String::new(),
            poll_ms: 1000,
            settle_ms: 1000,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// `[sink]`: where converted messages go, and when a message is acknowledged.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinkSection {
    /// `local` (resource store + `/fhir` facade, default), `upstream` (forward only; `/fhir`
    /// proxies to the upstream) or `both`. Env `V2FHIR_SINK`, flag `--sink`.
    pub mode: String,
    /// `after-commit` (default: ACK once stored; delivery is asynchronous through the outbox)
    /// or `after-upstream` (ACK once the upstream accepted the message; AE when it refused).
    pub ack: String,
    /// `after-upstream`: longest wait for the upstream before answering AE.
    pub ack_timeout_secs: u64,
}

impl Default for SinkSection {
    fn default() -> Self {
        SinkSection {
            mode: "local".into(),
            ack: "after-commit".into(),
            ack_timeout_secs: 30,
        }
    }
}

/// `[upstream]`: the FHIR server to forward to (sink mode `upstream` or `both`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamSection {
    /// Base URL, e.g. `https://fhir.example.org/fhir`. Env `V2FHIR_UPSTREAM_URL`, flag `--upstream-url`.
    pub url: String,
    /// Per-request timeout.
    pub timeout_secs: u64,
    /// Connect timeout.
    pub connect_timeout_secs: u64,
    /// `transaction` (default), `batch`, or `single` (one request per resource).
    pub bundle: String,
    /// Comma-separated resource types written with a conditional update on their first
    /// identifier (`PUT Patient?identifier=system|value`) when the upstream assigns ids.
    pub conditional: String,
    /// Messages delivered concurrently (always different patients).
    pub concurrency: usize,
    /// Park a message as dead after this many failed attempts; 0 = never.
    pub max_attempts: u32,
    /// Park a message as dead once it has waited this long; 0 = never.
    pub max_age_secs: u64,
    /// First retry delay (doubles per attempt, with jitter).
    pub backoff_initial_ms: u64,
    /// Longest retry delay.
    pub backoff_max_secs: u64,
    /// How often `GET [url]/metadata` is checked.
    pub health_interval_secs: u64,
    /// `none`, `bearer`, `client-credentials` or `smart-backend`.
    pub auth: String,
    /// `bearer`: the token.
    pub token: String,
    /// `bearer`: a file holding the token (first line).
    pub token_file: String,
    /// OAuth2 token endpoint; empty = discovered from `[url]/.well-known/smart-configuration`.
    pub token_url: String,
    /// OAuth2 client id.
    pub client_id: String,
    /// `client-credentials`: the client secret.
    pub client_secret: String,
    /// `client-credentials`: a file holding the secret (first line).
    pub client_secret_file: String,
    /// Requested scope.
    pub scope: String,
    /// `smart-backend`: PEM private key (PKCS#8, or PKCS#1 for RSA).
    pub private_key: String,
    /// `smart-backend`: `kid` of the key, if the server wants it.
    pub key_id: String,
    /// `smart-backend`: `RS384` or `ES384`.
    pub alg: String,
}

impl Default for UpstreamSection {
    fn default() -> Self {
        UpstreamSection {
            url: String::new(),
            timeout_secs: 30,
            connect_timeout_secs: 5,
            bundle: "transaction".into(),
            conditional: String::new(),
            concurrency: 8,
            max_attempts: 0,
            max_age_secs: 7 * 24 * 3600,
            backoff_initial_ms: 500,
            backoff_max_secs: 300,
            health_interval_secs: 30,
            auth: "none".into(),
            token: String::new(),
            token_file: String::new(),
            token_url: String::new(),
            client_id: String::new(),
            client_secret: String::new(),
            client_secret_file: String::new(),
            scope: "system/*.write system/*.read".into(),
            private_key: String::new(),
            key_id: String::new(),
            alg: "RS384".into(),
        }
    }
}

/// `[store]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// `sqlite://data/v2fhir.db` (default) or `postgres://user:pass@host/db`.
    pub url: String,
    /// `power-loss` (fsync per group commit, default) or `process-crash` (SQLite NORMAL).
    pub durability: String,
    /// SQLite: the writer hands each transaction's WAL frames to the kernel in one write
    /// (`crates/walbuf`); `false` writes them as SQLite does, two writes per page.
    pub wal_buffer: bool,
    /// Retention of the message log in days (0: forever, the default): finished messages
    /// (converted, delivered, duplicate, rejected) older than this are deleted every hour; their
    /// FHIR resources stay. Messages in `error` or `dead` are kept until they are dealt with.
    pub retention_days: u32,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            url: "sqlite://data/v2fhir.db".into(),
            durability: "power-loss".into(),
            wal_buffer: true,
            retention_days: 0,
        }
    }
}

/// `[mllp]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MllpSection {
    /// Listen address; empty disables MLLP.
    pub listen: String,
    /// Largest frame in bytes.
    pub max_frame: usize,
    /// Seconds without a byte before a connection is closed.
    pub idle_timeout_secs: u64,
    /// Most concurrent connections.
    pub max_connections: usize,
    /// PEM certificate chain: enables TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: requires client certificates signed by it.
    pub tls_client_ca: Option<PathBuf>,
}

impl Default for MllpSection {
    fn default() -> Self {
        let d = mllp::MllpConfig::default();
        MllpSection {
            listen: "127.0.0.1:2575".into(),
            max_frame: d.max_frame,
            idle_timeout_secs: d.idle_timeout.as_secs(),
            max_connections: d.max_connections,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// Listen address; empty disables HTTP.
    pub listen: String,
    /// Largest request body in bytes.
    pub max_body: usize,
    /// Seconds before a request times out.
    pub timeout_secs: u64,
    /// Public base URL for links; empty = relative links.
    pub base_url: String,
    /// PEM certificate chain: serves HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: requires client certificates signed by it (device and app backends, EHRs).
    pub tls_client_ca: Option<PathBuf>,
    /// Bearer-token clients with scopes (`NAME SCOPES SHA256` per line): every endpoint but the
    /// health checks and `/fhir/metadata` then needs a token with the right scope.
    pub tokens_file: Option<PathBuf>,
    /// An identity provider's public keys (JWKS file): signed JWT access tokens are accepted,
    /// their `scope` claim granting scopes. Needs `jwt_issuer` and `jwt_audience`.
    pub jwt_jwks_file: Option<PathBuf>,
    /// Or the URL of those keys (the provider's `jwks_uri`): fetched at start, every
    /// `jwt_jwks_refresh_secs`, and when a token names a key id not held (a rotation).
    pub jwt_jwks_url: String,
    /// Seconds between fetches of `jwt_jwks_url`.
    pub jwt_jwks_refresh_secs: u64,
    /// The `iss` such tokens must carry.
    pub jwt_issuer: String,
    /// The `aud` such tokens must name (this gateway).
    pub jwt_audience: String,
    /// Where bulk export (`/fhir/$export`) writes its NDJSON files (PHI: protected storage).
    pub export_dir: PathBuf,
}

impl Default for HttpSection {
    fn default() -> Self {
        let d = HttpConfig::default();
        HttpSection {
            listen: "127.0.0.1:8080".into(),
            max_body: d.max_body,
            timeout_secs: d.timeout.as_secs(),
            base_url: String::new(),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tokens_file: None,
            jwt_jwks_file: None,
            jwt_jwks_url: String::new(),
            jwt_jwks_refresh_secs: 300,
            jwt_issuer: String::new(),
            jwt_audience: String::new(),
            export_dir: PathBuf::from("data/export"),
        }
    }
}

/// `[mappings]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MappingsSection {
    /// The mapping directory.
    pub dir: PathBuf,
}

impl Default for MappingsSection {
    fn default() -> Self {
        MappingsSection {
            dir: PathBuf::from("mappings"),
        }
    }
}

/// `[convert]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConvertSection {
    /// IANA zone for date-times without an offset.
    pub default_zone: String,
    /// transaction, batch, collection or message.
    pub bundle: String,
    /// Validate every resource against R4.
    pub validate: bool,
}

impl Default for ConvertSection {
    fn default() -> Self {
        ConvertSection {
            default_zone: "UTC".into(),
            bundle: "transaction".into(),
            validate: true,
        }
    }
}

/// `[pipeline]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineSection {
    /// Parse/convert threads (0 = automatic: CPUs less one on SQLite, CPUs on PostgreSQL).
    pub lanes: usize,
    /// Most messages per group commit (0 = 512).
    pub max_batch: usize,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter, e.g. `info` or `v2fhir=debug`.
    pub level: String,
    /// Include the text of messages answered AE/AR in the logs. Contains PHI: off by default.
    pub phi: bool,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: "text".into(),
            level: "info".into(),
            phi: false,
        }
    }
}

const SECTIONS: &[&str] = &[
    "store", "mllp", "http", "mappings", "convert", "pipeline", "log", "sink", "upstream", "file",
    "forward",
];

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
#[error("config: {0}")]
pub struct ConfigError(String);

impl Config {
    /// Load: defaults, then the TOML file (if any), then `V2FHIR_<SECTION>_<KEY>` variables
    /// from `env` (e.g. `V2FHIR_STORE_URL`, `V2FHIR_MLLP_MAX_FRAME`).
    pub fn load(
        file: Option<&std::path::Path>,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let cfg = Config::read(file, env)?;
        cfg.check()?;
        Ok(cfg)
    }

    /// [`Config::load`] without the final [`Config::check`] (for `serve --check`, which lists
    /// every problem rather than the first). Only a file or value that cannot be read at all is
    /// an error here.
    pub fn read(
        file: Option<&std::path::Path>,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = match file {
            None => toml::Table::new(),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ConfigError(format!("{}: {e}", p.display())))?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError(format!("{}: {e}", p.display())))?
            }
        };
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("V2FHIR_") else {
                continue;
            };
            // `V2FHIR_SINK` is the documented short form of `V2FHIR_SINK_MODE`.
            let rest = if rest == "SINK" {
                "sink_mode".to_string()
            } else {
                rest.to_ascii_lowercase()
            };
            let Some(section) = SECTIONS.iter().find(|s| rest.starts_with(&format!("{s}_"))) else {
                continue;
            };
            let key = &rest[section.len() + 1..];
            let v = if let Ok(i) = value.parse::<i64>() {
                toml::Value::Integer(i)
            } else if let Ok(b) = value.parse::<bool>() {
                toml::Value::Boolean(b)
            } else {
                toml::Value::String(value.clone())
            };
            let sec = table
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(t) = sec {
                t.insert(key.to_string(), v);
            }
        }
        table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError(e.to_string()))
    }

    /// Check the settings (after command-line overrides): every mistake is named.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.durability()?;
        self.bundle_type()?;
        self.zone()?;
        self.sinks()?;
        match self.sink.ack.as_str() {
            "after-commit" | "after-upstream" => {}
            o => {
                return Err(ConfigError(format!(
                    "sink.ack '{o}' is not after-commit or after-upstream"
                )));
            }
        }
        if self.sinks()?.upstream {
            self.upstream_config()?;
        } else if self.sink.ack == "after-upstream" {
            return Err(ConfigError(
                "sink.ack 'after-upstream' needs sink.mode upstream or both".into(),
            ));
        }
        if self.mllp.tls_cert.is_some() != self.mllp.tls_key.is_some() {
            return Err(ConfigError(
                "mllp.tls_cert and mllp.tls_key must be given together".into(),
            ));
        }
        if self.http.tls_cert.is_some() != self.http.tls_key.is_some() {
            return Err(ConfigError(
                "http.tls_cert and http.tls_key must be given together".into(),
            ));
        }
        if self.http.jwt_jwks_file.is_some() && !self.http.jwt_jwks_url.is_empty() {
            return Err(ConfigError(
                "http.jwt_jwks_file and http.jwt_jwks_url: give one of them".into(),
            ));
        }
        if (self.http.jwt_jwks_file.is_some() || !self.http.jwt_jwks_url.is_empty())
            && (self.http.jwt_issuer.is_empty() || self.http.jwt_audience.is_empty())
        {
            return Err(ConfigError(
                "http.jwt_jwks_file or jwt_jwks_url needs http.jwt_issuer and http.jwt_audience (tokens are checked against both)".into(),
            ));
        }
        self.forward.check()?;
        if self.http.tls_client_ca.is_some() && self.http.tls_cert.is_none() {
            return Err(ConfigError(
                "http.tls_client_ca needs http.tls_cert and http.tls_key (client certificates are checked in the TLS handshake)".into(),
            ));
        }
        Ok(())
    }

    fn durability(&self) -> Result<Durability, ConfigError> {
        match self.store.durability.as_str() {
            "power-loss" => Ok(Durability::PowerLoss),
            "process-crash" => Ok(Durability::ProcessCrash),
            o => Err(ConfigError(format!(
                "store.durability '{o}' is not power-loss or process-crash"
            ))),
        }
    }

    fn bundle_type(&self) -> Result<BundleType, ConfigError> {
        BundleType::from_name(&self.convert.bundle).ok_or_else(|| {
            ConfigError(format!(
                "convert.bundle '{}' is not transaction, batch, collection or message",
                self.convert.bundle
            ))
        })
    }

    fn zone(&self) -> Result<jiff::tz::TimeZone, ConfigError> {
        jiff::tz::TimeZone::get(&self.convert.default_zone).map_err(|e| {
            ConfigError(format!(
                "convert.default_zone '{}': {e}",
                self.convert.default_zone
            ))
        })
    }

    /// Where converted messages go.
    pub fn sinks(&self) -> Result<crate::store::Sinks, ConfigError> {
        use crate::store::Sinks;
        match self.sink.mode.as_str() {
            "local" => Ok(Sinks {
                local: true,
                upstream: false,
            }),
            "upstream" => Ok(Sinks {
                local: false,
                upstream: true,
            }),
            "both" => Ok(Sinks {
                local: true,
                upstream: true,
            }),
            o => Err(ConfigError(format!(
                "sink.mode '{o}' is not local, upstream or both"
            ))),
        }
    }

    /// The forwarder settings (reads key and secret files).
    pub fn upstream_config(&self) -> Result<UpstreamConfig, ConfigError> {
        use crate::sinks::auth::{AuthConfig, SigningKey};
        let u = &self.upstream;
        if u.url.is_empty() {
            return Err(ConfigError(format!(
                "sink.mode '{}' needs upstream.url (or --upstream-url, V2FHIR_UPSTREAM_URL)",
                self.sink.mode
            )));
        }
        if !(u.url.starts_with("http://") || u.url.starts_with("https://")) {
            return Err(ConfigError(format!(
                "upstream.url '{}' is not an http(s) URL",
                u.url
            )));
        }
        let mode = DeliveryMode::from_name(&u.bundle).ok_or_else(|| {
            ConfigError(format!(
                "upstream.bundle '{}' is not transaction, batch or single",
                u.bundle
            ))
        })?;
        let conditional: std::collections::HashSet<String> = u
            .conditional
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        for t in &conditional {
            if !crate::fhir::validate::is_resource_type(t) {
                return Err(ConfigError(format!(
                    "upstream.conditional: '{t}' is not an R4 resource type"
                )));
            }
        }
        if mode == DeliveryMode::Batch && !conditional.is_empty() {
            return Err(ConfigError(
                "upstream.conditional needs upstream.bundle 'transaction' or 'single' (a batch cannot resolve references between its entries)".into(),
            ));
        }
        let read_first_line = |what: &str, path: &str| -> Result<String, ConfigError> {
            std::fs::read_to_string(path)
                .map(|t| t.lines().next().unwrap_or("").trim().to_string())
                .map_err(|e| ConfigError(format!("{what} '{path}': {e}")))
        };
        let need = |key: &str, v: &str| -> Result<(), ConfigError> {
            if v.is_empty() {
                Err(ConfigError(format!(
                    "upstream.auth '{}' needs upstream.{key}",
                    u.auth
                )))
            } else {
                Ok(())
            }
        };
        let auth = match u.auth.as_str() {
            "none" => AuthConfig::None,
            "bearer" => {
                let token = if u.token_file.is_empty() {
                    u.token.clone()
                } else {
                    read_first_line("upstream.token_file", &u.token_file)?
                };
                need("token", &token)?;
                AuthConfig::Bearer(token)
            }
            "client-credentials" => {
                need("client_id", &u.client_id)?;
                let secret = if u.client_secret_file.is_empty() {
                    u.client_secret.clone()
                } else {
                    read_first_line("upstream.client_secret_file", &u.client_secret_file)?
                };
                need("client_secret", &secret)?;
                AuthConfig::ClientCredentials {
                    token_url: u.token_url.clone(),
                    client_id: u.client_id.clone(),
                    secret,
                    scope: u.scope.clone(),
                }
            }
            "smart-backend" => {
                need("client_id", &u.client_id)?;
                need("private_key", &u.private_key)?;
                let key = SigningKey::from_pem_file(std::path::Path::new(&u.private_key), &u.alg)
                    .map_err(|e| ConfigError(format!("upstream.private_key: {e}")))?;
                AuthConfig::SmartBackend {
                    token_url: u.token_url.clone(),
                    client_id: u.client_id.clone(),
                    key: Arc::new(key),
                    key_id: u.key_id.clone(),
                    scope: u.scope.clone(),
                }
            }
            o => {
                return Err(ConfigError(format!(
                    "upstream.auth '{o}' is not none, bearer, client-credentials or smart-backend"
                )));
            }
        };
        Ok(UpstreamConfig {
            base: u.url.trim_end_matches('/').to_string(),
            timeout: Duration::from_secs(u.timeout_secs.max(1)),
            connect_timeout: Duration::from_secs(u.connect_timeout_secs.max(1)),
            mode,
            conditional,
            concurrency: u.concurrency.max(1),
            max_attempts: u.max_attempts,
            max_age: Duration::from_secs(u.max_age_secs),
            backoff_initial: Duration::from_millis(u.backoff_initial_ms.max(1)),
            backoff_max: Duration::from_secs(u.backoff_max_secs.max(1)),
            health_interval: Duration::from_secs(u.health_interval_secs.max(1)),
            auth,
        })
    }

    /// The pipeline settings this config describes.
    pub fn ingest(&self) -> Result<IngestConfig, ConfigError> {
        let mut c = IngestConfig::default();
        if self.pipeline.lanes > 0 {
            c.lanes = self.pipeline.lanes;
        }
        if self.pipeline.max_batch > 0 {
            c.max_batch = self.pipeline.max_batch;
        }
        c.convert.bundle_type = self.bundle_type()?;
        c.convert.default_zone = self.zone()?;
        c.convert.validate = self.convert.validate;
        c.log_phi = self.log.phi;
        Ok(c)
    }
}

/// A running gateway.
pub struct Running {
    /// Bound MLLP address.
    pub mllp_addr: Option<SocketAddr>,
    /// Bound HTTP address.
    pub http_addr: Option<SocketAddr>,
    /// The pipeline (and the store).
    pub pipeline: Arc<Pipeline>,
    /// The upstream forwarder (sink mode upstream or both).
    pub upstream: Option<Arc<Upstream>>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The delivery worker; stopped after the pipeline has drained.
    worker: Option<tokio::task::JoinHandle<()>>,
    /// The MLLP forwarders, one per destination; stopped after the pipeline has drained.
    forwarders: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Graceful shutdown: stop accepting, finish in-flight messages (each answered after its
    /// commit), drain the pipeline, close the store.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.pipeline.shutdown().await;
        // The worker saw `stop` too: it finishes its in-flight deliveries (recording each) and
        // leaves the rest in the outbox for the next start.
        if let Some(w) = self.worker {
            let _ = w.await;
        }
        for f in self.forwarders {
            let _ = f.await;
        }
        self.pipeline.store().close().await;
    }
}

/// `serve --check`: every problem with the settings and the files they name (mapping set, TLS
/// certificates and keys, tokens file, JWKS, the file source's directory), all at once. Binds
/// nothing, opens no store, changes nothing.
pub fn preflight(cfg: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = cfg.check() {
        problems.push(e.to_string());
    }
    if let Err(errors) = crate::mapping::load::load_dir(&cfg.mappings.dir) {
        problems.extend(
            errors
                .iter()
                .map(|e| format!("mappings ({}): {e}", cfg.mappings.dir.display())),
        );
    }
    for (what, cert, key, ca) in [
        (
            "mllp",
            &cfg.mllp.tls_cert,
            &cfg.mllp.tls_key,
            &cfg.mllp.tls_client_ca,
        ),
        (
            "http",
            &cfg.http.tls_cert,
            &cfg.http.tls_key,
            &cfg.http.tls_client_ca,
        ),
    ] {
        if let (Some(cert), Some(key)) = (cert, key)
            && let Err(e) = crate::sources::tls_acceptor(&TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: ca.clone(),
            })
        {
            problems.push(format!("{what}: {e}"));
        }
    }
    if let Some(p) = &cfg.http.tokens_file
        && let Err(e) = api::auth::Clients::load(p)
    {
        problems.push(format!("http.tokens_file: {e}"));
    }
    if let Some(p) = &cfg.http.jwt_jwks_file
        && let Err(e) = api::jwt::Verifier::load(p, &cfg.http.jwt_issuer, &cfg.http.jwt_audience)
    {
        problems.push(format!("http.jwt_jwks_file: {e}"));
    }
    if !cfg.file.dir.is_empty() {
        let dir = std::path::Path::new(&cfg.file.dir);
        if dir.exists() && !dir.is_dir() {
            problems.push(format!("file.dir {}: not a directory", dir.display()));
        }
    }
    problems
}

/// Start everything described by `cfg`. Errors name what failed (mapping errors are all listed).
pub async fn start(cfg: &Config) -> anyhow::Result<Running> {
    let plan = match crate::mapping::load::load_dir(&cfg.mappings.dir) {
        Ok(p) => Arc::new(p),
        Err(errors) => {
            let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            anyhow::bail!(
                "{} error(s) in the mapping set {}:\n{}",
                list.len(),
                cfg.mappings.dir.display(),
                list.join("\n")
            );
        }
    };
    if let Err(e) = crate::fhir::validate::warm_up() {
        anyhow::bail!("the FHIR R4 schema could not be compiled: {e}");
    }
    let sinks = cfg.sinks()?;
    crate::store::set_wal_buffer(cfg.store.wal_buffer);
    let store = Store::open(&cfg.store.url, cfg.durability()?)
        .await?
        .with_sinks(sinks)
        .with_forward(cfg.forward.filters());
    let pipeline = Pipeline::start(plan, store.clone(), cfg.ingest()?);
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut upstream = None;
    let mut worker = None;
    if sinks.upstream {
        let u = Upstream::new(cfg.upstream_config()?, store.clone())?;
        if cfg.sink.ack == "after-upstream" {
            pipeline.acknowledge_after_upstream(
                u.clone(),
                Duration::from_secs(cfg.sink.ack_timeout_secs.max(1)),
            );
        }
        worker = Some(tokio::spawn(u.clone().run(stop_rx.clone())));
        upstream = Some(u);
    }

    // The MLLP forwarder. On `stop` it finishes the exchange in flight (recording the answer);
    // what is still queued waits in the store for the next start.
    // The MLLP forwarder. On `stop` it finishes the exchange in flight (recording the answer);
    // what is still queued waits in the store for the next start.
    if cfg.forward.ack == "after-receiver" && !cfg.forward.mllp.is_empty() {
        pipeline.acknowledge_after_forward(
            crate::store::forward::DEFAULT_DESTINATION.to_string(),
            Duration::from_secs(cfg.forward.ack_timeout_secs.max(1)),
        );
    }
    let mut forwarders = Vec::new();
    for (destination, _, f) in cfg.forward.destinations() {
        let fcfg = crate::sinks::forward::ForwardConfig {
            destination,
            addr: f.mllp.clone(),
            timeout: Duration::from_secs(f.timeout_secs.max(1)),
            connect_timeout: Duration::from_secs(f.connect_timeout_secs.max(1)),
            retry_max: Duration::from_secs(f.retry_max_secs.max(1)),
            tls: f.tls()?,
            oru: crate::fhir::oru::Header {
                sending_application: f.oru_sending_application.clone(),
                sending_facility: f.oru_sending_facility.clone(),
                receiving_application: f.oru_receiving_application.clone(),
                receiving_facility: f.oru_receiving_facility.clone(),
                ..Default::default()
            },
            fhir_observations: f.fhir_observations,
            fhir_immunizations: f.fhir_immunizations,
            plan: {
                let p = pipeline.clone();
                Arc::new(move || p.plan())
            },
        };
        forwarders.push(tokio::spawn(crate::sinks::forward::run(
            fcfg,
            store.clone(),
            stop_rx.clone(),
        )));
    }
    let mut mllp_addr = None;
    if !cfg.mllp.listen.is_empty() {
        let listener = tokio::net::TcpListener::bind(&cfg.mllp.listen)
            .await
            .map_err(|e| anyhow::anyhow!("MLLP: cannot listen on {}: {e}", cfg.mllp.listen))?;
        mllp_addr = Some(listener.local_addr()?);
        let tls = match (&cfg.mllp.tls_cert, &cfg.mllp.tls_key) {
            (Some(cert), Some(key)) => Some(crate::sources::tls_acceptor(&TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: cfg.mllp.tls_client_ca.clone(),
            })?),
            _ => None,
        };
        let mcfg = mllp::MllpConfig {
            max_frame: cfg.mllp.max_frame,
            idle_timeout: Duration::from_secs(cfg.mllp.idle_timeout_secs.max(1)),
            max_connections: cfg.mllp.max_connections,
        };
        tasks.push(tokio::spawn(mllp::serve(
            listener,
            pipeline.clone(),
            mcfg,
            tls,
            stop_rx.clone(),
        )));
    }

    // The directory source's status, shared with `GET /health`.
    let file_status = (!cfg.file.dir.is_empty()).then(|| {
        (
            PathBuf::from(&cfg.file.dir),
            Arc::new(crate::sources::file::FileStatus::default()),
        )
    });
    let mut http_addr = None;
    if !cfg.http.listen.is_empty() {
        let listener = tokio::net::TcpListener::bind(&cfg.http.listen)
            .await
            .map_err(|e| anyhow::anyhow!("HTTP: cannot listen on {}: {e}", cfg.http.listen))?;
        http_addr = Some(listener.local_addr()?);
        let state = AppState {
            pipeline: pipeline.clone(),
            metrics: api::metrics_handle(),
            base_url: cfg.http.base_url.trim_end_matches('/').to_string(),
            https: cfg.http.tls_cert.is_some(),
            file: file_status.clone(),
            exports: Arc::default(),
            export_dir: cfg.http.export_dir.clone(),
            auth: {
                let tokens = match &cfg.http.tokens_file {
                    None => None,
                    Some(p) => Some(
                        api::auth::Clients::load(p)
                            .map_err(|e| anyhow::anyhow!("http.tokens_file: {e}"))?,
                    ),
                };
                let jwt = match (&cfg.http.jwt_jwks_file, cfg.http.jwt_jwks_url.as_str()) {
                    (Some(p), _) => Some(
                        api::jwt::Verifier::load(p, &cfg.http.jwt_issuer, &cfg.http.jwt_audience)
                            .map_err(|e| anyhow::anyhow!("http.jwt_jwks_file: {e}"))?,
                    ),
                    (None, "") => None,
                    (None, url) => Some(
                        api::jwt::Verifier::from_url(
                            url,
                            &cfg.http.jwt_issuer,
                            &cfg.http.jwt_audience,
                        )
                        .await
                        .map_err(|e| anyhow::anyhow!("http.jwt_jwks_url: {e}"))?,
                    ),
                };
                (tokens.is_some() || jwt.is_some())
                    .then(|| Arc::new(api::auth::Auth { tokens, jwt }))
            },
            mappings_dir: cfg.mappings.dir.clone(),
            upstream: upstream.clone(),
            proxy_reads: !sinks.local,
        };
        // Keys fetched from the identity provider's URL are fetched again periodically.
        if let Some(auth) = state.auth.clone()
            && !cfg.http.jwt_jwks_url.is_empty()
        {
            let every = Duration::from_secs(cfg.http.jwt_jwks_refresh_secs.max(10));
            let mut rx = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await; // the first fetch happened at start
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = async { drop(rx.wait_for(|s| *s).await) } => break,
                    }
                    if let Some(v) = &auth.jwt
                        && let Err(e) = v.refresh().await
                    {
                        tracing::warn!(error = %e, "fetching the identity provider's keys failed; the keys held stay");
                    }
                }
            }));
        }
        let app = api::router(
            state,
            &HttpConfig {
                max_body: cfg.http.max_body,
                timeout: Duration::from_secs(cfg.http.timeout_secs.max(1)),
            },
        );
        let tls = match (&cfg.http.tls_cert, &cfg.http.tls_key) {
            (Some(cert), Some(key)) => Some(crate::sources::tls_acceptor(&TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: cfg.http.tls_client_ca.clone(),
            })?),
            _ => None,
        };
        let mut rx = stop_rx.clone();
        match tls {
            None => tasks.push(tokio::spawn(async move {
                let r = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = rx.wait_for(|s| *s).await;
                    })
                    .await;
                if let Err(e) = r {
                    tracing::error!(error = %e, "HTTP server failed");
                }
            })),
            Some(acceptor) => {
                let listener =
                    crate::sources::TlsListener::new(listener, acceptor, stop_rx.clone())?;
                tasks.push(tokio::spawn(async move {
                    let r = axum::serve(listener, app)
                        .with_graceful_shutdown(async move {
                            let _ = rx.wait_for(|s| *s).await;
                        })
                        .await;
                    if let Err(e) = r {
                        tracing::error!(error = %e, "HTTPS server failed");
                    }
                }));
            }
        }
    }
    // The directory source.
    if let Some((dir, status)) = file_status {
        let or = |s: &str, d: &str| {
            if s.is_empty() {
                dir.join(d)
            } else {
                PathBuf::from(s)
            }
        };
        let fcfg = crate::sources::file::FileConfig {
            done_dir: or(&cfg.file.done_dir, "done"),
            error_dir: or(&cfg.file.error_dir, "error"),
            dir: dir.clone(),
            poll: Duration::from_millis(cfg.file.poll_ms.max(10)),
            settle: Duration::from_millis(cfg.file.settle_ms),
            max_bytes: cfg.file.max_bytes,
        };
        crate::sources::file::prepare_dirs(&fcfg)?;
        tasks.push(tokio::spawn(crate::sources::file::serve(
            fcfg,
            pipeline.clone(),
            status,
            stop_rx.clone(),
        )));
    }
    // Retention: the finished messages older than `store.retention_days`, every hour.
    if cfg.store.retention_days > 0 {
        let store = pipeline.store().clone();
        let days = cfg.store.retention_days;
        let mut rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = async { drop(rx.wait_for(|s| *s).await) } => break,
                }
                match crate::store::prune_older_than(&store, days).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(pruned = n, days, "message log pruned"),
                    Err(e) => tracing::warn!(error = %e, "pruning the message log failed; next try in an hour"),
                }
            }
        }));
    }
    // SIGHUP reloads the mappings (same rules as POST /admin/mappings/reload).
    #[cfg(unix)]
    {
        let pipeline = pipeline.clone();
        let dir = cfg.mappings.dir.clone();
        let mut rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                return;
            };
            loop {
                tokio::select! {
                    _ = hup.recv() => {
                        let p = pipeline.clone();
                        let d = dir.clone();
                        match tokio::task::spawn_blocking(move || p.reload(&d)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(errors)) => {
                                for e in &errors {
                                    tracing::error!(error = %e, "mapping reload refused");
                                }
                            }
                            Err(e) => tracing::error!(error = %e, "mapping reload failed"),
                        }
                    }
                    _ = rx.changed() => break,
                }
            }
        }));
    }
    Ok(Running {
        mllp_addr,
        http_addr,
        pipeline,
        upstream,
        stop,
        tasks,
        worker,
        forwarders,
    })
}

/// Install the tracing subscriber described by `[log]` (text or JSON to stderr).
pub fn init_logging(cfg: &LogSection) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: redirected to a file or a journal, escape codes are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = if cfg.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Wait for SIGINT or SIGTERM.
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn the_example_file_spells_out_the_defaults() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("v2fhir.example.toml");
        let file = Config::load(Some(&path), env(&[])).unwrap_or_else(|e| panic!("{e}"));
        let defaults = Config::default();
        assert_eq!(format!("{file:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn environment_overrides_the_file_and_types_values() {
        let c = Config::load(
            None,
            env(&[
                ("V2FHIR_STORE_URL", "postgres://u:p@127.0.0.1/db"),
                ("V2FHIR_MLLP_MAX_FRAME", "1024"),
                ("V2FHIR_MLLP_LISTEN", ""),
                ("V2FHIR_CONVERT_VALIDATE", "false"),
                ("V2FHIR_PIPELINE_LANES", "3"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.store.url, "postgres://u:p@127.0.0.1/db");
        assert_eq!(c.mllp.max_frame, 1024);
        assert_eq!(c.mllp.listen, "");
        assert!(!c.convert.validate);
        assert_eq!(c.ingest().map(|i| i.lanes).ok(), Some(3));
    }

    #[test]
    fn mistakes_are_named() {
        for (pairs, want) in [
            (
                vec![("V2FHIR_STORE_DURABILITY", "maybe")],
                "store.durability 'maybe'",
            ),
            (
                vec![("V2FHIR_CONVERT_BUNDLE", "pile")],
                "convert.bundle 'pile'",
            ),
            (
                vec![("V2FHIR_CONVERT_DEFAULT_ZONE", "Mars/Olympus")],
                "Mars/Olympus",
            ),
            (vec![("V2FHIR_MLLP_BOGUS", "1")], "bogus"),
            (
                vec![("V2FHIR_MLLP_TLS_CERT", "a.pem")],
                "tls_cert and mllp.tls_key",
            ),
            (vec![("V2FHIR_MLLP_MAX_FRAME", "big")], "max_frame"),
            (
                vec![("V2FHIR_HTTP_TLS_KEY", "k.pem")],
                "http.tls_cert and http.tls_key",
            ),
            (
                vec![("V2FHIR_HTTP_JWT_JWKS_FILE", "jwks.json")],
                "needs http.jwt_issuer and http.jwt_audience",
            ),
            (
                vec![("V2FHIR_HTTP_TLS_CLIENT_CA", "ca.pem")],
                "http.tls_client_ca needs http.tls_cert",
            ),
            (vec![("V2FHIR_SINK", "cloud")], "sink.mode 'cloud'"),
            (vec![("V2FHIR_SINK", "upstream")], "needs upstream.url"),
            (
                vec![("V2FHIR_SINK", "both"), ("V2FHIR_UPSTREAM_URL", "ftp://x")],
                "not an http(s) URL",
            ),
            (
                vec![("V2FHIR_SINK_ACK", "after-upstream")],
                "needs sink.mode upstream or both",
            ),
            (
                vec![
                    ("V2FHIR_SINK", "upstream"),
                    ("V2FHIR_UPSTREAM_URL", "http://127.0.0.1:1/fhir"),
                    ("V2FHIR_UPSTREAM_BUNDLE", "batch"),
                    ("V2FHIR_UPSTREAM_CONDITIONAL", "Patient"),
                ],
                "cannot resolve references",
            ),
            (
                vec![
                    ("V2FHIR_SINK", "upstream"),
                    ("V2FHIR_UPSTREAM_URL", "http://127.0.0.1:1/fhir"),
                    ("V2FHIR_UPSTREAM_CONDITIONAL", "Patient,Pateint"),
                ],
                "'Pateint' is not an R4 resource type",
            ),
            (
                vec![
                    ("V2FHIR_SINK", "upstream"),
                    ("V2FHIR_UPSTREAM_URL", "http://127.0.0.1:1/fhir"),
                    ("V2FHIR_UPSTREAM_AUTH", "bearer"),
                ],
                "needs upstream.token",
            ),
            (
                vec![
                    ("V2FHIR_SINK", "upstream"),
                    ("V2FHIR_UPSTREAM_URL", "http://127.0.0.1:1/fhir"),
                    ("V2FHIR_UPSTREAM_AUTH", "smart-backend"),
                    ("V2FHIR_UPSTREAM_CLIENT_ID", "gw"),
                    ("V2FHIR_UPSTREAM_PRIVATE_KEY", "/nonexistent/key.pem"),
                ],
                "upstream.private_key: /nonexistent/key.pem",
            ),
            (
                vec![("V2FHIR_FORWARD_MLLP", "no-port")],
                "forward.mllp 'no-port' is not host:port",
            ),
            (
                vec![("V2FHIR_FORWARD_ACK", "sometimes")],
                "forward.ack 'sometimes'",
            ),
            (
                vec![("V2FHIR_FORWARD_ACK", "after-receiver")],
                "needs forward.mllp",
            ),
            (
                vec![
                    ("V2FHIR_FORWARD_MLLP", "127.0.0.1:2576"),
                    ("V2FHIR_FORWARD_TYPES", "ADT|A01"),
                ],
                "forward.types: 'ADT|A01'",
            ),
            (
                vec![
                    ("V2FHIR_FORWARD_MLLP", "127.0.0.1:2576"),
                    ("V2FHIR_FORWARD_TLS_CA", "/nonexistent/ca.pem"),
                ],
                "forward.tls: /nonexistent/ca.pem",
            ),
        ] {
            match Config::load(None, env(&pairs)) {
                Ok(_) => panic!("{pairs:?} accepted"),
                Err(e) => assert!(e.to_string().contains(want), "{pairs:?}: {e}"),
            }
        }
    }

    #[test]
    fn forwarding_routes_are_read_from_the_file_and_checked() {
        let dir = std::env::temp_dir().join(format!("v2fhir-routes-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let load = |text: &str| {
            let path = dir.join("routes.toml");
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
            Config::load(Some(&path), env(&[]))
        };
        let cfg = load(
            "[forward]\nmllp = \"127.0.0.1:2576\"\ntypes = \"ADT^*\"\n\
             [forward.routes.lab]\nmllp = \"127.0.0.1:2577\"\ntypes = \"ORU^*\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<(String, Vec<String>)> = cfg
            .forward
            .filters()
            .into_iter()
            .map(|(n, f)| (n, f.types))
            .collect();
        assert_eq!(
            names,
            vec![
                ("default".to_string(), vec!["ADT^*".to_string()]),
                ("lab".to_string(), vec!["ORU^*".to_string()]),
            ]
        );
        // A route alone (no [forward] receiver) is fine.
        let cfg = load("[forward.routes.lab]\nmllp = \"127.0.0.1:2577\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.forward.filters().len(), 1);
        for (text, want) in [
            (
                "[forward.routes.lab]\ntypes = \"ORU^*\"\n",
                "forward.routes.lab.mllp ''",
            ),
            (
                "[forward.routes.default]\nmllp = \"127.0.0.1:2577\"\n",
                "'default' names [forward] itself",
            ),
            (
                "[forward.routes.lab]\nmllp = \"127.0.0.1:2577\"\n\
                 [forward.routes.lab.routes.x]\nmllp = \"127.0.0.1:2578\"\n",
                "forward.routes.lab: a route has no routes",
            ),
            (
                "[forward.routes.lab]\nmllp = \"127.0.0.1:2577\"\ntls_cert = \"c.pem\"\n\
                 tls_ca = \"ca.pem\"\n",
                "forward.routes.lab.tls_cert and forward.routes.lab.tls_key",
            ),
            ("[forward.routes.lab]\nmlp = \"127.0.0.1:2577\"\n", "mlp"),
            (
                "[forward.routes.lab]\nmllp = \"127.0.0.1:2577\"\nack = \"after-receiver\"\n",
                "only [forward] can hold the sender's ACK",
            ),
        ] {
            match load(text) {
                Ok(_) => panic!("{text:?} accepted"),
                Err(e) => assert!(e.to_string().contains(want), "{text:?}: {e}"),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
