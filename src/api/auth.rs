//! Bearer tokens with scopes for the HTTP API (`http.tokens_file`).
//!
//! The file names each client, what it may do, and the SHA-256 of its token (the tokens
//! themselves are never stored):
//!
//! ```text
//! # name      scopes                  sha256 of the token (hex)
//! wearables   fhir-write              9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//! lab-app     fhir-read               …
//! ehr         v2-write,fhir-read      …
//! oncall      ops                     …
//! ```
//!
//! Scopes: `v2-write` (`/v2/…`), `fhir-read` (`GET /fhir/…`, `_search`), `fhir-write` (FHIR
//! writes), `ops` (`/messages…`, `/admin/…`, `/metrics`). Open without a token: `/health`,
//! `/health/live` (probes; no PHI) and `/fhir/metadata` (what the server supports). A token not
//! in the file may be a JWT of an identity provider ([`super::jwt`], `http.jwt_jwks_file`).
//! Without either, every endpoint is open, as before (loopback by default).

use super::ApiError;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

/// What a client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Send HL7 v2 messages (`POST /v2/messages`, `POST /v2/$convert`).
    V2Write,
    /// Read and search the FHIR facade.
    FhirRead,
    /// Write FHIR resources (`POST /fhir`, create, update, delete).
    FhirWrite,
    /// The message log, reprocessing, mapping reloads, metrics.
    Ops,
}

impl Scope {
    pub(crate) fn parse(s: &str) -> Option<Scope> {
        match s {
            "v2-write" => Some(Scope::V2Write),
            "fhir-read" => Some(Scope::FhirRead),
            "fhir-write" => Some(Scope::FhirWrite),
            "ops" => Some(Scope::Ops),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scope::V2Write => "v2-write",
            Scope::FhirRead => "fhir-read",
            Scope::FhirWrite => "fhir-write",
            Scope::Ops => "ops",
        }
    }
}

/// One client of the tokens file.
#[derive(Debug, Clone)]
struct Client {
    name: String,
    scopes: Vec<Scope>,
}

/// Who may call: clients of the tokens file, and/or JWTs of an identity provider.
#[derive(Debug, Default)]
pub struct Auth {
    /// `http.tokens_file`.
    pub tokens: Option<Clients>,
    /// `http.jwt_jwks_file` with `http.jwt_issuer` and `http.jwt_audience`.
    pub jwt: Option<super::jwt::Verifier>,
}

/// The clients, by the SHA-256 of their token.
#[derive(Debug, Default)]
pub struct Clients {
    by_hash: HashMap<[u8; 32], Client>,
}

impl Clients {
    /// Read a tokens file; every mistake is reported as `file:line: what`.
    pub fn load(path: &std::path::Path) -> Result<Clients, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Clients::parse(&text, &path.display().to_string())
    }

    /// Parse the text of a tokens file (`origin` names it in errors).
    pub fn parse(text: &str, origin: &str) -> Result<Clients, String> {
        let mut clients = Clients::default();
        let mut errors = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let at = format!("{origin}:{}", n + 1);
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [name, scopes, hash] = parts.as_slice() else {
                errors.push(format!(
                    "{at}: expected `NAME SCOPES SHA256`, found {} field(s)",
                    parts.len()
                ));
                continue;
            };
            let mut list = Vec::new();
            for s in scopes.split(',') {
                match Scope::parse(s) {
                    Some(sc) => list.push(sc),
                    None => errors.push(format!(
                        "{at}: unknown scope '{s}' (v2-write, fhir-read, fhir-write, ops)"
                    )),
                }
            }
            let Some(digest) = hex32(hash) else {
                errors.push(format!(
                    "{at}: the third field must be the token's SHA-256 in hex (64 characters), e.g. from `printf %s TOKEN | sha256sum`"
                ));
                continue;
            };
            if clients.by_hash.contains_key(&digest) {
                errors.push(format!("{at}: the same token hash is listed twice"));
                continue;
            }
            clients.by_hash.insert(
                digest,
                Client {
                    name: name.to_string(),
                    scopes: list,
                },
            );
        }
        if clients.by_hash.is_empty() && errors.is_empty() {
            errors.push(format!("{origin}: no client is listed"));
        }
        if errors.is_empty() {
            Ok(clients)
        } else {
            Err(errors.join("\n"))
        }
    }

    fn client(&self, token: &str) -> Option<&Client> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_hash.get(&digest)
    }
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let text = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// The scope a request needs; `None`: open.
pub fn required(method: &Method, path: &str) -> Option<Scope> {
    match path {
        "/health" | "/health/live" | "/fhir/metadata" => return None,
        _ => {}
    }
    // Bulk export reads (its status and files too, and deleting a job of one's own).
    if path.starts_with("/fhir/$export") {
        return Some(Scope::FhirRead);
    }
    if path == "/fhir" || path.starts_with("/fhir/") {
        let read = method == Method::GET
            || method == Method::HEAD
            || (method == Method::POST && path.ends_with("/_search"));
        return Some(if read {
            Scope::FhirRead
        } else {
            Scope::FhirWrite
        });
    }
    if path.starts_with("/v2/") {
        return Some(Scope::V2Write);
    }
    Some(Scope::Ops)
}

/// The middleware: a request to a protected endpoint needs `Authorization: Bearer TOKEN` of a
/// listed client with the scope (401 without a known token, 403 without the scope).
pub async fn check(State(auth): State<Option<Arc<Auth>>>, req: Request, next: Next) -> Response {
    let Some(auth) = auth else {
        return next.run(req).await;
    };
    let Some(scope) = required(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (kind, rest) = v.trim().split_once(' ')?;
            kind.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    // A token of the tokens file, else a JWT the identity provider signed.
    let found: Result<Client, String> = match token {
        None => Err("this endpoint needs Authorization: Bearer TOKEN".into()),
        Some(t) => match auth.tokens.as_ref().and_then(|c| c.client(t)) {
            Some(c) => Ok(c.clone()),
            None => match &auth.jwt {
                Some(v) if t.contains('.') => v.verify_now(t).await.map(|c| Client {
                    name: c.client,
                    scopes: c.scopes,
                }),
                _ => Err("the bearer token is not known".into()),
            },
        },
    };
    let client = match found {
        Ok(c) => c,
        Err(why) => {
            let mut res = ApiError::new(StatusCode::UNAUTHORIZED, "login", why).into_response();
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"v2fhir\""),
            );
            return res;
        }
    };
    if !client.scopes.contains(&scope) {
        tracing::warn!(client = %client.name, scope = scope.name(), method = %req.method(), "request refused: scope missing");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "client '{}' does not have scope {} needed for {} {}",
                client.name,
                scope.name(),
                req.method(),
                req.uri().path()
            ),
        )
        .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"; // "test"

    #[test]
    fn the_file_names_clients_scopes_and_token_hashes() {
        let c = Clients::parse(
            &format!("# comment\nwatch  fhir-write,fhir-read {H}\n"),
            "t",
        )
        .expect("parses");
        let w = c.client("test").expect("known");
        assert_eq!(w.name, "watch");
        assert_eq!(w.scopes, vec![Scope::FhirWrite, Scope::FhirRead]);
        assert!(c.client("other").is_none());
    }

    #[test]
    fn mistakes_are_reported_with_their_line() {
        let e = Clients::parse(
            &format!("a fhir-write\nb banana {H}\nc ops abc\n"),
            "tokens",
        )
        .expect_err("bad");
        assert!(e.contains("tokens:1: expected"), "{e}");
        assert!(e.contains("tokens:2: unknown scope 'banana'"), "{e}");
        assert!(e.contains("tokens:3: the third field"), "{e}");
        assert!(Clients::parse("# nothing\n", "t").is_err());
    }

    #[test]
    fn each_endpoint_needs_its_scope() {
        let cases = [
            (Method::GET, "/health", None),
            (Method::GET, "/health/live", None),
            (Method::GET, "/fhir/metadata", None),
            (Method::GET, "/fhir/Patient", Some(Scope::FhirRead)),
            (Method::POST, "/fhir/Patient/_search", Some(Scope::FhirRead)),
            (Method::POST, "/fhir/Patient", Some(Scope::FhirWrite)),
            (
                Method::POST,
                "/fhir/Observation/$validate",
                Some(Scope::FhirWrite),
            ),
            (Method::POST, "/fhir", Some(Scope::FhirWrite)),
            (Method::PUT, "/fhir/Patient/1", Some(Scope::FhirWrite)),
            (Method::DELETE, "/fhir/Patient/1", Some(Scope::FhirWrite)),
            (Method::POST, "/v2/messages", Some(Scope::V2Write)),
            (Method::GET, "/messages", Some(Scope::Ops)),
            (Method::POST, "/admin/mappings/reload", Some(Scope::Ops)),
            (Method::GET, "/metrics", Some(Scope::Ops)),
            (Method::GET, "/fhir/$export", Some(Scope::FhirRead)),
            (
                Method::DELETE,
                "/fhir/$export-status/x",
                Some(Scope::FhirRead),
            ),
            (Method::GET, "/anything-else", Some(Scope::Ops)),
        ];
        for (m, p, want) in cases {
            assert_eq!(required(&m, p), want, "{m} {p}");
        }
    }
}
