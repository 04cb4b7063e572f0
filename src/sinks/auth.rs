//! Credentials for the upstream FHIR server: a static bearer token, OAuth2 client credentials
//! (client secret), or SMART Backend Services (a JWT client assertion signed with RS384 or ES384).
//! Tokens are cached and fetched again before they expire (or at once after a 401).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use std::time::{Duration, Instant};

/// How to authenticate (from `[upstream]`).
#[derive(Debug, Clone, Default)]
pub enum AuthConfig {
    /// No credentials.
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// OAuth2 `client_credentials` with a client secret (HTTP Basic to the token endpoint).
    ClientCredentials {
        /// Token endpoint; empty = discovered from `.well-known/smart-configuration`.
        token_url: String,
        /// Client id.
        client_id: String,
        /// Client secret.
        secret: String,
        /// Requested scope (may be empty).
        scope: String,
    },
    /// SMART Backend Services: `client_credentials` with a `private_key_jwt` assertion.
    SmartBackend {
        /// Token endpoint; empty = discovered.
        token_url: String,
        /// Client id (the JWT's `iss` and `sub`).
        client_id: String,
        /// The signing key.
        key: std::sync::Arc<SigningKey>,
        /// `kid` header, if the server wants one.
        key_id: String,
        /// Requested scope.
        scope: String,
    },
}

/// A private key for JWT client assertions.
pub enum SigningKey {
    /// RSA, signed RS384 (RSASSA-PKCS1-v1_5 with SHA-384).
    Rs384(ring::rsa::KeyPair),
    /// ECDSA P-384, signed ES384.
    Es384(ring::signature::EcdsaKeyPair),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SigningKey::Rs384(_) => "SigningKey(RS384)",
            SigningKey::Es384(_) => "SigningKey(ES384)",
        })
    }
}

impl SigningKey {
    /// Load a PEM private key (`PRIVATE KEY` = PKCS#8, or `RSA PRIVATE KEY` = PKCS#1) for `alg`
    /// (`RS384` or `ES384`). EC keys must be PKCS#8 (`openssl pkcs8 -topk8 -nocrypt`).
    pub fn from_pem_file(path: &std::path::Path, alg: &str) -> Result<SigningKey, String> {
        use rustls_pki_types::PrivateKeyDer;
        use rustls_pki_types::pem::PemObject;
        let where_ = path.display();
        let key = PrivateKeyDer::from_pem_file(path)
            .map_err(|e| format!("{where_}: no PEM private key could be read: {e}"))?;
        match (alg, &key) {
            ("RS384", PrivateKeyDer::Pkcs8(der)) => {
                ring::rsa::KeyPair::from_pkcs8(der.secret_pkcs8_der())
                    .map(SigningKey::Rs384)
                    .map_err(|e| format!("{where_}: not an RSA PKCS#8 key usable for RS384: {e}"))
            }
            ("RS384", PrivateKeyDer::Pkcs1(der)) => {
                ring::rsa::KeyPair::from_der(der.secret_pkcs1_der())
                    .map(SigningKey::Rs384)
                    .map_err(|e| format!("{where_}: not an RSA key usable for RS384: {e}"))
            }
            ("ES384", PrivateKeyDer::Pkcs8(der)) => ring::signature::EcdsaKeyPair::from_pkcs8(
                &ring::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                der.secret_pkcs8_der(),
                &ring::rand::SystemRandom::new(),
            )
            .map(SigningKey::Es384)
            .map_err(|e| format!("{where_}: not a P-384 PKCS#8 key usable for ES384: {e}")),
            ("ES384", _) => Err(format!(
                "{where_}: ES384 needs a PKCS#8 key ('BEGIN PRIVATE KEY'); convert with `openssl pkcs8 -topk8 -nocrypt`"
            )),
            ("RS384", _) => Err(format!(
                "{where_}: RS384 needs an RSA key in PKCS#8 or PKCS#1 PEM"
            )),
            (other, _) => Err(format!("upstream.alg '{other}' is not RS384 or ES384")),
        }
    }

    fn alg(&self) -> &'static str {
        match self {
            SigningKey::Rs384(_) => "RS384",
            SigningKey::Es384(_) => "ES384",
        }
    }

    fn sign(&self, input: &[u8]) -> Result<Vec<u8>, String> {
        let rng = ring::rand::SystemRandom::new();
        match self {
            SigningKey::Rs384(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&ring::signature::RSA_PKCS1_SHA384, &rng, input, &mut sig)
                    .map_err(|_| "RS384 signing failed".to_string())?;
                Ok(sig)
            }
            SigningKey::Es384(k) => k
                .sign(&rng, input)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| "ES384 signing failed".to_string()),
        }
    }
}

/// A signed SMART Backend Services client assertion (RFC 7523) for `token_url`.
pub fn client_assertion(
    key: &SigningKey,
    client_id: &str,
    key_id: &str,
    token_url: &str,
    now_secs: i64,
) -> Result<String, String> {
    let mut header = serde_json::json!({"alg": key.alg(), "typ": "JWT"});
    if !key_id.is_empty() {
        header["kid"] = key_id.into();
    }
    let mut jti = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut jti)
        .map_err(|_| "no randomness for the JWT id".to_string())?;
    let claims = serde_json::json!({
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        // SMART: no more than five minutes ahead.
        "exp": now_secs + 240,
        "iat": now_secs,
        "jti": jti.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    });
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let sig = key.sign(input.as_bytes())?;
    Ok(format!("{input}.{}", B64.encode(sig)))
}

/// Why no credentials could be had. The text names the endpoint, never a secret.
#[derive(Debug, thiserror::Error)]
#[error("upstream auth: {0}")]
pub struct AuthError(pub String);

struct Cached {
    token: String,
    refresh_at: Instant,
}

/// Credentials with a token cache.
pub struct Auth {
    cfg: AuthConfig,
    base: String,
    cache: tokio::sync::Mutex<Option<Cached>>,
}

impl Auth {
    /// Credentials for the upstream at `base`.
    pub fn new(cfg: AuthConfig, base: &str) -> Auth {
        Auth {
            cfg,
            base: base.trim_end_matches('/').to_string(),
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// The `Authorization` header value to send, fetching a token when needed.
    pub async fn header(&self, client: &reqwest::Client) -> Result<Option<String>, AuthError> {
        match &self.cfg {
            AuthConfig::None => Ok(None),
            AuthConfig::Bearer(t) => Ok(Some(format!("Bearer {t}"))),
            _ => {
                let mut cache = self.cache.lock().await;
                if let Some(c) = cache.as_ref()
                    && Instant::now() < c.refresh_at
                {
                    return Ok(Some(format!("Bearer {}", c.token)));
                }
                let (token, lifetime) = self.fetch(client).await?;
                // Refresh a minute before expiry (or at 80 % of a short lifetime).
                let early = Duration::from_secs(60).min(lifetime / 5);
                *cache = Some(Cached {
                    token: token.clone(),
                    refresh_at: Instant::now() + lifetime.saturating_sub(early),
                });
                metrics::counter!("v2fhir_upstream_token_fetches_total").increment(1);
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    /// Forget the cached token (after a 401).
    pub async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }

    async fn token_url(
        &self,
        client: &reqwest::Client,
        configured: &str,
    ) -> Result<String, AuthError> {
        if !configured.is_empty() {
            return Ok(configured.to_string());
        }
        let url = format!("{}/.well-known/smart-configuration", self.base);
        let v: serde_json::Value = client
            .get(&url)
            .header("accept", "application/json")
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| AuthError(format!("discovering the token endpoint at {url}: {e}")))?
            .json()
            .await
            .map_err(|e| AuthError(format!("{url}: not JSON: {e}")))?;
        v.get("token_endpoint")
            .and_then(|t| t.as_str())
            .map(String::from)
            .ok_or_else(|| {
                AuthError(format!(
                    "{url} names no token_endpoint; set upstream.token_url"
                ))
            })
    }

    async fn fetch(&self, client: &reqwest::Client) -> Result<(String, Duration), AuthError> {
        let (token_url, req) = match &self.cfg {
            AuthConfig::ClientCredentials {
                token_url,
                client_id,
                secret,
                scope,
            } => {
                let url = self.token_url(client, token_url).await?;
                let mut form = vec![("grant_type", "client_credentials".to_string())];
                if !scope.is_empty() {
                    form.push(("scope", scope.clone()));
                }
                let req = client
                    .post(&url)
                    .basic_auth(client_id, Some(secret))
                    .form(&form);
                (url, req)
            }
            AuthConfig::SmartBackend {
                token_url,
                client_id,
                key,
                key_id,
                scope,
            } => {
                let url = self.token_url(client, token_url).await?;
                let now = jiff::Timestamp::now().as_second();
                let assertion =
                    client_assertion(key, client_id, key_id, &url, now).map_err(AuthError)?;
                let mut form = vec![
                    ("grant_type", "client_credentials".to_string()),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_string(),
                    ),
                    ("client_assertion", assertion),
                ];
                if !scope.is_empty() {
                    form.push(("scope", scope.clone()));
                }
                (url.clone(), client.post(&url).form(&form))
            }
            AuthConfig::None | AuthConfig::Bearer(_) => {
                return Err(AuthError("no token endpoint for this auth type".into()));
            }
        };
        let resp = req
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| AuthError(format!("token request to {token_url}: {e}")))?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.map_err(|e| {
            AuthError(format!(
                "token endpoint {token_url} answered {status} without JSON: {e}"
            ))
        })?;
        if !status.is_success() {
            let err = body.get("error").and_then(|v| v.as_str()).unwrap_or("");
            let desc = body
                .get("error_description")
                .and_then(|v| v.as_str())
                .unwrap_or("");
            return Err(AuthError(format!(
                "token endpoint {token_url} answered {status}: {err} {desc}"
            )));
        }
        let token = body
            .get("access_token")
            .and_then(|v| v.as_str())
            .ok_or_else(|| {
                AuthError(format!(
                    "token endpoint {token_url} returned no access_token"
                ))
            })?;
        let lifetime = body
            .get("expires_in")
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .unwrap_or(300);
        Ok((token.to_string(), Duration::from_secs(lifetime.max(1))))
    }
}
