//! FHIR R4 over HTTP.
//!
//! - Searches page by following `Bundle.link[next]` verbatim and keep only entries whose
//!   `search.mode` is `match`; `Prefer: handling=strict` asks the server to fail on
//!   parameters it does not support, and an OperationOutcome entry in a result is an error.
//! - Writes are conditional: `If-Match: W/"<versionId>"` (or `If-Unmodified-Since` where
//!   the server has no versions), creates carry `If-None-Exist`. 409/412 mean "changed since
//!   read".
//! - Retries (backon) only for requests that are safe to repeat: GET, PUT, DELETE, and
//!   POST with `If-None-Exist`; on 408/429/5xx and connection errors; `Retry-After` is
//!   honoured (capped at 60 s).
//! - Nothing logged or returned in errors contains a query string (search values can be
//!   patient identifiers) or a credential.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use backon::{ExponentialBuilder, Retryable};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::Value;
use url::Url;

use super::auth::Auth;
use super::{FhirError, Precondition, Query, Written, resource_type};

const FHIR_JSON: &str = "application/fhir+json";

pub struct HttpStore {
    /// `CAREPLANE_LOG=requests`: one stderr line per request (method, what, status, time;
    /// never query values, bodies or credentials).
    log_requests: bool,
    base: Url,
    client: reqwest::Client,
    auth: Auth,
    requests: AtomicU64,
    page_size: u32,
    max_retries: usize,
}

/// One attempt's failure, with the server's `Retry-After` if it gave one.
struct Failure {
    error: FhirError,
    retry_after: Option<Duration>,
}

struct Response {
    status: StatusCode,
    headers: HeaderMap,
    body: Option<Value>,
}

impl HttpStore {
    pub fn new(base: &str, auth: Auth) -> Result<Self, FhirError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut base = Url::parse(base).map_err(|e| {
            FhirError::Unsupported(format!("'{base}' is not a usable FHIR base URL: {e}"))
        })?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("careplane/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| FhirError::Unsupported(format!("cannot build HTTP client: {e}")))?;
        Ok(HttpStore {
            log_requests: std::env::var("CAREPLANE_LOG")
                .is_ok_and(|v| v.split(',').any(|x| x.trim() == "requests")),
            base,
            client,
            auth,
            requests: AtomicU64::new(0),
            page_size: 100,
            max_retries: 4,
        })
    }

    /// Use at most `n` entries per page (default 100).
    pub fn with_page_size(mut self, n: u32) -> Self {
        self.page_size = n.max(1);
        self
    }

    pub fn with_max_retries(mut self, n: usize) -> Self {
        self.max_retries = n;
        self
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn url(&self, path: &str) -> Result<Url, FhirError> {
        self.base
            .join(path)
            .map_err(|e| FhirError::Unsupported(format!("bad resource path {path}: {e}")))
    }

    /// Send one request (with retries when `retry` is set); every status comes back as a
    /// `Response` except the transient ones, which are retried and then become errors.
    async fn exchange(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        headers: HeaderMap,
        what: &str,
        retry: bool,
    ) -> Result<Response, FhirError> {
        let attempt = || async {
            let mut stale: Option<String> = None;
            loop {
                let resp = self
                    .send_once(
                        method.clone(),
                        url.clone(),
                        body,
                        headers.clone(),
                        what,
                        stale.as_deref(),
                    )
                    .await?;
                // One retry with a fresh token (the old one may have expired early).
                if resp.0.status == StatusCode::UNAUTHORIZED
                    && stale.is_none()
                    && matches!(self.auth, Auth::OAuth2 { .. })
                    && let Some(token) = resp.1
                {
                    stale = Some(token);
                    continue;
                }
                return Ok(resp.0);
            }
        };
        let max = if retry { self.max_retries } else { 0 };
        let result = attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(10))
                    .with_max_times(max)
                    .with_jitter(),
            )
            .sleep(tokio::time::sleep)
            .when(|f: &Failure| f.error.is_transient())
            .adjust(|f: &Failure, dur| dur.map(|d| f.retry_after.unwrap_or(d)))
            .await;
        let resp = result.map_err(|f| f.error)?;
        match resp.status.as_u16() {
            401 | 403 => Err(FhirError::Auth(format!(
                "{what}: the server answered HTTP {}{}; check the target's credentials and their scopes",
                resp.status.as_u16(),
                message(what, resp.body.as_ref())
                    .map(|t| format!(" ({t})"))
                    .unwrap_or_default()
            ))),
            _ => Ok(resp),
        }
    }

    async fn send_once(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        headers: HeaderMap,
        what: &str,
        stale: Option<&str>,
    ) -> Result<(Response, Option<String>), Failure> {
        let token = self
            .auth
            .token(&self.client, stale)
            .await
            .map_err(|error| Failure {
                error,
                retry_after: None,
            })?;
        let mut req = self
            .client
            .request(method, url)
            .headers(headers)
            .header(reqwest::header::ACCEPT, FHIR_JSON);
        if let Some(t) = &token {
            req = req.bearer_auth(t.expose_secret());
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, FHIR_JSON)
                .body(serde_json::to_vec(b).unwrap_or_default());
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let resp = req.send().await.map_err(|e| transport(what, e))?;
        let status = resp.status();
        if self.log_requests {
            eprintln!(
                "careplane: {} → HTTP {} in {} ms",
                what,
                status.as_u16(),
                started.elapsed().as_millis()
            );
        }
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.map_err(|e| transport(what, e))?;
        let body = if bytes.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            serde_json::from_slice::<Value>(&bytes).ok()
        };
        if matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504) {
            return Err(Failure {
                retry_after: retry_after(&headers),
                error: FhirError::Http {
                    what: what.to_owned(),
                    status: status.as_u16(),
                    message: message(what, body.as_ref()),
                },
            });
        }
        let token = token.map(|t| t.expose_secret().to_owned());
        Ok((
            Response {
                status,
                headers,
                body,
            },
            token,
        ))
    }

    fn http_error(what: &str, resp: &Response) -> FhirError {
        FhirError::Http {
            what: what.to_owned(),
            status: resp.status.as_u16(),
            message: message(what, resp.body.as_ref()),
        }
    }

    pub async fn search(&self, q: &Query) -> Result<Vec<Value>, FhirError> {
        let what = format!("{} (GET {})", q.describe(), q.resource_type);
        let mut url = self.url(&q.resource_type)?;
        {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &q.params {
                pairs.append_pair(k, v);
            }
            if !q.params.iter().any(|(k, _)| k == "_count") {
                pairs.append_pair("_count", &self.page_size.to_string());
            }
        }
        let mut headers = HeaderMap::new();
        headers.insert("Prefer", HeaderValue::from_static("handling=strict"));
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        loop {
            if !seen.insert(url.to_string()) || seen.len() > 100_000 {
                return Err(FhirError::InvalidResponse {
                    what,
                    reason: "the server's next links go round in a loop".into(),
                });
            }
            let resp = self
                .exchange(Method::GET, url.clone(), None, headers.clone(), &what, true)
                .await?;
            if !resp.status.is_success() {
                return Err(Self::http_error(&what, &resp));
            }
            let bundle = resp.body.ok_or_else(|| FhirError::InvalidResponse {
                what: what.clone(),
                reason: "empty body".into(),
            })?;
            if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
                return Err(FhirError::InvalidResponse {
                    what,
                    reason: "expected a Bundle".into(),
                });
            }
            for entry in bundle
                .get("entry")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let mode = entry
                    .pointer("/search/mode")
                    .and_then(Value::as_str)
                    .unwrap_or("match");
                let Some(resource) = entry.get("resource") else {
                    continue;
                };
                match mode {
                    "match" => out.push(resource.clone()),
                    "outcome" => {
                        let severe = resource
                            .get("issue")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .any(|i| {
                                matches!(
                                    i.get("severity").and_then(Value::as_str),
                                    Some("fatal" | "error" | "warning")
                                )
                            });
                        if severe {
                            return Err(FhirError::Unsupported(format!(
                                "{what}: the server reported a problem with the search ({}); careplane will not act on a partial result",
                                message(&what, Some(resource))
                                    .unwrap_or_else(|| "no details".into())
                            )));
                        }
                    }
                    _ => {}
                }
            }
            let next = bundle
                .get("link")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|l| l.get("relation").and_then(Value::as_str) == Some("next"))
                .and_then(|l| l.get("url").and_then(Value::as_str));
            match next {
                Some(n) => {
                    url = url.join(n).map_err(|_| FhirError::InvalidResponse {
                        what: what.clone(),
                        reason: "next link is not a URL".into(),
                    })?;
                }
                None => return Ok(out),
            }
        }
    }

    pub async fn read(&self, resource_type: &str, id: &str) -> Result<Option<Value>, FhirError> {
        let what = format!("read {}", super::shown(resource_type, id));
        let url = self.url(&format!("{resource_type}/{id}"))?;
        let resp = self
            .exchange(Method::GET, url, None, HeaderMap::new(), &what, true)
            .await?;
        match resp.status.as_u16() {
            200 => resp
                .body
                .map(Some)
                .ok_or_else(|| FhirError::InvalidResponse {
                    what,
                    reason: "empty body".into(),
                }),
            404 | 410 => Ok(None),
            _ => Err(Self::http_error(&what, &resp)),
        }
    }

    /// The resource's versions, newest first (one page, at most `max`); `None` when the
    /// server keeps no history or will not show it.
    pub async fn history(
        &self,
        rt: &str,
        id: &str,
        max: u32,
    ) -> Result<Option<Vec<Value>>, FhirError> {
        let what = format!("history of {}", super::shown(rt, id));
        let mut url = self.url(&format!("{rt}/{id}/_history"))?;
        url.query_pairs_mut()
            .append_pair("_count", &max.to_string());
        let resp = self
            .exchange(Method::GET, url, None, HeaderMap::new(), &what, true)
            .await?;
        if !resp.status.is_success() {
            return Ok(None);
        }
        let mut versions: Vec<Value> = resp
            .body
            .as_ref()
            .and_then(|b| b.get("entry"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| e.get("resource").cloned())
            .collect();
        versions.sort_by(|a, b| {
            let t = |r: &Value| {
                r.pointer("/meta/lastUpdated")
                    .and_then(Value::as_str)
                    .and_then(super::parse_instant)
            };
            t(b).cmp(&t(a))
        });
        Ok(Some(versions))
    }

    pub async fn create(
        &self,
        resource: &Value,
        if_none_exist: Option<&Query>,
    ) -> Result<Written, FhirError> {
        let rt = resource_type(resource)?;
        let what = format!("create {rt}");
        let url = self.url(rt)?;
        let mut headers = HeaderMap::new();
        if let Some(q) = if_none_exist {
            let mut ser = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in &q.params {
                ser.append_pair(k, v);
            }
            headers.insert(
                "If-None-Exist",
                HeaderValue::from_str(&ser.finish()).map_err(|_| {
                    FhirError::Unsupported("condition is not a valid header".into())
                })?,
            );
        }
        let resp = self
            .exchange(
                Method::POST,
                url,
                Some(resource),
                headers,
                &what,
                if_none_exist.is_some(),
            )
            .await?;
        if !resp.status.is_success() {
            if matches!(resp.status.as_u16(), 409 | 412) {
                return Err(FhirError::Conflict {
                    resource: format!("{rt} (create)"),
                    status: resp.status.as_u16(),
                });
            }
            return Err(Self::http_error(&what, &resp));
        }
        let mut w = written(rt, &resp).ok_or_else(|| FhirError::InvalidResponse {
            what,
            reason: "no id in the body or the Location header".into(),
        })?;
        // A conditional create that matched answers 200 (201 means created).
        w.existed = if_none_exist.is_some() && resp.status == reqwest::StatusCode::OK;
        Ok(w)
    }

    pub async fn update(&self, resource: &Value, pre: &Precondition) -> Result<Written, FhirError> {
        let rt = resource_type(resource)?;
        let id = resource
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| FhirError::Unsupported(format!("update of {rt} without an id")))?;
        let what = format!("update {}", super::shown(rt, id));
        let url = self.url(&format!("{rt}/{id}"))?;
        let headers = precondition_headers(pre);
        let resp = self
            .exchange(Method::PUT, url, Some(resource), headers, &what, true)
            .await?;
        if matches!(resp.status.as_u16(), 409 | 412) {
            return Err(FhirError::Conflict {
                resource: super::shown(rt, id),
                status: resp.status.as_u16(),
            });
        }
        if !resp.status.is_success() {
            return Err(Self::http_error(&what, &resp));
        }
        Ok(written(rt, &resp).unwrap_or(Written {
            id: id.to_owned(),
            version_id: None,
            existed: false,
        }))
    }

    pub async fn delete(&self, rt: &str, id: &str, pre: &Precondition) -> Result<(), FhirError> {
        let what = format!("delete {}", super::shown(rt, id));
        let url = self.url(&format!("{rt}/{id}"))?;
        let resp = self
            .exchange(
                Method::DELETE,
                url,
                None,
                precondition_headers(pre),
                &what,
                true,
            )
            .await?;
        match resp.status.as_u16() {
            200..=299 | 404 | 410 => Ok(()),
            409 | 412 => Err(FhirError::Conflict {
                resource: super::shown(rt, id),
                status: resp.status.as_u16(),
            }),
            _ => Err(Self::http_error(&what, &resp)),
        }
    }
}

/// A failure to talk to the server at all (retried); the URL is left out of the reason
/// because it may carry search values.
fn transport(what: &str, e: reqwest::Error) -> Failure {
    Failure {
        error: FhirError::Transport {
            what: what.to_owned(),
            reason: e.without_url().to_string(),
        },
        retry_after: None,
    }
}

fn precondition_headers(pre: &Precondition) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(v) = &pre.version_id {
        if let Ok(v) = HeaderValue::from_str(&format!("W/\"{v}\"")) {
            h.insert("If-Match", v);
        }
    } else if let Some(t) = &pre.last_updated
        && let Some(when) = super::parse_instant(t)
        && let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(when))
    {
        h.insert("If-Unmodified-Since", v);
    }
    h
}

/// The id and version of a created/updated resource: from the body if the server sent
/// one, else from `Location` (`…/Type/id[/_history/vid]`), else `ETag`.
fn written(rt: &str, resp: &Response) -> Option<Written> {
    let etag_version = resp
        .headers
        .get("ETag")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_start_matches("W/").trim_matches('"').to_owned());
    if let Some(b) = &resp.body
        && let Some(id) = b.get("id").and_then(Value::as_str)
    {
        return Some(Written {
            id: id.to_owned(),
            version_id: b
                .pointer("/meta/versionId")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or(etag_version),
            existed: false,
        });
    }
    let loc = resp
        .headers
        .get("Location")
        .or_else(|| resp.headers.get("Content-Location"))?
        .to_str()
        .ok()?;
    let path = loc.split('?').next()?;
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let i = segs.iter().rposition(|s| *s == rt)?;
    let id = segs.get(i + 1)?.to_string();
    let version = match (segs.get(i + 2), segs.get(i + 3)) {
        (Some(&"_history"), Some(v)) => Some(v.to_string()),
        _ => etag_version,
    };
    Some(Written {
        id,
        version_id: version,
        existed: false,
    })
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("Retry-After")?.to_str().ok()?.trim();
    let d = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(v)
            .ok()?
            .duration_since(SystemTime::now())
            .unwrap_or_default(),
    };
    Some(d.min(Duration::from_secs(60)))
}

/// The server's message about a request, unless the request concerns patient data
/// (Patient, Consent, CareTeam), where servers quote ids and names in their messages.
fn message(what: &str, body: Option<&Value>) -> Option<String> {
    let text = super::outcome_text(body?)?;
    if ["Patient", "Consent", "CareTeam"]
        .iter()
        .any(|t| what.contains(t))
    {
        Some("(the server's message is withheld: it may quote patient data)".into())
    } else {
        Some(text)
    }
}
