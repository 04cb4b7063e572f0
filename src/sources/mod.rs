//! Sources: where messages come in. Each source frames bytes and hands them to the ingest
//! pipeline; none of them parses HL7, converts, stores or builds ACKs. The FHIR source also reads
//! the store: it searches for a request's conditions before submitting it, and reads back the
//! versions the commit wrote, to answer.

pub mod fhir;
pub mod file;
pub mod http;
pub mod mllp;

use axum::http::{HeaderMap, header};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// A request's `Content-Type` as sent, and its media type lower-cased without parameters.
pub(crate) fn media_type(headers: &HeaderMap) -> (&str, String) {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    (ct, essence)
}

/// TLS settings of a listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: std::path::PathBuf,
    /// PEM private key.
    pub key: std::path::PathBuf,
    /// PEM CA certificates: when set, clients must present a certificate signed by one of them.
    pub client_ca: Option<std::path::PathBuf>,
}

/// Why TLS could not be set up (names the file).
#[derive(Debug, thiserror::Error)]
#[error("TLS: {file}: {what}")]
pub struct TlsError {
    file: String,
    what: String,
}

fn tls_err(file: &Path, what: impl std::fmt::Display) -> TlsError {
    TlsError {
        file: file.display().to_string(),
        what: what.to_string(),
    }
}

/// Build a TLS acceptor (rustls, ring provider) from PEM files.
pub fn tls_acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| tls_err(&files.cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err(&files.cert, e))?;
    if certs.is_empty() {
        return Err(tls_err(&files.cert, "no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| tls_err(&files.key, e))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(&files.cert, e))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| tls_err(ca, e))? {
                roots
                    .add(c.map_err(|e| tls_err(ca, e))?)
                    .map_err(|e| tls_err(ca, e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| tls_err(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| tls_err(&files.key, e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The HTTP listener over TLS: TCP connections are accepted and their handshakes run in tasks of
/// their own (a slow or silent client cannot hold up the others), and axum is handed the
/// connections whose handshake succeeded. A failed handshake (no client certificate where one is
/// required, a certificate the CA did not sign, plain HTTP) is logged and the connection closed.
pub struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        std::net::SocketAddr,
    )>,
    local: std::net::SocketAddr,
}

/// How long a TLS handshake may take before the connection is closed.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl TlsListener {
    /// Accept on `tcp` with `acceptor` until `stop` turns true.
    pub fn new(
        tcp: tokio::net::TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    r = tcp.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!(error = %e, "HTTP: accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = async { drop(stop.wait_for(|s| *s).await) } => break,
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(%peer, error = %e, "HTTP TLS handshake failed")
                        }
                        Err(_) => tracing::warn!(%peer, "HTTP TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // Stopped: no more connections (the server is shutting down gracefully).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
