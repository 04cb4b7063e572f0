//! Sources: where messages come in. Each source frames bytes and hands them to the ingest
//! pipeline; none of them parses HL7, converts, stores or builds ACKs (the FHIR source reads back
//! the versions the commit wrote, to answer).

pub mod fhir;
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
