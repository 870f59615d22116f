//! Talking to a target: the FHIR REST interactions careplane needs, over HTTP
//! ([`http::HttpStore`]) or against the embedded NDJSON file store ([`file::FileStore`]).
//!
//! Both answer the same calls with the same typed errors, so observe and apply never know
//! which one they talk to. Resources stay `serde_json::Value`: careplane only touches the
//! fields it manages and sends everything else back unchanged.

pub mod auth;
pub mod file;
pub mod http;
pub mod patch;

use serde_json::Value;

/// A search: resource type plus parameters. Parameters may identify people, so they are
/// never printed (see [`Query::describe`]).
#[derive(Clone, Debug)]
pub struct Query {
    pub resource_type: String,
    pub params: Vec<(String, String)>,
}

impl Query {
    pub fn new(resource_type: &str) -> Self {
        Query {
            resource_type: resource_type.to_owned(),
            params: Vec::new(),
        }
    }
    pub fn param(mut self, name: &str, value: impl Into<String>) -> Self {
        self.params.push((name.to_owned(), value.into()));
        self
    }
    /// What may be logged: the type and the parameter *names*, never their values.
    ///
    /// ```
    /// use careplane::fhir::Query;
    /// let q = Query::new("Patient").param("identifier", "urn:mrn|12345");
    /// assert_eq!(q.describe(), "Patient search by identifier");
    /// ```
    pub fn describe(&self) -> String {
        let names: Vec<&str> = self.params.iter().map(|(k, _)| k.as_str()).collect();
        if names.is_empty() {
            format!("{} search", self.resource_type)
        } else {
            format!("{} search by {}", self.resource_type, names.join(", "))
        }
    }
}

/// What a write must find on the server to go ahead.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Precondition {
    /// `meta.versionId` seen when planning (sent as `If-Match: W/"…"`).
    pub version_id: Option<String>,
    /// `meta.lastUpdated` seen when planning (for servers without versions).
    pub last_updated: Option<String>,
}

impl Precondition {
    /// "Unchanged since this read": the version (or last update) a resource carries.
    pub fn seen_on(live: &Value) -> Self {
        Precondition {
            version_id: crate::vocab::json::meta(live, "versionId"),
            last_updated: crate::vocab::json::meta(live, "lastUpdated"),
        }
    }
}

/// The server's answer to a create or update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub id: String,
    pub version_id: Option<String>,
    /// A conditional create found the resource already there instead of creating it.
    pub existed: bool,
}

/// One entry of a FHIR `batch` Bundle: each is answered on its own, with the same
/// preconditions a single request carries (`ifMatch`, `ifNoneExist`).
#[derive(Clone, Debug)]
pub enum BatchEntry {
    Read {
        resource_type: String,
        id: String,
    },
    /// A search, answered with its first page (see [`BatchAnswer::Found`]).
    Search(Query),
    Create {
        resource: Value,
        if_none_exist: Option<Query>,
    },
    Update {
        resource: Value,
        pre: Precondition,
    },
    /// A JSON Patch (RFC 6902) of one resource.
    Patch {
        resource_type: String,
        id: String,
        ops: Value,
        pre: Precondition,
    },
    Delete {
        resource_type: String,
        id: String,
        pre: Precondition,
    },
}

impl BatchEntry {
    /// The entry's request in words, as a single request's errors name it (no patient ids).
    pub fn what(&self) -> String {
        match self {
            BatchEntry::Read { resource_type, id } => format!("read {}", shown(resource_type, id)),
            BatchEntry::Search(q) => format!("{} (GET {})", q.describe(), q.resource_type),
            BatchEntry::Create { resource, .. } => format!(
                "create {}",
                resource["resourceType"].as_str().unwrap_or("resource")
            ),
            BatchEntry::Update { resource, .. } => format!(
                "update {}",
                shown(
                    resource["resourceType"].as_str().unwrap_or_default(),
                    resource["id"].as_str().unwrap_or_default()
                )
            ),
            BatchEntry::Patch {
                resource_type, id, ..
            } => format!("patch {}", shown(resource_type, id)),
            BatchEntry::Delete {
                resource_type, id, ..
            } => format!("delete {}", shown(resource_type, id)),
        }
    }
}

/// A batch entry's answer: what the single request would have returned.
#[derive(Clone, Debug, PartialEq)]
pub enum BatchAnswer {
    /// A read: the resource, or `None` when it is gone (404, 410).
    Read(Option<Value>),
    /// A search: the matches of its first page, and whether that page is all of them
    /// (no `next` link).
    Found {
        matches: Vec<Value>,
        complete: bool,
    },
    /// A create, update or patch.
    Written(Written),
    Deleted,
}

/// What a server says it can do beyond single requests (its CapabilityStatement).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerFeatures {
    /// `batch` Bundles (`rest.interaction` lists `batch`).
    pub batch: bool,
    /// Resource types that take a JSON Patch (`rest.resource.interaction` lists `patch`).
    pub patch: std::collections::BTreeSet<String>,
}

impl ServerFeatures {
    /// Read from a CapabilityStatement.
    pub fn from_capability_statement(cs: &Value) -> Self {
        let mut f = ServerFeatures::default();
        let codes = |v: &Value| -> Vec<String> {
            v["interaction"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["code"].as_str().map(str::to_owned))
                .collect()
        };
        for rest in cs["rest"].as_array().into_iter().flatten() {
            if rest["mode"].as_str().is_some_and(|m| m != "server") {
                continue;
            }
            f.batch |= codes(rest).iter().any(|c| c == "batch");
            for r in rest["resource"].as_array().into_iter().flatten() {
                if let Some(t) = r["type"].as_str()
                    && codes(r).iter().any(|c| c == "patch")
                {
                    f.patch.insert(t.to_owned());
                }
            }
        }
        f
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FhirError {
    #[error(
        "{resource} changed on the server since it was read (the server refused the write with HTTP {status}); run plan again"
    )]
    Conflict { resource: String, status: u16 },
    #[error("{what} failed: HTTP {status}{}", message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Http {
        what: String,
        status: u16,
        message: Option<String>,
    },
    /// The request did not get an answer: DNS, a refused or reset connection (retried).
    #[error("{what} failed: {reason}")]
    Transport { what: String, reason: String },
    /// TLS failed (a certificate the client does not trust, a server that does not speak
    /// TLS): never retried, since sending the same request again cannot fix it.
    #[error(
        "{what} failed: the TLS connection to {host} failed ({reason}); check the target URL and the server's certificate"
    )]
    Tls {
        what: String,
        host: String,
        reason: String,
    },
    /// One of the target's timeouts fired (`limits` in the project file).
    #[error("{what} failed: no {kind} within the {limit}-second {name} timeout ({url})", kind = which.waited_for(), limit = after.as_secs(), name = which.name())]
    Timeout {
        what: String,
        url: String,
        which: TimeoutKind,
        after: std::time::Duration,
    },
    /// A large write got no answer (HTTP 408 or 504, or a timeout): the server may have
    /// stored it, so it is not sent again whole; apply reads the object back to see.
    #[error(
        "{what} got no answer ({reason}) for a write of {size}; careplane did not send it again whole, since the server may still be storing it"
    )]
    LargeWriteUnanswered {
        what: String,
        reason: String,
        size: String,
    },
    /// careplane would not go on with what the server sent (a link to another origin, an
    /// answer over the size limit, a search that does not end).
    #[error("{what}: careplane stopped: {reason}")]
    Refused { what: String, reason: String },
    #[error("{what}: the server's answer was not understood ({reason})")]
    InvalidResponse { what: String, reason: String },
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("file store {path}: {reason}")]
    Store { path: String, reason: String },
    /// Another careplane process held the file store's lock for the whole wait.
    #[error(
        "file store {path}: gave up after waiting {} for its lock (another careplane process holds it); try again when it is done, or wait longer with CAREPLANE_LOCK_TIMEOUT (seconds)",
        humantime::format_duration(*.waited)
    )]
    StoreLocked {
        path: String,
        waited: std::time::Duration,
    },
}

impl FhirError {
    /// Whether the same request may succeed if sent again later.
    pub fn is_transient(&self) -> bool {
        match self {
            FhirError::Http { status, .. } => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
            FhirError::Transport { .. } => true,
            FhirError::Timeout { which, .. } => *which != TimeoutKind::Total,
            _ => false,
        }
    }
}

/// Which of a request's timeouts fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutKind {
    /// Opening the connection (TCP and TLS).
    Connect,
    /// Waiting for the next part of the answer (headers or body bytes).
    Read,
    /// The whole request, answer included. Not retried: a server that answers this
    /// slowly will do so again.
    Total,
}

impl TimeoutKind {
    pub fn name(self) -> &'static str {
        match self {
            TimeoutKind::Connect => "connect",
            TimeoutKind::Read => "read",
            TimeoutKind::Total => "request",
        }
    }
    fn waited_for(self) -> &'static str {
        match self {
            TimeoutKind::Connect => "connection",
            TimeoutKind::Read => "answer",
            TimeoutKind::Total => "complete answer",
        }
    }
}

/// How a resource may be named in messages and logs: `Type/id`, except where the id
/// identifies a patient (a Patient, or a Canvas CareTeam whose id is the patient id),
/// which are named by type only. Other ids (teams, tasks, staff) are configuration.
pub fn shown(resource_type: &str, id: &str) -> String {
    match resource_type {
        "Patient" | "CareTeam" | "Consent" => format!("{resource_type}/(id withheld)"),
        _ => format!("{resource_type}/{id}"),
    }
}

/// A resource's `resourceType`.
pub(crate) fn resource_type(resource: &Value) -> Result<&str, FhirError> {
    resource
        .get("resourceType")
        .and_then(Value::as_str)
        .ok_or_else(|| FhirError::Unsupported("resource without resourceType".into()))
}

/// The text of an OperationOutcome's issues (`details.text`, else `diagnostics`).
pub fn outcome_text(body: &Value) -> Option<String> {
    if body.get("resourceType")?.as_str()? != "OperationOutcome" {
        return None;
    }
    let texts: Vec<String> = body
        .get("issue")?
        .as_array()?
        .iter()
        .filter_map(|i| {
            i.pointer("/details/text")
                .or_else(|| i.get("diagnostics"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    (!texts.is_empty()).then(|| texts.join("; "))
}

/// A target store: HTTP FHIR server or local files.
// One store per command: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Store {
    Http(http::HttpStore),
    File(file::FileStore),
}

impl Store {
    /// Every resource matching the query (all pages).
    pub async fn search(&self, q: &Query) -> Result<Vec<Value>, FhirError> {
        match self {
            Store::Http(s) => s.search(q).await,
            Store::File(s) => s.search(q).await,
        }
    }
    /// Every resource matching the query, handed to `each` as it is read (page by page,
    /// or line by line from a file), moved and never copied: for callers that reduce
    /// large results to a few fields instead of holding them whole.
    pub async fn search_each(
        &self,
        q: &Query,
        each: &mut (dyn FnMut(Value) + Send),
    ) -> Result<(), FhirError> {
        match self {
            Store::Http(s) => s.search_each(q, each).await,
            Store::File(s) => s.search_each(q, each).await,
        }
    }
    pub async fn read(&self, resource_type: &str, id: &str) -> Result<Option<Value>, FhirError> {
        match self {
            Store::Http(s) => s.read(resource_type, id).await,
            Store::File(s) => s.read(resource_type, id).await,
        }
    }
    /// Create; `if_none_exist` is a search (`identifier=sys|val`) that must match nothing,
    /// which also makes the create safe to retry.
    pub async fn create(
        &self,
        resource: &Value,
        if_none_exist: Option<&Query>,
    ) -> Result<Written, FhirError> {
        match self {
            Store::Http(s) => s.create(resource, if_none_exist).await,
            Store::File(s) => s.create(resource, if_none_exist).await,
        }
    }
    pub async fn update(&self, resource: &Value, pre: &Precondition) -> Result<Written, FhirError> {
        match self {
            Store::Http(s) => s.update(resource, pre).await,
            Store::File(s) => s.update(resource, pre).await,
        }
    }
    /// A JSON Patch (RFC 6902) of one resource, under `pre` (HTTP servers whose
    /// CapabilityStatement lists `patch`; see [`Store::features`]).
    pub async fn patch(
        &self,
        resource_type: &str,
        id: &str,
        ops: &Value,
        pre: &Precondition,
    ) -> Result<Written, FhirError> {
        match self {
            Store::Http(s) => s.patch(resource_type, id, ops, pre).await,
            Store::File(_) => Err(FhirError::Unsupported(
                "the file store takes whole resources, not patches".into(),
            )),
        }
    }

    /// Send `entries` as one FHIR `batch` Bundle: one answer per entry, in order (an
    /// entry's failure is its own). The error is the whole request's (nothing or anything
    /// may have landed when its answer was lost). The file store answers the entries one
    /// by one.
    pub async fn batch(
        &self,
        entries: &[BatchEntry],
    ) -> Result<Vec<Result<BatchAnswer, FhirError>>, FhirError> {
        match self {
            Store::Http(s) => s.batch(entries).await,
            Store::File(s) => {
                let mut out = Vec::with_capacity(entries.len());
                for e in entries {
                    out.push(match e {
                        BatchEntry::Read { resource_type, id } => {
                            s.read(resource_type, id).await.map(BatchAnswer::Read)
                        }
                        BatchEntry::Search(q) => {
                            s.search(q).await.map(|matches| BatchAnswer::Found {
                                matches,
                                complete: true,
                            })
                        }
                        BatchEntry::Create {
                            resource,
                            if_none_exist,
                        } => s
                            .create(resource, if_none_exist.as_ref())
                            .await
                            .map(BatchAnswer::Written),
                        BatchEntry::Update { resource, pre } => {
                            s.update(resource, pre).await.map(BatchAnswer::Written)
                        }
                        BatchEntry::Patch { .. } => Err(FhirError::Unsupported(
                            "the file store takes whole resources, not patches".into(),
                        )),
                        BatchEntry::Delete {
                            resource_type,
                            id,
                            pre,
                        } => s
                            .delete(resource_type, id, pre)
                            .await
                            .map(|()| BatchAnswer::Deleted),
                    });
                }
                Ok(out)
            }
        }
    }

    /// What the target can do beyond single requests: the server's CapabilityStatement,
    /// read once (a server that does not show one gets single requests only). The file
    /// store: nothing (its writes are local; it has no patches).
    pub async fn features(&self) -> ServerFeatures {
        match self {
            Store::Http(s) => s.features().await,
            Store::File(_) => ServerFeatures::default(),
        }
    }

    /// Versions of a resource, newest first, where the target keeps them (HTTP servers
    /// with `_history`); `None` otherwise.
    pub async fn history(
        &self,
        resource_type: &str,
        id: &str,
        max: u32,
    ) -> Result<Option<Vec<Value>>, FhirError> {
        match self {
            Store::Http(s) => s.history(resource_type, id, max).await,
            Store::File(_) => Ok(None),
        }
    }

    pub async fn delete(
        &self,
        resource_type: &str,
        id: &str,
        pre: &Precondition,
    ) -> Result<(), FhirError> {
        match self {
            Store::Http(s) => s.delete(resource_type, id, pre).await,
            Store::File(s) => s.delete(resource_type, id, pre).await,
        }
    }
    /// Who the target's credentials name (HTTP targets; a file store has none).
    pub fn caller(&self) -> Option<auth::Caller> {
        match self {
            Store::Http(s) => s.caller(),
            Store::File(_) => None,
        }
    }

    /// Report every page a search reads (HTTP targets; a file store reads whole files).
    pub fn set_page_hook(&mut self, hook: http::PageHook) {
        if let Store::Http(s) = self {
            s.set_page_hook(hook);
        }
    }

    /// Requests sent so far (HTTP requests, or file-store operations).
    pub fn request_count(&self) -> u64 {
        match self {
            Store::Http(s) => s.request_count(),
            Store::File(s) => s.request_count(),
        }
    }
}

/// A FHIR `instant` (`2026-11-20T14:05:00.123+01:00`, `…Z`) as a point in time.
///
/// ```
/// let t = careplane::fhir::parse_instant("2026-11-20T15:05:00+01:00").unwrap();
/// assert_eq!(httpdate::fmt_http_date(t), "Fri, 20 Nov 2026 14:05:00 GMT");
/// ```
pub fn parse_instant(s: &str) -> Option<std::time::SystemTime> {
    let s = s.trim();
    let (date, rest) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let tz_at = rest.find(['Z', 'z', '+', '-']).unwrap_or(rest.len());
    let (time, tz) = rest.split_at(tz_at);
    let mut t = time.splitn(3, ':');
    let (hh, mm) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let secs: f64 = t.next().unwrap_or("0").parse().ok()?;
    let offset = match tz {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            let (oh, om) = tz[1..].split_once(':')?;
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60)
        }
    };
    // days from 1970-01-01 (Howard Hinnant's days_from_civil)
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let whole = days * 86_400 + hh * 3600 + mm * 60 + secs.trunc() as i64 - offset;
    let nanos = ((secs.fract()) * 1e9).round() as u32;
    let base = std::time::UNIX_EPOCH;
    if whole >= 0 {
        Some(base + std::time::Duration::new(whole as u64, nanos))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_with_offsets_and_fractions() {
        let z = parse_instant("2026-11-20T14:05:00.000Z").unwrap();
        assert_eq!(httpdate::fmt_http_date(z), "Fri, 20 Nov 2026 14:05:00 GMT");
        let plus = parse_instant("2026-11-20T15:05:00+01:00").unwrap();
        assert_eq!(plus, z);
        assert_eq!(
            httpdate::fmt_http_date(parse_instant("2000-02-29T23:59:59-00:30").unwrap()),
            "Wed, 01 Mar 2000 00:29:59 GMT"
        );
        assert!(parse_instant("yesterday").is_none());
    }
}
