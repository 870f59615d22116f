//! FHIR R4 over HTTP.
//!
//! - Searches page by following `Bundle.link[next]` and keep only entries whose
//!   `search.mode` is `match` (and whose type is the one searched for);
//!   `Prefer: handling=strict` asks the server to fail on parameters it does not support,
//!   and an OperationOutcome entry in a result is an error.
//! - Credentials go only to the target's own origin: a next link or a redirect to another
//!   scheme, host or port (an https → http downgrade included) is refused before anything
//!   is sent there. Other schemes (`file:`, …) are refused and never retried.
//! - Every answer is bounded: connect, read (idle) and total timeouts, a size limit on the
//!   body, and a limit on the pages one search may take (the server's `total` when it
//!   gives one, else `limits.maxPages`). Each failure says which limit fired, for which
//!   URL (never its query).
//! - Writes are conditional: `If-Match: W/"<versionId>"` (or `If-Unmodified-Since` where
//!   the server has no versions), creates carry `If-None-Exist`. 409/412 mean "changed since
//!   read".
//! - Retries (backon) only for requests that are safe to repeat: GET, PUT, DELETE, and
//!   POST with `If-None-Exist`; on 408/429/5xx, refused or reset connections and connect or
//!   read timeouts, never on TLS failures or the total timeout; `Retry-After` is honoured
//!   (capped at 60 s).
//! - Nothing logged or returned in errors contains a query string (search values can be
//!   patient identifiers); credentials are removed at the output edge
//!   ([`crate::output`]), where this store registers the ones it holds.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use backon::{ExponentialBuilder, Retryable};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::Value;
use url::Url;

use super::auth::Auth;
use super::{
    BatchAnswer, BatchEntry, FhirError, Precondition, Query, ServerFeatures, TimeoutKind, Written,
    resource_type,
};

const FHIR_JSON: &str = "application/fhir+json";
const JSON_PATCH: &str = "application/json-patch+json";

/// A write body at least this large is not sent again whole after its answer was lost
/// (HTTP 408 or 504, a read or request timeout): a few thousand group members.
pub const LARGE_WRITE_BYTES: usize = 64 * 1024;

/// Whether a failure may mean the server received the request and is still working on it
/// (so the answer, not the request, was lost).
fn unanswered(e: &FhirError) -> bool {
    match e {
        FhirError::Http { status, .. } => matches!(status, 408 | 504),
        FhirError::Timeout { which, .. } => *which != TimeoutKind::Connect,
        _ => false,
    }
}

/// A write's size in words: its list entries (group members, patch operations) and bytes.
fn write_size(body: &Value, bytes: usize) -> String {
    let entries = match body {
        Value::Array(ops) => Some((ops.len(), "patch operations")),
        _ if body["resourceType"] == "Bundle" => body
            .get("entry")
            .and_then(Value::as_array)
            .map(|m| (m.len(), "batch entries")),
        _ => body
            .get("member")
            .and_then(Value::as_array)
            .map(|m| (m.len(), "members")),
    };
    match entries {
        Some((n, what)) => format!("{n} {what}, {bytes} bytes"),
        None => format!("{bytes} bytes"),
    }
}

/// Bounds on one target's traffic (the project file's `limits`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Opening a connection, TLS included.
    pub connect_timeout: Duration,
    /// Waiting for the answer to start, and between two parts of its body.
    pub read_timeout: Duration,
    /// One whole request, answer included (not retried when it fires).
    pub request_timeout: Duration,
    /// The largest answer body accepted.
    pub max_response_bytes: u64,
    /// The most pages one search may take.
    pub max_pages: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(120),
            max_response_bytes: 64 * 1024 * 1024,
            max_pages: 10_000,
        }
    }
}

/// Called after each page a search reads: the resource type, pages read of this search,
/// and the pages it needs when the server says (`total`).
pub type PageHook = std::sync::Arc<dyn Fn(&str, u32, Option<u64>) + Send + Sync>;

pub struct HttpStore {
    /// `CAREPLANE_LOG=requests`: one stderr line per attempt (method, what, attempt,
    /// outcome, time, the delay before a retry; never query values, bodies or
    /// credentials).
    log_requests: bool,
    base: Url,
    client: reqwest::Client,
    auth: Auth,
    requests: AtomicU64,
    page_size: u32,
    max_retries: usize,
    limits: Limits,
    on_page: Option<PageHook>,
    /// The CapabilityStatement's batch and patch support, read once.
    features: tokio::sync::OnceCell<ServerFeatures>,
}

/// One attempt's failure, with the server's `Retry-After` if it gave one.
struct Failure {
    error: FhirError,
    retry_after: Option<Duration>,
}

impl From<FhirError> for Failure {
    fn from(error: FhirError) -> Self {
        Failure {
            error,
            retry_after: None,
        }
    }
}

/// What an answer's body was.
#[derive(Clone, Debug)]
enum Body {
    Empty,
    Json(Value),
    /// Not JSON: only its media type and size are kept (its text may quote anything).
    Other {
        content_type: Option<String>,
        bytes: usize,
    },
}

struct Response {
    status: StatusCode,
    headers: HeaderMap,
    /// The body, decoded once (and never copied: searches take their resources out of it).
    raw: Body,
}

impl Response {
    /// The body when it is JSON.
    fn body(&self) -> Option<&Value> {
        match &self.raw {
            Body::Json(v) => Some(v),
            _ => None,
        }
    }

    fn into_body(self) -> Option<Value> {
        match self.raw {
            Body::Json(v) => Some(v),
            _ => None,
        }
    }

    /// Why the body is not the JSON resource expected, in words.
    fn body_problem(&self) -> String {
        match &self.raw {
            Body::Empty => "the body is empty".into(),
            Body::Json(v) => match v.get("resourceType").and_then(Value::as_str) {
                Some(t) => format!("the body is a {t}"),
                None => "the body is JSON but not a FHIR resource".into(),
            },
            Body::Other {
                content_type,
                bytes,
            } => format!(
                "the body is not JSON ({}, {bytes} bytes)",
                content_type.as_deref().unwrap_or("no Content-Type")
            ),
        }
    }
}

/// Logs an attempt that never finished (dropped mid-flight, e.g. on Ctrl-C or when a
/// sibling request failed) when it goes out of scope unfinished.
struct InFlight<'a> {
    log: bool,
    what: &'a str,
    attempt: usize,
    started: Instant,
    done: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.log && !self.done {
            crate::output::log(&format!(
                "{} attempt {} → abandoned after {} ms",
                self.what,
                self.attempt,
                self.started.elapsed().as_millis()
            ));
        }
    }
}

impl HttpStore {
    pub fn new(base: &str, auth: Auth) -> Result<Self, FhirError> {
        Self::with_limits(base, auth, Limits::default())
    }

    pub fn with_limits(base: &str, auth: Auth, limits: Limits) -> Result<Self, FhirError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut base = Url::parse(base).map_err(|e| {
            FhirError::Unsupported(format!("'{base}' is not a usable FHIR base URL: {e}"))
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(FhirError::Unsupported(format!(
                "'{}' is not an http(s) URL; a FHIR target is reached over HTTP",
                shown_url(&base)
            )));
        }
        if let Some(p) = base.password() {
            crate::output::register_secret(p);
            let decoded = url::form_urlencoded::parse(format!("p={p}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned());
            if let Some(d) = decoded {
                crate::output::register_secret(&d);
            }
        }
        auth.register_secrets();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let policy = same_origin_redirects(&base);
        let client = reqwest::Client::builder()
            .user_agent(concat!("careplane/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(limits.connect_timeout)
            .redirect(policy)
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
            limits,
            on_page: None,
            features: tokio::sync::OnceCell::new(),
        })
    }

    /// Who the credentials name (see [`Auth::caller`]).
    pub fn caller(&self) -> Option<super::auth::Caller> {
        self.auth.caller()
    }

    /// Report every page a search reads to `hook` (progress of long reads).
    pub fn set_page_hook(&mut self, hook: PageHook) {
        self.on_page = Some(hook);
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

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn url(&self, path: &str) -> Result<Url, FhirError> {
        self.base
            .join(path)
            .map_err(|e| FhirError::Unsupported(format!("bad resource path {path}: {e}")))
    }

    /// A URL the server handed back (a next link): resolved against `from`, and refused
    /// unless it is http(s) on the target's own origin, so credentials never go elsewhere.
    fn follow(&self, from: &Url, link: &str, what: &str) -> Result<Url, FhirError> {
        let url = from.join(link).map_err(|_| FhirError::InvalidResponse {
            what: what.to_owned(),
            reason: "the next link is not a URL".into(),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FhirError::Refused {
                what: what.to_owned(),
                reason: format!(
                    "the server's next link is a '{}:' URL; careplane follows only http(s) links on the target's own origin",
                    url.scheme()
                ),
            });
        }
        if url.origin() != self.base.origin() {
            let downgrade = self.base.scheme() == "https" && url.scheme() == "http";
            return Err(FhirError::Refused {
                what: what.to_owned(),
                reason: format!(
                    "the server's next link leads to {} but the target is {}{}; careplane sends the target's credentials only to its own origin and did not follow it",
                    url.origin().ascii_serialization(),
                    self.base.origin().ascii_serialization(),
                    if downgrade {
                        " (and from https to plain http)"
                    } else {
                        ""
                    }
                ),
            });
        }
        Ok(url)
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
        let attempts = AtomicUsize::new(0);
        let max = if retry { self.max_retries } else { 0 };
        // Encoded once, however many attempts there are.
        let bytes: Option<Vec<u8>> = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        // A batch Bundle counts as large whatever its size: the server works through its
        // entries one after another, so one that got no answer may still be storing them.
        let large = match (&bytes, body) {
            (Some(b), Some(v))
                if b.len() >= LARGE_WRITE_BYTES
                    || (v["resourceType"] == "Bundle" && v["type"] == "batch") =>
            {
                Some(write_size(v, b.len()))
            }
            _ => None,
        };
        let bytes = bytes.as_deref();
        let attempt = || async {
            let mut stale: Option<String> = None;
            loop {
                let n = attempts.fetch_add(1, Ordering::Relaxed) + 1;
                let resp = self
                    .send_once(
                        method.clone(),
                        url.clone(),
                        bytes,
                        headers.clone(),
                        what,
                        stale.as_deref(),
                        n,
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
        let result = attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(10))
                    .with_max_times(max)
                    .with_jitter(),
            )
            .sleep(tokio::time::sleep)
            // A large write whose answer was lost is not sent again whole: the server may
            // still be storing it, and would likely time out again (see `unanswered`).
            .when(|f: &Failure| {
                f.error.is_transient() && !(large.is_some() && unanswered(&f.error))
            })
            .adjust(|f: &Failure, dur| dur.map(|d| f.retry_after.unwrap_or(d)))
            .notify(|f: &Failure, dur: Duration| {
                if self.log_requests {
                    crate::output::log(&format!(
                        "{what}: attempt {} failed ({}); next attempt in {} ms",
                        attempts.load(Ordering::Relaxed),
                        short(&f.error),
                        dur.as_millis()
                    ));
                }
            })
            .await;
        let resp = result.map_err(|f| match &large {
            Some(size) if unanswered(&f.error) => FhirError::LargeWriteUnanswered {
                what: what.to_owned(),
                reason: short(&f.error),
                size: size.clone(),
            },
            _ => f.error,
        })?;
        match resp.status.as_u16() {
            401 | 403 => Err(FhirError::Auth(format!(
                "{what}: the server answered HTTP {}{}; check the target's credentials and their scopes",
                resp.status.as_u16(),
                message(what, resp.body())
                    .map(|t| format!(" ({t})"))
                    .unwrap_or_default()
            ))),
            300..=399 => Err(FhirError::Refused {
                what: what.to_owned(),
                reason: format!(
                    "the server answered with a redirect (HTTP {}) {}; careplane follows redirects only within the target's own origin",
                    resp.status.as_u16(),
                    resp.headers
                        .get(reqwest::header::LOCATION)
                        .and_then(|l| l.to_str().ok())
                        .and_then(|l| url.join(l).ok())
                        .map(|u| format!("to {}", u.origin().ascii_serialization()))
                        .unwrap_or_else(|| "elsewhere".into())
                ),
            }),
            _ => Ok(resp),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_once(
        &self,
        method: Method,
        url: Url,
        body: Option<&[u8]>,
        headers: HeaderMap,
        what: &str,
        stale: Option<&str>,
        attempt: usize,
    ) -> Result<(Response, Option<String>), Failure> {
        let token = self.auth.token(&self.client, stale).await?;
        let mut req = self
            .client
            .request(method.clone(), url.clone())
            .headers(headers)
            .header(reqwest::header::ACCEPT, FHIR_JSON);
        if let Some(t) = &token {
            req = req.bearer_auth(t.expose_secret());
        }
        if let Some(b) = body {
            let content_type = if method == Method::PATCH {
                JSON_PATCH
            } else {
                FHIR_JSON
            };
            req = req
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(b.to_vec());
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut flight = InFlight {
            log: self.log_requests,
            what,
            attempt,
            started: Instant::now(),
            done: false,
        };
        let limit = self.limits.request_timeout;
        let outcome = match tokio::time::timeout(limit, self.receive(req, &url, what)).await {
            Ok(r) => r,
            Err(_) => Err(FhirError::Timeout {
                what: what.to_owned(),
                url: shown_url(&url),
                which: TimeoutKind::Total,
                after: limit,
            }
            .into()),
        };
        flight.done = true;
        if self.log_requests {
            let result = match &outcome {
                Ok(r) => format!("HTTP {}", r.status.as_u16()),
                Err(f) => short(&f.error),
            };
            crate::output::log(&format!(
                "{what} attempt {attempt} → {result} in {} ms",
                flight.started.elapsed().as_millis()
            ));
        }
        let resp = outcome?;
        if matches!(resp.status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504) {
            return Err(Failure {
                retry_after: retry_after(&resp.headers),
                error: FhirError::Http {
                    what: what.to_owned(),
                    status: resp.status.as_u16(),
                    message: message(what, resp.body()),
                },
            });
        }
        let token = token.map(|t| t.expose_secret().to_owned());
        Ok((resp, token))
    }

    /// Send a built request and read its answer within the read timeout and size limit.
    async fn receive(
        &self,
        req: reqwest::RequestBuilder,
        url: &Url,
        what: &str,
    ) -> Result<Response, Failure> {
        let idle = self.limits.read_timeout;
        let read_timeout = || FhirError::Timeout {
            what: what.to_owned(),
            url: shown_url(url),
            which: TimeoutKind::Read,
            after: idle,
        };
        let mut resp = match tokio::time::timeout(idle, req.send()).await {
            Err(_) => return Err(read_timeout().into()),
            Ok(r) => r.map_err(|e| transport(what, url, &self.limits, e))?,
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let max = self.limits.max_response_bytes;
        let too_large = || FhirError::Refused {
            what: what.to_owned(),
            reason: format!(
                "the answer from {} is larger than the target's limit of {max} bytes (limits.maxResponseBytes); lower pageSize or raise the limit",
                shown_url(url)
            ),
        };
        if resp.content_length().is_some_and(|n| n > max) {
            return Err(too_large().into());
        }
        let mut bytes: Vec<u8> = Vec::new();
        loop {
            match tokio::time::timeout(idle, resp.chunk()).await {
                Err(_) => return Err(read_timeout().into()),
                Ok(Err(e)) => return Err(transport(what, url, &self.limits, e)),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => {
                    if (bytes.len() + chunk.len()) as u64 > max {
                        return Err(too_large().into());
                    }
                    bytes.extend_from_slice(&chunk);
                }
            }
        }
        let raw = if bytes.iter().all(u8::is_ascii_whitespace) {
            Body::Empty
        } else {
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) => Body::Json(v),
                Err(_) => Body::Other {
                    content_type: headers
                        .get(reqwest::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned()),
                    bytes: bytes.len(),
                },
            }
        };
        Ok(Response {
            status,
            headers,
            raw,
        })
    }

    fn http_error(what: &str, resp: &Response) -> FhirError {
        FhirError::Http {
            what: what.to_owned(),
            status: resp.status.as_u16(),
            message: message(what, resp.body()),
        }
    }

    /// A 2xx answer that should have been a resource of type `expected` but is not: an
    /// OperationOutcome keeps the server's words, anything else is described.
    fn not_a(what: &str, expected: &str, resp: &Response) -> FhirError {
        if let Some(b) = resp.body()
            && b.get("resourceType").and_then(Value::as_str) == Some("OperationOutcome")
        {
            return FhirError::InvalidResponse {
                what: what.to_owned(),
                reason: format!(
                    "HTTP {} with an OperationOutcome instead of a {expected}: {}",
                    resp.status.as_u16(),
                    message(what, Some(b)).unwrap_or_else(|| "no details".into())
                ),
            };
        }
        FhirError::InvalidResponse {
            what: what.to_owned(),
            reason: format!("expected a {expected}, but {}", resp.body_problem()),
        }
    }

    pub async fn search(&self, q: &Query) -> Result<Vec<Value>, FhirError> {
        let mut out = Vec::new();
        self.search_each(q, &mut |r| out.push(r)).await?;
        Ok(out)
    }

    /// Every resource matching the query, handed to `each` page by page as the pages
    /// arrive: each page is decoded once and its resources are moved out of it, so a
    /// caller that reduces them holds one page at a time, never the whole result.
    pub async fn search_each(
        &self,
        q: &Query,
        each: &mut (dyn FnMut(Value) + Send),
    ) -> Result<(), FhirError> {
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
        let mut seen = std::collections::HashSet::new();
        // Pages this search may take: the configured cap, lowered once the server says how
        // many results there are.
        let mut bound = self.limits.max_pages;
        let mut total: Option<u64> = None;
        let mut need_pages: Option<u64> = None;
        let mut pages: u32 = 0;
        loop {
            if !seen.insert(url.to_string()) {
                return Err(FhirError::Refused {
                    what,
                    reason: "the server's next links go round in a loop".into(),
                });
            }
            if pages >= bound {
                return Err(FhirError::Refused {
                    what,
                    reason: match total {
                        Some(t) => format!(
                            "the server still links to another page after {pages} pages, more than its own total of {t} results can need"
                        ),
                        None => format!(
                            "the search took more than {pages} pages (limits.maxPages); raise the limit if the target really holds that many"
                        ),
                    },
                });
            }
            pages += 1;
            let resp = self
                .exchange(Method::GET, url.clone(), None, headers.clone(), &what, true)
                .await?;
            if !resp.status.is_success() {
                return Err(Self::http_error(&what, &resp));
            }
            let mut bundle = match resp.body() {
                Some(b) if b.get("resourceType").and_then(Value::as_str) == Some("Bundle") => {
                    resp.into_body().unwrap_or_default()
                }
                _ => return Err(Self::not_a(&what, "Bundle", &resp)),
            };
            let page_entries = page_matches(q, &what, &mut bundle, each)?;
            if pages == 1
                && let Some(t) = bundle.get("total").and_then(Value::as_u64)
            {
                let per_page = page_entries.max(1);
                need_pages = Some(t.div_ceil(per_page).max(1));
                total = Some(t);
                // One page more than the total needs, and a tenth for results added while
                // paging.
                let needed = t.div_ceil(per_page) + 1 + t.div_ceil(per_page) / 10;
                bound = bound.min(needed.min(u32::MAX as u64) as u32);
            }
            if let Some(hook) = &self.on_page {
                hook(&q.resource_type, pages, need_pages);
            }
            match next_link(&bundle) {
                Some(n) => url = self.follow(&url, n, &what)?,
                None => return Ok(()),
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
            200 => match resp.body() {
                Some(b) if b.get("resourceType").and_then(Value::as_str) == Some(resource_type) => {
                    Ok(resp.into_body())
                }
                _ => Err(Self::not_a(&what, resource_type, &resp)),
            },
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
            .body()
            .and_then(|b| b.get("entry"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| e.get("resource").cloned())
            .filter(|r| r.get("resourceType").and_then(Value::as_str) == Some(rt))
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
            headers.insert(
                "If-None-Exist",
                HeaderValue::from_str(&search_params(q)).map_err(|_| {
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
        Self::rewritten(rt, id, &what, &resp)
    }

    /// The server's batch and patch support (`GET metadata`, once). A server that does not
    /// show a CapabilityStatement gets single requests only.
    pub async fn features(&self) -> ServerFeatures {
        self.features
            .get_or_init(|| async {
                let Ok(url) = self.url("metadata") else {
                    return ServerFeatures::default();
                };
                match self
                    .exchange(
                        Method::GET,
                        url,
                        None,
                        HeaderMap::new(),
                        "read the CapabilityStatement",
                        true,
                    )
                    .await
                {
                    Ok(resp) if resp.status.is_success() => resp
                        .body()
                        .filter(|b| b["resourceType"] == "CapabilityStatement")
                        .map(ServerFeatures::from_capability_statement)
                        .unwrap_or_default(),
                    _ => ServerFeatures::default(),
                }
            })
            .await
            .clone()
    }

    /// `PATCH` with a JSON Patch document, under `pre` (`If-Match`). 409/412 are
    /// conflicts; a patch the server refuses (a failed `test` operation: 400 or 422) is an
    /// HTTP error the caller re-reads to tell apart.
    pub async fn patch(
        &self,
        rt: &str,
        id: &str,
        ops: &Value,
        pre: &Precondition,
    ) -> Result<Written, FhirError> {
        let what = format!("patch {}", super::shown(rt, id));
        let url = self.url(&format!("{rt}/{id}"))?;
        let resp = self
            .exchange(
                Method::PATCH,
                url,
                Some(ops),
                precondition_headers(pre),
                &what,
                true,
            )
            .await?;
        Self::rewritten(rt, id, &what, &resp)
    }

    /// The answer to an update or patch of `rt/id`: 409/412 a conflict, another failure an
    /// HTTP error, else what was written (the id as sent when the answer names none).
    fn rewritten(rt: &str, id: &str, what: &str, resp: &Response) -> Result<Written, FhirError> {
        if matches!(resp.status.as_u16(), 409 | 412) {
            return Err(FhirError::Conflict {
                resource: super::shown(rt, id),
                status: resp.status.as_u16(),
            });
        }
        if !resp.status.is_success() {
            return Err(Self::http_error(what, resp));
        }
        Ok(written(rt, resp).unwrap_or(Written {
            id: id.to_owned(),
            version_id: None,
            existed: false,
        }))
    }

    /// One FHIR `batch` Bundle (`POST [base]`): one answer per entry, in order. Safe to
    /// send again (reads, conditional creates, writes under `ifMatch`), except a large one
    /// whose answer was lost ([`FhirError::LargeWriteUnanswered`]).
    pub async fn batch(
        &self,
        entries: &[BatchEntry],
    ) -> Result<Vec<Result<BatchAnswer, FhirError>>, FhirError> {
        use base64::Engine;
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let if_match = |pre: &Precondition, req: &mut serde_json::Map<String, Value>| {
            if let Some(v) = &pre.version_id {
                req.insert("ifMatch".into(), Value::String(weak_etag(v)));
            }
        };
        let mut bundle_entries = Vec::with_capacity(entries.len());
        for e in entries {
            let mut req = serde_json::Map::new();
            let mut entry = serde_json::Map::new();
            let (method, url) = match e {
                BatchEntry::Read { resource_type, id } => ("GET", format!("{resource_type}/{id}")),
                BatchEntry::Search(q) => {
                    let mut q = q.clone();
                    if !q.params.iter().any(|(k, _)| k == "_count") {
                        q = q.param("_count", self.page_size.to_string());
                    }
                    ("GET", format!("{}?{}", q.resource_type, search_params(&q)))
                }
                BatchEntry::Create {
                    resource,
                    if_none_exist,
                } => {
                    if let Some(q) = if_none_exist {
                        req.insert("ifNoneExist".into(), Value::String(search_params(q)));
                    }
                    entry.insert("resource".into(), resource.clone());
                    ("POST", resource_type(resource)?.to_owned())
                }
                BatchEntry::Update { resource, pre } => {
                    if_match(pre, &mut req);
                    entry.insert("resource".into(), resource.clone());
                    let id = resource["id"].as_str().unwrap_or_default();
                    ("PUT", format!("{}/{id}", resource_type(resource)?))
                }
                BatchEntry::Patch {
                    resource_type,
                    id,
                    ops,
                    pre,
                } => {
                    if_match(pre, &mut req);
                    let data = base64::engine::general_purpose::STANDARD
                        .encode(serde_json::to_vec(ops).unwrap_or_default());
                    entry.insert(
                        "resource".into(),
                        serde_json::json!({"resourceType": "Binary", "contentType": JSON_PATCH, "data": data}),
                    );
                    ("PATCH", format!("{resource_type}/{id}"))
                }
                BatchEntry::Delete {
                    resource_type,
                    id,
                    pre,
                } => {
                    if_match(pre, &mut req);
                    ("DELETE", format!("{resource_type}/{id}"))
                }
            };
            req.insert("method".into(), method.into());
            req.insert("url".into(), url.into());
            entry.insert("request".into(), Value::Object(req));
            bundle_entries.push(Value::Object(entry));
        }
        let body =
            serde_json::json!({"resourceType": "Bundle", "type": "batch", "entry": bundle_entries});
        // "batch of 100 (read 60, create 40)": verbs and counts, never ids
        let mut verbs: Vec<(&str, usize)> = Vec::new();
        for e in entries {
            let verb = match e {
                BatchEntry::Read { .. } => "read",
                BatchEntry::Search(_) => "search",
                BatchEntry::Create { .. } => "create",
                BatchEntry::Update { .. } => "update",
                BatchEntry::Patch { .. } => "patch",
                BatchEntry::Delete { .. } => "delete",
            };
            match verbs.iter_mut().find(|(v, _)| *v == verb) {
                Some((_, n)) => *n += 1,
                None => verbs.push((verb, 1)),
            }
        }
        let what = format!(
            "batch of {} ({})",
            entries.len(),
            verbs
                .iter()
                .map(|(v, n)| format!("{v} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let url = self.base.clone();
        let resp = self
            .exchange(
                Method::POST,
                url,
                Some(&body),
                HeaderMap::new(),
                &what,
                true,
            )
            .await?;
        if !resp.status.is_success() {
            return Err(Self::http_error(&what, &resp));
        }
        let answers: Vec<Value> = match resp.body() {
            Some(b) if b["resourceType"] == "Bundle" && b["type"] == "batch-response" => {
                b["entry"].as_array().cloned().unwrap_or_default()
            }
            _ => return Err(Self::not_a(&what, "batch-response Bundle", &resp)),
        };
        if answers.len() != entries.len() {
            return Err(FhirError::InvalidResponse {
                what,
                reason: format!("{} answers for {} entries", answers.len(), entries.len()),
            });
        }
        Ok(entries
            .iter()
            .zip(answers)
            .map(|(e, a)| batch_answer(e, a))
            .collect())
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

/// One entry's answer in a batch-response, as the single request's answer would be.
fn batch_answer(e: &BatchEntry, mut answer: Value) -> Result<BatchAnswer, FhirError> {
    let what = e.what();
    let status: u16 = answer
        .pointer("/response/status")
        .and_then(Value::as_str)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| FhirError::InvalidResponse {
            what: what.clone(),
            reason: "the batch answer for this entry has no status".into(),
        })?;
    let failed = |answer: &Value| FhirError::Http {
        what: what.clone(),
        status,
        message: message(&what, answer.pointer("/response/outcome")),
    };
    if let BatchEntry::Search(q) = e {
        if !(200..=299).contains(&status) {
            return Err(failed(&answer));
        }
        let Some(bundle) = answer
            .get_mut("resource")
            .filter(|b| b["resourceType"] == "Bundle")
        else {
            return Err(FhirError::InvalidResponse {
                what,
                reason: "the batch answer for this search holds no Bundle".into(),
            });
        };
        let mut matches = Vec::new();
        page_matches(q, &what, bundle, &mut |r| matches.push(r))?;
        // A batch entry cannot ask for strict handling (`Prefer: handling=strict`): a
        // server that ignored an identifier or tag it did not understand must not hand
        // back a resource the search did not ask for.
        if let Some(r) = matches.iter().find(|r| !carries_tokens(q, r)) {
            return Err(FhirError::InvalidResponse {
                what,
                reason: format!(
                    "the server answered with a {} the search's identifier or tag does not match; careplane will not act on a result it did not ask for",
                    r["resourceType"].as_str().unwrap_or("resource")
                ),
            });
        }
        return Ok(BatchAnswer::Found {
            complete: next_link(bundle).is_none(),
            matches,
        });
    }
    let resource = answer.get("resource").filter(|r| r.is_object());
    let (rt, id) = match e {
        BatchEntry::Read { resource_type, id }
        | BatchEntry::Patch {
            resource_type, id, ..
        }
        | BatchEntry::Delete {
            resource_type, id, ..
        } => (resource_type.clone(), id.clone()),
        BatchEntry::Search(q) => (q.resource_type.clone(), String::new()),
        BatchEntry::Create { resource, .. } | BatchEntry::Update { resource, .. } => (
            resource["resourceType"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            resource["id"].as_str().unwrap_or_default().to_owned(),
        ),
    };
    let conflict = || FhirError::Conflict {
        resource: if id.is_empty() {
            format!("{rt} (create)")
        } else {
            super::shown(&rt, &id)
        },
        status,
    };
    // what was written, as for a single request (the entry's resource, location, etag),
    // else the id as sent
    let written = || -> Result<Written, FhirError> {
        let etag = answer.pointer("/response/etag").and_then(Value::as_str);
        let location = answer.pointer("/response/location").and_then(Value::as_str);
        match written_from(&rt, resource, location, etag) {
            Some(w) => Ok(w),
            None if !id.is_empty() => Ok(Written {
                id: id.clone(),
                version_id: etag.map(etag_version),
                existed: false,
            }),
            None => Err(FhirError::InvalidResponse {
                what: what.clone(),
                reason: "no id in the entry's resource or location".into(),
            }),
        }
    };
    match e {
        BatchEntry::Read { .. } => match status {
            200 => match resource {
                // the resource asked for: an answer for another entry's is no answer
                Some(r) if r["resourceType"] == rt.as_str() && r["id"] == id.as_str() => {
                    Ok(BatchAnswer::Read(Some(r.clone())))
                }
                _ => Err(FhirError::InvalidResponse {
                    what,
                    reason: format!("the batch answer for this entry holds no {rt} of its id"),
                }),
            },
            404 | 410 => Ok(BatchAnswer::Read(None)),
            _ => Err(failed(&answer)),
        },
        BatchEntry::Search(_) => unreachable!("answered above"),
        BatchEntry::Create { if_none_exist, .. } => match status {
            200..=299 => {
                let mut w = written()?;
                w.existed = if_none_exist.is_some() && status == 200;
                Ok(BatchAnswer::Written(w))
            }
            409 | 412 => Err(conflict()),
            _ => Err(failed(&answer)),
        },
        BatchEntry::Update { .. } | BatchEntry::Patch { .. } => match status {
            200..=299 => Ok(BatchAnswer::Written(written()?)),
            409 | 412 => Err(conflict()),
            _ => Err(failed(&answer)),
        },
        BatchEntry::Delete { .. } => match status {
            200..=299 | 404 | 410 => Ok(BatchAnswer::Deleted),
            409 | 412 => Err(conflict()),
            _ => Err(failed(&answer)),
        },
    }
}

/// Whether `r` carries every `identifier` and `_tag` token of the search (`system|value`,
/// or a bare value; ignoring case, as some servers match tokens).
fn carries_tokens(q: &Query, r: &Value) -> bool {
    q.params.iter().all(|(k, v)| {
        let (list, value_key) = match k.as_str() {
            "identifier" => (r.get("identifier"), "value"),
            "_tag" => (r.pointer("/meta/tag"), "code"),
            _ => return true,
        };
        let (system, value) = match v.split_once('|') {
            Some((s, v)) => (Some(s), v),
            None => (None, v.as_str()),
        };
        list.and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|t| {
                let is = |key: &str, want: &str| {
                    t.get(key)
                        .and_then(Value::as_str)
                        // exact: careplane wrote these tokens (a server matching them
                        // case-blind must not hand back another patient's care team)
                        .is_some_and(|v| v == want)
                };
                is(value_key, value) && system.is_none_or(|s| is("system", s))
            })
    })
}

/// One page of a search (`bundle`, a searchset): each match handed to `each` (moved out),
/// outcomes with a problem an error, a match of another resource type an error. Returns
/// how many entries the page held.
fn page_matches(
    q: &Query,
    what: &str,
    bundle: &mut Value,
    each: &mut (dyn FnMut(Value) + Send),
) -> Result<u64, FhirError> {
    let mut entries = match bundle.get_mut("entry").map(Value::take) {
        Some(Value::Array(e)) => e,
        _ => Vec::new(),
    };
    let page_entries = entries.len() as u64;
    for entry in entries.iter_mut() {
        // Some(true): a match; Some(false): an outcome; None: anything else
        let is_match = match entry.pointer("/search/mode").and_then(Value::as_str) {
            None | Some("match") => Some(true),
            Some("outcome") => Some(false),
            Some(_) => None,
        };
        let Some(resource) = entry.get_mut("resource") else {
            continue;
        };
        match is_match {
            Some(true) => {
                let rt = resource.get("resourceType").and_then(Value::as_str);
                if rt != Some(q.resource_type.as_str()) {
                    return Err(FhirError::InvalidResponse {
                        what: what.to_owned(),
                        reason: format!(
                            "the server returned a {} as a match of a {} search; careplane will not act on a result it did not ask for",
                            rt.unwrap_or("resource without a type"),
                            q.resource_type
                        ),
                    });
                }
                each(resource.take());
            }
            Some(false) => {
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
                        message(what, Some(resource)).unwrap_or_else(|| "no details".into())
                    )));
                }
            }
            None => {}
        }
    }
    Ok(page_entries)
}

/// A searchset's `next` link, if it has one.
fn next_link(bundle: &Value) -> Option<&str> {
    bundle
        .get("link")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|l| l.get("relation").and_then(Value::as_str) == Some("next"))
        .and_then(|l| l.get("url").and_then(Value::as_str))
}

/// A URL as it may be printed: scheme, host, port and path, never the query (search
/// values) or user info, and no patient id in the path.
fn shown_url(url: &Url) -> String {
    let mut segs: Vec<String> = Vec::new();
    let mut withhold = false;
    for s in url.path().split('/') {
        if withhold && !s.is_empty() && !s.starts_with('_') {
            segs.push("(id withheld)".into());
        } else {
            segs.push(s.to_owned());
        }
        withhold = matches!(s, "Patient" | "CareTeam" | "Consent");
    }
    format!("{}{}", url.origin().ascii_serialization(), segs.join("/"))
}

/// A failure to talk to the server at all, by its root cause: refused or reset
/// connections, DNS and connect timeouts are retried, TLS failures are not.
fn transport(what: &str, url: &Url, limits: &Limits, e: reqwest::Error) -> Failure {
    let host = match (url.host_str(), url.port_or_known_default()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => "the server".into(),
    };
    let error = match cause(&e) {
        Cause::Tls(reason) => FhirError::Tls {
            what: what.to_owned(),
            host,
            reason,
        },
        Cause::Timeout if e.is_connect() => FhirError::Timeout {
            what: what.to_owned(),
            url: shown_url(url),
            which: TimeoutKind::Connect,
            after: limits.connect_timeout,
        },
        c => FhirError::Transport {
            what: what.to_owned(),
            reason: match c {
                Cause::Dns => format!(
                    "could not find the server: the name {} does not resolve (DNS)",
                    url.host_str().unwrap_or("?")
                ),
                Cause::Refused => format!("{host} refused the connection (nothing listens there?)"),
                Cause::Reset => {
                    format!("the connection to {host} was closed before the answer was complete")
                }
                Cause::Timeout => format!("timed out talking to {host}"),
                Cause::Other(text) | Cause::Tls(text) => {
                    format!("could not talk to {host} ({text})")
                }
            },
        },
    };
    error.into()
}

enum Cause {
    Dns,
    Refused,
    Reset,
    Timeout,
    Tls(String),
    Other(String),
}

/// The root cause of a reqwest error, from its chain of sources (io errors, rustls errors,
/// and hyper's DNS error, which is only recognisable by its text).
fn cause(e: &reqwest::Error) -> Cause {
    use std::error::Error;
    use std::io::ErrorKind;
    // reqwest's own text names the URL (with its query): start at its sources.
    let mut src: Option<&(dyn Error + 'static)> = e.source();
    let mut innermost = String::from("no details");
    while let Some(s) = src {
        if let Some(tls) = s.downcast_ref::<rustls::Error>() {
            return Cause::Tls(tls.to_string());
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Cause::Tls(tls.to_string());
            }
            match io.kind() {
                ErrorKind::ConnectionRefused => return Cause::Refused,
                ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
                | ErrorKind::UnexpectedEof => return Cause::Reset,
                ErrorKind::TimedOut => return Cause::Timeout,
                _ => {}
            }
        }
        let text = s.to_string();
        if text.contains("dns error") || text.contains("failed to lookup address") {
            return Cause::Dns;
        }
        if text.contains("invalid peer certificate") || text.contains("tls handshake") {
            return Cause::Tls(text);
        }
        innermost = text;
        src = s.source();
    }
    if e.is_timeout() {
        Cause::Timeout
    } else if e.is_body() || e.is_decode() || e.is_request() && innermost.contains("closed") {
        Cause::Reset
    } else {
        Cause::Other(innermost)
    }
}

/// A failure in a few words, for the request log.
fn short(e: &FhirError) -> String {
    match e {
        FhirError::Http { status, .. } => format!("HTTP {status}"),
        FhirError::Timeout { which, after, .. } => {
            format!("{} timeout after {} s", which.name(), after.as_secs())
        }
        FhirError::Tls { .. } => "TLS failure".into(),
        FhirError::Transport { reason, .. } => reason.clone(),
        FhirError::Refused { .. } => "refused by careplane".into(),
        FhirError::Auth(_) => "authentication failed".into(),
        other => other.to_string(),
    }
}

/// A search's parameters, form-encoded (`If-None-Exist`, a batch entry's `ifNoneExist`).
fn search_params(q: &Query) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &q.params {
        ser.append_pair(k, v);
    }
    ser.finish()
}

/// The weak ETag of a version (`If-Match`, a batch entry's `ifMatch`).
fn weak_etag(version_id: &str) -> String {
    format!("W/\"{version_id}\"")
}

fn precondition_headers(pre: &Precondition) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(v) = &pre.version_id {
        if let Ok(v) = HeaderValue::from_str(&weak_etag(v)) {
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
/// one, else from `Location` / `Content-Location` (`…/Type/id[/_history/vid]`), else `ETag`.
fn written(rt: &str, resp: &Response) -> Option<Written> {
    let header = |name: &str| resp.headers.get(name).and_then(|v| v.to_str().ok());
    written_from(
        rt,
        resp.body(),
        header("Location").or_else(|| header("Content-Location")),
        header("ETag"),
    )
}

/// What a create or update wrote, from the server's answer (a single request's body,
/// location header and ETag, or a batch entry's `resource`, `response.location` and
/// `response.etag`): the id and version from the resource if it holds one, else from the
/// location (`…/Type/id[/_history/vid]`); the version else from the ETag.
fn written_from(
    rt: &str,
    body: Option<&Value>,
    location: Option<&str>,
    etag: Option<&str>,
) -> Option<Written> {
    let etag = etag.map(etag_version);
    if let Some(b) = body
        && let Some(id) = b.get("id").and_then(Value::as_str)
    {
        return Some(Written {
            id: id.to_owned(),
            version_id: b
                .pointer("/meta/versionId")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or(etag),
            existed: false,
        });
    }
    let path = location?.split('?').next()?;
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let i = segs.iter().rposition(|s| *s == rt)?;
    let id = segs.get(i + 1)?.to_string();
    let version = match (segs.get(i + 2), segs.get(i + 3)) {
        (Some(&"_history"), Some(v)) => Some(v.to_string()),
        _ => etag,
    };
    Some(Written {
        id,
        version_id: version,
        existed: false,
    })
}

/// The version an ETag names (`W/"3"` → `3`).
fn etag_version(etag: &str) -> String {
    etag.trim_start_matches("W/").trim_matches('"').to_owned()
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

/// The redirect policy of every client that carries credentials: redirects are followed
/// only within `base`'s origin (and at most 5), so a token never follows one elsewhere.
pub fn same_origin_redirects(base: &url::Url) -> reqwest::redirect::Policy {
    let origin = base.origin();
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 5 || attempt.url().origin() != origin {
            attempt.stop()
        } else {
            attempt.follow()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(base: &str) -> HttpStore {
        HttpStore::new(base, Auth::None).unwrap()
    }

    #[test]
    fn next_links_stay_on_the_targets_origin() {
        let s = store("https://fhir.example.org/r4");
        let from = Url::parse("https://fhir.example.org/r4/Group?_count=100").unwrap();
        // relative and same-origin links are followed
        assert_eq!(
            s.follow(&from, "Group?page=2", "w").unwrap().as_str(),
            "https://fhir.example.org/r4/Group?page=2"
        );
        assert!(
            s.follow(&from, "https://fhir.example.org/other/x", "w")
                .is_ok()
        );
        // a downgrade to http, another port, another host, another scheme: refused
        let downgrade = s
            .follow(&from, "http://fhir.example.org/r4/Group?page=2", "w")
            .unwrap_err()
            .to_string();
        assert!(
            downgrade.contains("from https to plain http"),
            "{downgrade}"
        );
        for link in [
            "https://fhir.example.org:8443/r4/Group",
            "https://evil.example.net/r4/Group",
            "//evil.example.net/r4/Group",
            "ftp://fhir.example.org/r4/Group",
            "file:///etc/passwd",
        ] {
            let e = s.follow(&from, link, "w").unwrap_err();
            assert!(matches!(e, FhirError::Refused { .. }), "{link}: {e}");
            assert!(!e.is_transient());
        }
    }

    #[test]
    fn printed_urls_have_no_query_user_or_patient_id() {
        let u = Url::parse("https://svc:pw@h.example.org:8443/r4/Patient/123/_history?name=Doe")
            .unwrap();
        assert_eq!(
            shown_url(&u),
            "https://h.example.org:8443/r4/Patient/(id withheld)/_history"
        );
        let g = Url::parse("http://127.0.0.1:9/fhir/Group/g1?x=1").unwrap();
        assert_eq!(shown_url(&g), "http://127.0.0.1:9/fhir/Group/g1");
    }

    #[test]
    fn only_http_bases_are_targets() {
        assert!(HttpStore::new("file:///tmp/store", Auth::None).is_err());
        assert!(HttpStore::new("https://fhir.example.org", Auth::None).is_ok());
    }

    #[test]
    fn a_password_in_the_base_url_is_registered_for_redaction() {
        let _ = store("https://svc:pw-in-url-4711@fhir.example.org/r4");
        assert_eq!(
            crate::output::scrub("failed for svc:pw-in-url-4711@"),
            "failed for svc:[redacted]@"
        );
    }

    #[test]
    fn a_batch_search_answer_is_checked_like_a_single_search() {
        let q = Query::new("CareTeam")
            .param("identifier", "https://careplane.dev/id/p|care-team/1")
            .param("_tag", "https://careplane.dev/project|p");
        let team = |value: &str| {
            serde_json::json!({"resourceType": "CareTeam", "id": value,
                "meta": {"tag": [{"system": "https://careplane.dev/project", "code": "p"}]},
                "identifier": [{"system": "https://careplane.dev/id/p", "value": value}]})
        };
        let answer = |teams: Vec<Value>, next: bool| {
            let entries: Vec<Value> = teams
                .into_iter()
                .map(|t| serde_json::json!({"resource": t}))
                .collect();
            let mut b = serde_json::json!({"resourceType": "Bundle", "type": "searchset", "entry": entries});
            if next {
                b["link"] = serde_json::json!([{"relation": "next", "url": "CareTeam?page=2"}]);
            }
            serde_json::json!({"response": {"status": "200 OK"}, "resource": b})
        };
        let entry = BatchEntry::Search(q);
        assert_eq!(
            batch_answer(&entry, answer(vec![team("care-team/1")], false)).unwrap(),
            BatchAnswer::Found {
                matches: vec![team("care-team/1")],
                complete: true
            }
        );
        assert!(matches!(
            batch_answer(&entry, answer(vec![], true)).unwrap(),
            BatchAnswer::Found {
                complete: false,
                ..
            }
        ));
        // a server that ignored the identifier: refused, not the first care team it had
        let e = batch_answer(&entry, answer(vec![team("care-team/2")], false)).unwrap_err();
        assert!(
            e.to_string()
                .contains("careplane will not act on a result it did not ask for"),
            "{e}"
        );
        let failed = serde_json::json!({"response": {"status": "400 Bad Request"}});
        assert!(matches!(
            batch_answer(&entry, failed),
            Err(FhirError::Http { status: 400, .. })
        ));
        // tokens match exactly: a case-blind server's other care team is not this one
        let e = batch_answer(&entry, answer(vec![team("CARE-TEAM/1")], false)).unwrap_err();
        assert!(e.to_string().contains("did not ask for"), "{e}");
    }

    /// A read answered with another resource (a server that mixed up the answers of a
    /// Bundle) is no answer for that entry.
    #[test]
    fn a_batch_read_answer_must_be_the_resource_asked_for() {
        let entry = BatchEntry::Read {
            resource_type: "Group".into(),
            id: "g1".into(),
        };
        let answer = |id: &str| {
            serde_json::json!({"response": {"status": "200 OK"},
                "resource": {"resourceType": "Group", "id": id, "meta": {"versionId": "1"}}})
        };
        assert!(matches!(
            batch_answer(&entry, answer("g1")),
            Ok(BatchAnswer::Read(Some(_)))
        ));
        assert!(matches!(
            batch_answer(&entry, answer("g2")),
            Err(FhirError::InvalidResponse { .. })
        ));
    }

    #[test]
    fn what_was_written_is_read_alike_from_a_body_a_location_or_an_etag() {
        let body = serde_json::json!({"id": "g1", "meta": {"versionId": "4"}});
        let w = |id: &str, v: Option<&str>| Written {
            id: id.into(),
            version_id: v.map(str::to_owned),
            existed: false,
        };
        assert_eq!(
            written_from("Group", Some(&body), None, Some("W/\"9\"")),
            Some(w("g1", Some("4")))
        );
        assert_eq!(
            written_from(
                "Group",
                Some(&serde_json::json!({"id": "g1"})),
                None,
                Some("W/\"9\"")
            ),
            Some(w("g1", Some("9")))
        );
        assert_eq!(
            written_from(
                "Group",
                None,
                Some("https://x/fhir/Group/g2/_history/3"),
                Some("W/\"9\"")
            ),
            Some(w("g2", Some("3")))
        );
        assert_eq!(
            written_from("Group", None, Some("Group/g2"), Some("W/\"9\"")),
            Some(w("g2", Some("9")))
        );
        assert_eq!(written_from("Group", None, Some("Patient/x"), None), None);
        // a batch entry without either: the id it was sent with
        let update = BatchEntry::Update {
            resource: serde_json::json!({"resourceType": "Group", "id": "g3"}),
            pre: Precondition::default(),
        };
        let a = serde_json::json!({"response": {"status": "200 OK", "etag": "W/\"5\""}});
        assert_eq!(
            batch_answer(&update, a).unwrap(),
            BatchAnswer::Written(w("g3", Some("5")))
        );
    }
}
