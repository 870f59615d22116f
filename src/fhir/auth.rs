//! Credentials for HTTP targets: a static bearer token or OAuth2 client credentials.
//!
//! Secrets come from environment variables named in the project file and live in
//! `SecretString`s; they are never printed (their `Debug` is redacted). OAuth2 tokens are
//! fetched once, reused until a minute before they expire, and refreshed single-flight.

use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;

use super::FhirError;

#[derive(Debug)]
pub struct OAuth2 {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub scope: Option<String>,
}

#[derive(Debug)]
pub enum Auth {
    None,
    Bearer(SecretString),
    OAuth2 {
        config: OAuth2,
        cached: Mutex<Option<(SecretString, Instant)>>,
    },
}

/// Who the credentials say is calling, as an audit record may name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The OAuth2 client id.
    OauthClient(String),
    /// The `sub` claim of a bearer token that is a JWT.
    TokenSubject(String),
}

impl Auth {
    /// The caller these credentials name, if they name one (never the secret or token).
    pub fn caller(&self) -> Option<Caller> {
        match self {
            Auth::None => None,
            Auth::Bearer(t) => jwt_subject(t.expose_secret()).map(Caller::TokenSubject),
            Auth::OAuth2 { config, .. } => Some(Caller::OauthClient(config.client_id.clone())),
        }
    }

    /// The same credentials with a token cache of their own (for a second API of the same
    /// target, such as Canvas's plugin API beside its FHIR API).
    pub fn same_credentials(&self) -> Auth {
        match self {
            Auth::None => Auth::None,
            Auth::Bearer(t) => Auth::Bearer(t.clone()),
            Auth::OAuth2 { config, .. } => Auth::oauth2(OAuth2 {
                token_url: config.token_url.clone(),
                client_id: config.client_id.clone(),
                client_secret: config.client_secret.clone(),
                scope: config.scope.clone(),
            }),
        }
    }

    pub fn oauth2(config: OAuth2) -> Self {
        Auth::OAuth2 {
            config,
            cached: Mutex::new(None),
        }
    }

    /// Hand every credential held here to the output edge, so that it is redacted from
    /// whatever careplane prints (a server may echo it in an error).
    pub fn register_secrets(&self) {
        match self {
            Auth::None => {}
            Auth::Bearer(t) => crate::output::register_secret(t.expose_secret()),
            Auth::OAuth2 { config, .. } => {
                crate::output::register_secret(config.client_secret.expose_secret())
            }
        }
    }

    /// The bearer token to send, if any. `stale` is the token that just got a 401: it is
    /// dropped and a new one fetched (once, whoever asks first).
    pub async fn token(
        &self,
        client: &reqwest::Client,
        stale: Option<&str>,
    ) -> Result<Option<SecretString>, FhirError> {
        match self {
            Auth::None => Ok(None),
            Auth::Bearer(t) => Ok(Some(t.clone())),
            Auth::OAuth2 { config, cached } => {
                let mut guard = cached.lock().await;
                if let Some((tok, expires)) = guard.as_ref() {
                    let is_stale = stale.is_some_and(|s| s == tok.expose_secret());
                    if !is_stale && Instant::now() < *expires {
                        return Ok(Some(tok.clone()));
                    }
                }
                let (tok, ttl) = fetch_token(client, config).await?;
                let refresh_at = Instant::now() + ttl.saturating_sub(Duration::from_secs(60));
                *guard = Some((tok.clone(), refresh_at));
                Ok(Some(tok))
            }
        }
    }
}

async fn fetch_token(
    client: &reqwest::Client,
    config: &OAuth2,
) -> Result<(SecretString, Duration), FhirError> {
    let mut form = vec![
        ("grant_type", "client_credentials".to_owned()),
        ("client_id", config.client_id.clone()),
        (
            "client_secret",
            config.client_secret.expose_secret().to_owned(),
        ),
    ];
    if let Some(scope) = &config.scope {
        form.push(("scope", scope.clone()));
    }
    let url = url::Url::parse(&config.token_url).map_err(|_| {
        FhirError::Auth("the OAuth2 token URL is not a URL; check the target's tokenUrl".into())
    })?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    };
    if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
        return Err(FhirError::Auth(format!(
            "the OAuth2 token URL must be https (it is {}:), or the client secret would travel in clear text; only loopback addresses may use http",
            url.scheme()
        )));
    }
    let resp = client
        .post(url)
        .timeout(Duration::from_secs(60))
        .form(&form)
        .send()
        .await
        .map_err(|e| FhirError::Auth(format!("token endpoint unreachable: {}", e.without_url())))?;
    let status = resp.status();
    // A token answer is small; more than this is not a token endpoint talking.
    const MAX: usize = 64 * 1024;
    let mut resp = resp;
    let mut bytes = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| FhirError::Auth(format!("token endpoint: {}", e.without_url())))?
    {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > MAX {
            return Err(FhirError::Auth(format!(
                "the token endpoint's answer is larger than {MAX} bytes"
            )));
        }
    }
    let body: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
    if !status.is_success() {
        // RFC 6749 §5.2: `error` and `error_description` say what is wrong.
        let said = body
            .as_ref()
            .map(|b| {
                ["error", "error_description"]
                    .iter()
                    .filter_map(|k| b.get(*k).and_then(|v| v.as_str()))
                    .collect::<Vec<_>>()
                    .join(": ")
            })
            .filter(|s| !s.is_empty())
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        return Err(FhirError::Auth(format!(
            "token endpoint answered HTTP {}{said}; check the client id and secret",
            status.as_u16()
        )));
    }
    let body = body.ok_or_else(|| FhirError::Auth("token endpoint answer is not JSON".into()))?;
    let token = body
        .get("access_token")
        .and_then(|v| v.as_str())
        .ok_or_else(|| FhirError::Auth("token endpoint answer has no access_token".into()))?;
    crate::output::register_secret(token);
    let ttl = body
        .get("expires_in")
        .and_then(|v| v.as_u64())
        .unwrap_or(300);
    Ok((
        SecretString::from(token.to_owned()),
        Duration::from_secs(ttl),
    ))
}

/// The `sub` claim of a JWT (the payload decoded, the signature not checked: it names the
/// caller in the record, it grants nothing). `None` for tokens that are not JWTs.
pub fn jwt_subject(token: &str) -> Option<String> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64url(payload)?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims
        .get("sub")?
        .as_str()
        .filter(|s| !s.is_empty() && s.len() <= 256)
        .map(str::to_owned)
}

/// Unpadded base64url, as JWT segments are.
fn base64url(s: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subject_of_a_jwt_and_nothing_of_other_tokens() {
        // {"alg":"none"} . {"sub":"svc-careplane","scope":"system/*.*"} . sig
        let token =
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJzdmMtY2FyZXBsYW5lIiwic2NvcGUiOiJzeXN0ZW0vKi4qIn0.c2ln";
        assert_eq!(jwt_subject(token).as_deref(), Some("svc-careplane"));
        assert_eq!(jwt_subject("opaque-token-value"), None);
        assert_eq!(jwt_subject("a.b.c.d"), None);
        assert_eq!(jwt_subject("x.!!!.y"), None);
        assert_eq!(base64url("aGk").unwrap(), b"hi");
        assert_eq!(base64url("aGVsbG8").unwrap(), b"hello");
    }
}
