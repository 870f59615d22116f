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

impl Auth {
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
