//! `v2fhir serve`: configuration (defaults → TOML file → `V2FHIR_*` environment → command line),
//! start-up (mappings, store with migrations, pipeline, listeners) and graceful shutdown.

use crate::api::{self, AppState, HttpConfig};
use crate::ingest::{IngestConfig, Pipeline};
use crate::mapping::eval::BundleType;
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
}

/// `[store]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// `sqlite://data/v2fhir.db` (default) or `postgres://user:pass@host/db`.
    pub url: String,
    /// `power-loss` (fsync per group commit, default) or `process-crash` (SQLite NORMAL).
    pub durability: String,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            url: "sqlite://data/v2fhir.db".into(),
            durability: "power-loss".into(),
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
}

impl Default for HttpSection {
    fn default() -> Self {
        let d = HttpConfig::default();
        HttpSection {
            listen: "127.0.0.1:8080".into(),
            max_body: d.max_body,
            timeout_secs: d.timeout.as_secs(),
            base_url: String::new(),
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
    /// Parse/convert threads (0 = number of CPUs).
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
    "store", "mllp", "http", "mappings", "convert", "pipeline", "log",
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
            let rest = rest.to_ascii_lowercase();
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
        let cfg: Config = table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError(e.to_string()))?;
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), ConfigError> {
        self.durability()?;
        self.bundle_type()?;
        self.zone()?;
        if self.mllp.tls_cert.is_some() != self.mllp.tls_key.is_some() {
            return Err(ConfigError(
                "mllp.tls_cert and mllp.tls_key must be given together".into(),
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
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
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
        self.pipeline.store().close().await;
    }
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
    let store = Store::open(&cfg.store.url, cfg.durability()?).await?;
    let pipeline = Pipeline::start(plan, store.clone(), cfg.ingest()?);
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();

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
            mappings_dir: cfg.mappings.dir.clone(),
        };
        let app = api::router(
            state,
            &HttpConfig {
                max_body: cfg.http.max_body,
                timeout: Duration::from_secs(cfg.http.timeout_secs.max(1)),
            },
        );
        let mut rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let r = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "HTTP server failed");
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
        stop,
        tasks,
    })
}

/// Install the tracing subscriber described by `[log]` (text or JSON to stderr).
pub fn init_logging(cfg: &LogSection) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
        ] {
            match Config::load(None, env(&pairs)) {
                Ok(_) => panic!("{pairs:?} accepted"),
                Err(e) => assert!(e.to_string().contains(want), "{pairs:?}: {e}"),
            }
        }
    }
}
