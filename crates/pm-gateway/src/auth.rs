//! Tokens: JWTs with `sub` (user id), `tid` (tenant id), `exp` (required) and optional
//! `name` and `email` (kept as the user's profile: see `Tenant::remember_user`). The algorithm is pinned by configuration: a token that names another algorithm
//! (including `none`) is refused before its signature is looked at.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use pm_core::{TenantId, UserId};
use serde::{Deserialize, Serialize};

use crate::settings::AuthSettings;

/// Shortest HS256 secret accepted.
pub const MIN_SECRET_BYTES: usize = 32;

/// The claims a token carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Tenant id.
    pub tid: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Email address, shown to people who share a project with the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Not valid before, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// Who a valid token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The tenant.
    pub tenant: TenantId,
    /// The user.
    pub user: UserId,
    /// Display name, if any.
    pub name: Option<String>,
    /// Email address, if any.
    pub email: Option<String>,
    /// Expiry, Unix milliseconds.
    pub expires_at_ms: i64,
}

/// Why a token was refused. The text is safe to send to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The token is malformed, badly signed, for another algorithm, or lacks a claim.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token expired.
    #[error("the token has expired")]
    Expired,
    /// The token is not valid yet.
    #[error("the token is not valid yet")]
    NotYetValid,
}

/// The server's auth configuration could not be used.
#[derive(Debug, thiserror::Error)]
#[error("auth configuration: {0}")]
pub struct AuthConfigError(pub String);

/// Verifies tokens with one pinned algorithm and key.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Builds the verifier the settings describe.
    pub fn new(settings: &AuthSettings) -> Result<Self, AuthConfigError> {
        let (algorithm, key) = match settings.algorithm.as_str() {
            "HS256" => {
                if settings.secret.len() < MIN_SECRET_BYTES {
                    return Err(AuthConfigError(format!(
                        "HS256 needs a secret of at least {MIN_SECRET_BYTES} bytes (PM_JWT_SECRET)"
                    )));
                }
                (
                    Algorithm::HS256,
                    DecodingKey::from_secret(settings.secret.as_bytes()),
                )
            }
            "RS256" | "EdDSA" => {
                let path = settings.public_key_file.as_ref().ok_or_else(|| {
                    AuthConfigError(format!("{} needs auth.public_key_file", settings.algorithm))
                })?;
                let pem = std::fs::read(path)
                    .map_err(|e| AuthConfigError(format!("cannot read {}: {e}", path.display())))?;
                if settings.algorithm == "RS256" {
                    let key = DecodingKey::from_rsa_pem(&pem)
                        .map_err(|e| AuthConfigError(format!("{}: {e}", path.display())))?;
                    (Algorithm::RS256, key)
                } else {
                    let key = DecodingKey::from_ed_pem(&pem)
                        .map_err(|e| AuthConfigError(format!("{}: {e}", path.display())))?;
                    (Algorithm::EdDSA, key)
                }
            }
            other => {
                return Err(AuthConfigError(format!(
                    "unsupported algorithm {other:?}: use HS256, RS256 or EdDSA"
                )))
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = settings.leeway_secs;
        validation.validate_nbf = true;
        // A configured issuer or audience must be present, not merely right when present.
        let mut required = vec!["exp", "sub"];
        match &settings.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &settings.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Ok(Verifier { key, validation })
    }

    /// Checks a token and returns who it names.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Invalid("no token was given".into()));
        }
        // The header's algorithm must be the configured one; `jsonwebtoken` also checks this,
        // but saying so explicitly keeps `alg: none` and key confusion out by construction.
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Invalid("malformed token".into()))?;
        if !self.validation.algorithms.contains(&header.alg) {
            return Err(AuthError::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                match e.kind() {
                    K::ExpiredSignature => AuthError::Expired,
                    K::ImmatureSignature => AuthError::NotYetValid,
                    K::InvalidSignature => AuthError::Invalid("bad signature".into()),
                    K::InvalidIssuer => AuthError::Invalid("wrong issuer".into()),
                    K::InvalidAudience => AuthError::Invalid("wrong audience".into()),
                    K::MissingRequiredClaim(claim) => {
                        AuthError::Invalid(format!("missing claim `{claim}`"))
                    }
                    K::Json(_) => AuthError::Invalid(
                        "malformed claims (sub, tid and exp are required)".into(),
                    ),
                    _ => AuthError::Invalid("malformed token".into()),
                }
            })?;
        let claims = data.claims;
        let tenant = TenantId::parse(&claims.tid)
            .map_err(|e| AuthError::Invalid(format!("claim `tid`: {e}")))?;
        let user = UserId::parse("sub", &claims.sub)
            .map_err(|e| AuthError::Invalid(format!("claim `sub`: {e}")))?;
        Ok(Identity {
            tenant,
            user,
            name: claims.name,
            email: claims.email,
            expires_at_ms: i64::try_from(claims.exp)
                .unwrap_or(i64::MAX / 1000)
                .saturating_mul(1000),
        })
    }
}

/// Mints an HS256 token (for `pm-server token` and `serve --dev`).
pub fn mint_hs256(
    secret: &str,
    tenant: &TenantId,
    user: &UserId,
    name: Option<&str>,
    ttl: Duration,
) -> Result<String, AuthConfigError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(AuthConfigError(format!(
            "HS256 needs a secret of at least {MIN_SECRET_BYTES} bytes (PM_JWT_SECRET)"
        )));
    }
    let claims = Claims {
        sub: user.as_str().to_owned(),
        tid: tenant.as_str().to_owned(),
        exp: unix_now() + ttl.as_secs(),
        name: name.map(str::to_owned),
        email: None,
        nbf: None,
        iss: None,
        aud: None,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| AuthConfigError(e.to_string()))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!!";

    fn verifier() -> Verifier {
        Verifier::new(&AuthSettings {
            secret: SECRET.into(),
            ..AuthSettings::default()
        })
        .unwrap()
    }

    fn token(claims: serde_json::Value, header: Header, secret: &str) -> String {
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn a_good_token_names_tenant_and_user() {
        let tenant = TenantId::parse("acme").unwrap();
        let user = UserId::parse("sub", "alice").unwrap();
        let t = mint_hs256(
            SECRET,
            &tenant,
            &user,
            Some("Alice"),
            Duration::from_secs(60),
        )
        .unwrap();
        let id = verifier().verify(&t).unwrap();
        assert_eq!(id.tenant, tenant);
        assert_eq!(id.user, user);
        assert_eq!(id.name.as_deref(), Some("Alice"));
    }

    #[test]
    fn refusals() {
        let v = verifier();
        let exp = unix_now() + 600;
        let ok = serde_json::json!({"sub": "u", "tid": "acme", "exp": exp});
        assert_eq!(
            v.verify("").unwrap_err(),
            AuthError::Invalid("no token was given".into())
        );
        assert_eq!(
            v.verify("garbage").unwrap_err(),
            AuthError::Invalid("malformed token".into())
        );
        assert_eq!(
            v.verify(&token(
                ok.clone(),
                Header::new(Algorithm::HS256),
                "another-secret-that-is-32-bytes-long"
            ))
            .unwrap_err(),
            AuthError::Invalid("bad signature".into())
        );
        assert_eq!(
            v.verify(&token(ok.clone(), Header::new(Algorithm::HS384), SECRET))
                .unwrap_err(),
            AuthError::Invalid("algorithm HS384 is not accepted".into())
        );
        let expired = serde_json::json!({"sub": "u", "tid": "acme", "exp": unix_now() - 3600});
        assert_eq!(
            v.verify(&token(expired, Header::new(Algorithm::HS256), SECRET))
                .unwrap_err(),
            AuthError::Expired
        );
        let early =
            serde_json::json!({"sub": "u", "tid": "acme", "exp": exp, "nbf": unix_now() + 3600});
        assert_eq!(
            v.verify(&token(early, Header::new(Algorithm::HS256), SECRET))
                .unwrap_err(),
            AuthError::NotYetValid
        );
        let no_tid = serde_json::json!({"sub": "u", "exp": exp});
        assert!(matches!(
            v.verify(&token(no_tid, Header::new(Algorithm::HS256), SECRET))
                .unwrap_err(),
            AuthError::Invalid(_)
        ));
        let bad_tid = serde_json::json!({"sub": "u", "tid": "../x", "exp": exp});
        assert_eq!(
            v.verify(&token(bad_tid, Header::new(Algorithm::HS256), SECRET))
                .unwrap_err(),
            AuthError::Invalid(
                "claim `tid`: tenant_id: must start with a lower-case letter or digit".into()
            )
        );
        // `alg: none`: header {"alg":"none"}, no signature.
        let none = format!(
            "{}.{}.",
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0",
            "eyJzdWIiOiJ1IiwidGlkIjoiYWNtZSIsImV4cCI6OTk5OTk5OTk5OX0"
        );
        assert!(matches!(
            v.verify(&none).unwrap_err(),
            AuthError::Invalid(_)
        ));
    }

    #[test]
    fn eddsa_tokens_verify_with_the_public_key_and_key_confusion_is_refused() {
        use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
        // A fixed test key: deterministic, never used outside tests.
        let signing = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let private_pem = signing.to_pkcs8_pem(Default::default()).unwrap();
        let public_pem = signing
            .verifying_key()
            .to_public_key_pem(Default::default())
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let public_file = dir.path().join("jwt.pub.pem");
        std::fs::write(&public_file, &public_pem).unwrap();
        let v = Verifier::new(&AuthSettings {
            algorithm: "EdDSA".into(),
            public_key_file: Some(public_file),
            ..AuthSettings::default()
        })
        .unwrap();
        let claims = serde_json::json!({"sub": "u", "tid": "acme", "exp": unix_now() + 600});
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::EdDSA),
            &claims,
            &EncodingKey::from_ed_pem(private_pem.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(v.verify(&token).unwrap().user.as_str(), "u");
        // HS256 "signed" with the public key as the secret: refused by the pinned algorithm.
        let confused = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(public_pem.as_bytes()),
        )
        .unwrap();
        assert_eq!(
            v.verify(&confused).unwrap_err(),
            AuthError::Invalid("algorithm HS256 is not accepted".into())
        );
    }

    #[test]
    fn a_configured_issuer_and_audience_are_required() {
        let v = Verifier::new(&AuthSettings {
            secret: SECRET.into(),
            issuer: Some("https://id.example".into()),
            audience: Some("pm".into()),
            ..AuthSettings::default()
        })
        .unwrap();
        let exp = unix_now() + 600;
        let sign = |claims: serde_json::Value| token(claims, Header::new(Algorithm::HS256), SECRET);
        let good = sign(
            serde_json::json!({"sub": "u", "tid": "acme", "exp": exp, "iss": "https://id.example", "aud": "pm"}),
        );
        assert!(v.verify(&good).is_ok());
        let no_iss = sign(serde_json::json!({"sub": "u", "tid": "acme", "exp": exp, "aud": "pm"}));
        assert_eq!(
            v.verify(&no_iss).unwrap_err(),
            AuthError::Invalid("missing claim `iss`".into())
        );
        let no_aud = sign(
            serde_json::json!({"sub": "u", "tid": "acme", "exp": exp, "iss": "https://id.example"}),
        );
        assert_eq!(
            v.verify(&no_aud).unwrap_err(),
            AuthError::Invalid("missing claim `aud`".into())
        );
        let wrong_iss = sign(
            serde_json::json!({"sub": "u", "tid": "acme", "exp": exp, "iss": "evil", "aud": "pm"}),
        );
        assert_eq!(
            v.verify(&wrong_iss).unwrap_err(),
            AuthError::Invalid("wrong issuer".into())
        );
        let wrong_aud = sign(
            serde_json::json!({"sub": "u", "tid": "acme", "exp": exp, "iss": "https://id.example", "aud": "other"}),
        );
        assert_eq!(
            v.verify(&wrong_aud).unwrap_err(),
            AuthError::Invalid("wrong audience".into())
        );
    }

    #[test]
    fn short_secrets_and_unknown_algorithms_are_configuration_errors() {
        assert!(Verifier::new(&AuthSettings {
            secret: "short".into(),
            ..AuthSettings::default()
        })
        .is_err());
        assert!(Verifier::new(&AuthSettings {
            algorithm: "none".into(),
            secret: SECRET.into(),
            ..AuthSettings::default()
        })
        .is_err());
        assert!(Verifier::new(&AuthSettings {
            algorithm: "RS256".into(),
            ..AuthSettings::default()
        })
        .is_err());
    }
}
