//! OAuth2 access tokens as signed JWTs (an identity provider's client-credentials tokens, SMART
//! Backend Services), verified with the provider's public keys (`http.jwt_jwks_file`, a JWKS):
//! signature (RS256, RS384, ES256, ES384 — nothing else, never `none`), `iss`, `aud`, `exp`
//! and `nbf` (60 s of clock skew allowed). The `scope` claim (or `scp`) grants scopes: ours
//! (`fhir-write`, also as `v2fhir/fhir-write`) and SMART system scopes (`system/*.read` or
//! `.rs` → fhir-read, `system/*.write` or `.cud` → fhir-write, `system/*.*` → both).

use super::auth::Scope;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::Value;

/// Allowed clock skew, seconds.
const LEEWAY: i64 = 60;

#[derive(Debug, Clone)]
enum Key {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    P256(Vec<u8>),
    P384(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Jwk {
    kid: Option<String>,
    key: Key,
}

/// The verifier: the provider's keys, and the issuer and audience tokens must name.
#[derive(Debug)]
pub struct Verifier {
    keys: std::sync::RwLock<Vec<Jwk>>,
    issuer: String,
    audience: String,
    /// Where the keys come from when they are fetched (`http.jwt_jwks_url`).
    url: Option<JwksUrl>,
}

/// A JWKS URL and when it was last fetched.
#[derive(Debug)]
struct JwksUrl {
    url: String,
    client: reqwest::Client,
    last: std::sync::Mutex<Option<std::time::Instant>>,
}

/// A token naming a key id that is not (yet) among the keys: after a rotation, fetching the
/// keys again may find it; at most this often (tokens with made-up key ids cannot make the
/// gateway hammer the provider).
const REFETCH_FOR_UNKNOWN_KID: std::time::Duration = std::time::Duration::from_secs(5);

/// A verified token: who, and what it may do.
#[derive(Debug, Clone)]
pub struct Claims {
    /// `client_id`, `azp` or `sub`.
    pub client: String,
    /// Granted scopes.
    pub scopes: Vec<Scope>,
}

fn b64(s: &str) -> Option<Vec<u8>> {
    B64.decode(s.trim_end_matches('=')).ok()
}

impl Verifier {
    /// Read a JWKS file; every key that cannot be used is an error naming it.
    pub fn load(path: &std::path::Path, issuer: &str, audience: &str) -> Result<Verifier, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Verifier::parse(&text, issuer, audience).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parse a JWKS document.
    pub fn parse(text: &str, issuer: &str, audience: &str) -> Result<Verifier, String> {
        Ok(Verifier {
            keys: std::sync::RwLock::new(parse_keys(text)?),
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            url: None,
        })
    }

    /// Keys fetched from the provider's JWKS URL (`http.jwt_jwks_url`), now and by
    /// [`Verifier::refresh`]. A first fetch that fails is logged, not fatal: tokens are refused
    /// until a fetch succeeds.
    pub async fn from_url(url: &str, issuer: &str, audience: &str) -> Result<Verifier, String> {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(format!("'{url}' is not an http(s) URL"));
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let v = Verifier {
            keys: std::sync::RwLock::new(Vec::new()),
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            url: Some(JwksUrl {
                url: url.to_string(),
                client,
                last: std::sync::Mutex::new(None),
            }),
        };
        if let Err(e) = v.refresh().await {
            tracing::warn!(error = %e, "the identity provider's keys could not be fetched; tokens are refused until they are");
        }
        Ok(v)
    }

    /// Fetch the keys again (a no-op for keys from a file). On failure the keys held stay.
    pub async fn refresh(&self) -> Result<usize, String> {
        let Some(u) = &self.url else {
            return Ok(0);
        };
        if let Ok(mut last) = u.last.lock() {
            *last = Some(std::time::Instant::now());
        }
        let r = u
            .client
            .get(&u.url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| format!("GET {}: {e}", u.url))?;
        if !r.status().is_success() {
            return Err(format!("GET {}: HTTP {}", u.url, r.status()));
        }
        let text = r.text().await.map_err(|e| format!("GET {}: {e}", u.url))?;
        let keys = parse_keys(&text).map_err(|e| format!("{}: {e}", u.url))?;
        let n = keys.len();
        if let Ok(mut held) = self.keys.write() {
            *held = keys;
        }
        Ok(n)
    }

    /// [`Verifier::verify`] at the current time; a token whose key id is unknown makes the keys
    /// be fetched again first (a rotation), at most every 5 s.
    pub async fn verify_now(&self, token: &str) -> Result<Claims, String> {
        let now = jiff::Timestamp::now().as_second();
        if let Some(u) = &self.url
            && let Some(kid) = kid_of(token)
            && !self.has_kid(&kid)
        {
            let due = u
                .last
                .lock()
                .map(|l| l.is_none_or(|t| t.elapsed() >= REFETCH_FOR_UNKNOWN_KID))
                .unwrap_or(false);
            if due && let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "fetching the identity provider's keys failed");
            }
        }
        self.verify(token, now)
    }

    fn has_kid(&self, kid: &str) -> bool {
        self.keys
            .read()
            .map(|k| k.iter().any(|j| j.kid.as_deref() == Some(kid)))
            .unwrap_or(false)
    }
}

/// Does `sig` over `signed` verify with `key` under `alg`? Only RS256, RS384, ES256, ES384.
fn signature_ok(alg: &str, key: &Key, signed: &[u8], sig: &[u8]) -> bool {
    use ring::signature as rs;
    match (alg, key) {
        ("RS256", Key::Rsa { n, e }) => rs::RsaPublicKeyComponents { n, e }
            .verify(&rs::RSA_PKCS1_2048_8192_SHA256, signed, sig)
            .is_ok(),
        ("RS384", Key::Rsa { n, e }) => rs::RsaPublicKeyComponents { n, e }
            .verify(&rs::RSA_PKCS1_2048_8192_SHA384, signed, sig)
            .is_ok(),
        ("ES256", Key::P256(point)) => {
            rs::UnparsedPublicKey::new(&rs::ECDSA_P256_SHA256_FIXED, point)
                .verify(signed, sig)
                .is_ok()
        }
        ("ES384", Key::P384(point)) => {
            rs::UnparsedPublicKey::new(&rs::ECDSA_P384_SHA384_FIXED, point)
                .verify(signed, sig)
                .is_ok()
        }
        _ => false,
    }
}

/// The `kid` of a token's header, if it has one.
fn kid_of(token: &str) -> Option<String> {
    let header: Value =
        b64(token.split('.').next()?).and_then(|b| serde_json::from_slice(&b).ok())?;
    header
        .get("kid")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// The keys of a JWKS document.
fn parse_keys(text: &str) -> Result<Vec<Jwk>, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Some(list) = doc.get("keys").and_then(Value::as_array) else {
        return Err("not a JWKS (no \"keys\" array)".into());
    };
    let mut keys = Vec::new();
    for (i, k) in list.iter().enumerate() {
        let field = |name: &str| -> Result<Vec<u8>, String> {
            k.get(name)
                .and_then(Value::as_str)
                .and_then(b64)
                .ok_or_else(|| format!("keys[{i}]: '{name}' is missing or not base64url"))
        };
        let key = match (
            k.get("kty").and_then(Value::as_str),
            k.get("crv").and_then(Value::as_str),
        ) {
            (Some("RSA"), _) => Key::Rsa {
                n: field("n")?,
                e: field("e")?,
            },
            (Some("EC"), Some(crv @ ("P-256" | "P-384"))) => {
                let (x, y) = (field("x")?, field("y")?);
                let len = if crv == "P-256" { 32 } else { 48 };
                if x.len() != len || y.len() != len {
                    return Err(format!("keys[{i}]: x and y must be {len} bytes for {crv}"));
                }
                let mut point = vec![4u8];
                point.extend(x);
                point.extend(y);
                if crv == "P-256" {
                    Key::P256(point)
                } else {
                    Key::P384(point)
                }
            }
            (kty, crv) => {
                return Err(format!(
                    "keys[{i}]: kty {kty:?} crv {crv:?} is not supported (RSA, EC P-256, EC P-384)"
                ));
            }
        };
        keys.push(Jwk {
            kid: k.get("kid").and_then(Value::as_str).map(str::to_string),
            key,
        });
    }
    if keys.is_empty() {
        return Err("the JWKS has no key".into());
    }
    Ok(keys)
}

impl Verifier {
    /// Verify `token` at `now` (seconds since the epoch). The error says what is wrong (never
    /// the token).
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, String> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a JWT (three dot-separated parts)".into());
        };
        let header: Value = b64(h)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("the JWT header is not base64url JSON")?;
        let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
        let kid = header.get("kid").and_then(Value::as_str);
        let sig = b64(s).ok_or("the JWT signature is not base64url")?;
        let signed = &token.as_bytes()[..h.len() + 1 + p.len()];
        // The keys are only read here (no await): no copy of them per token.
        let verified = {
            let keys = self
                .keys
                .read()
                .map_err(|_| "the identity provider's keys are unavailable (a fetch panicked)")?;
            if keys.is_empty() {
                return Err("the identity provider's keys are not loaded (yet)".into());
            }
            keys.iter()
                .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
                .any(|k| signature_ok(alg, &k.key, signed, &sig))
        };
        if !verified {
            return Err(match alg {
                "RS256" | "RS384" | "ES256" | "ES384" => {
                    "the JWT signature does not verify with the configured keys".into()
                }
                other => format!("JWT alg '{other}' is not accepted (RS256, RS384, ES256, ES384)"),
            });
        }
        let claims: Value = b64(p)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("the JWT payload is not base64url JSON")?;
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err("the JWT issuer (iss) is not the configured one".into());
        }
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => *a == self.audience,
            Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(self.audience.as_str())),
            _ => false,
        };
        if !aud_ok {
            return Err("the JWT audience (aud) does not name this gateway".into());
        }
        match claims.get("exp").and_then(Value::as_i64) {
            Some(exp) if exp + LEEWAY > now => {}
            Some(_) => return Err("the JWT has expired".into()),
            None => return Err("the JWT has no expiry (exp)".into()),
        }
        if let Some(nbf) = claims.get("nbf").and_then(Value::as_i64)
            && nbf - LEEWAY > now
        {
            return Err("the JWT is not valid yet (nbf)".into());
        }
        let scope_text: Vec<String> = match (claims.get("scope"), claims.get("scp")) {
            (Some(Value::String(s)), _) | (None, Some(Value::String(s))) => {
                s.split_whitespace().map(str::to_string).collect()
            }
            (None, Some(Value::Array(a))) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        let mut scopes = Vec::new();
        for s in &scope_text {
            scopes.extend(scopes_of(s));
        }
        scopes.sort_by_key(|s| *s as u8);
        scopes.dedup();
        let client = ["client_id", "azp", "sub"]
            .iter()
            .find_map(|c| claims.get(*c).and_then(Value::as_str))
            .unwrap_or("unnamed")
            .to_string();
        Ok(Claims { client, scopes })
    }
}

/// The scopes one scope string grants.
fn scopes_of(s: &str) -> Vec<Scope> {
    let ours = s.strip_prefix("v2fhir/").unwrap_or(s);
    if let Some(sc) = Scope::parse(ours) {
        return vec![sc];
    }
    // SMART v1 (`.read`, `.write`, `.*`) and v2 (`.rs`, `.cud`, `.cruds`) system scopes.
    let Some(rest) = s.strip_prefix("system/") else {
        return Vec::new();
    };
    let Some((_, access)) = rest.split_once('.') else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let read = access == "*" || access == "read" || (access.contains('r') && access != "write");
    let write = access == "*"
        || access == "write"
        || (access != "read"
            && (access.contains('c') || access.contains('u') || access.contains('d')));
    if read {
        out.push(Scope::FhirRead);
    }
    if write {
        out.push(Scope::FhirWrite);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_and_own_scopes_map_to_scopes() {
        assert_eq!(scopes_of("system/*.read"), vec![Scope::FhirRead]);
        assert_eq!(scopes_of("system/Observation.rs"), vec![Scope::FhirRead]);
        assert_eq!(scopes_of("system/*.write"), vec![Scope::FhirWrite]);
        assert_eq!(scopes_of("system/*.cud"), vec![Scope::FhirWrite]);
        assert_eq!(
            scopes_of("system/*.*"),
            vec![Scope::FhirRead, Scope::FhirWrite]
        );
        assert_eq!(scopes_of("v2fhir/ops"), vec![Scope::Ops]);
        assert_eq!(scopes_of("v2-write"), vec![Scope::V2Write]);
        assert!(scopes_of("patient/*.read").is_empty());
        assert!(scopes_of("openid").is_empty());
    }

    #[test]
    fn a_bad_jwks_is_named() {
        for (text, says) in [
            ("nope", "not JSON"),
            ("{}", "no \"keys\""),
            (r#"{"keys": []}"#, "no key"),
            (r#"{"keys": [{"kty": "oct", "k": "AA"}]}"#, "not supported"),
            (
                r#"{"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}"#,
                "32 bytes",
            ),
        ] {
            let e = Verifier::parse(text, "i", "a").expect_err(text);
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
