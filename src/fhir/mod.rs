//! Talking to a target: the FHIR REST interactions careplane needs, over HTTP
//! ([`http::HttpStore`]) or against the embedded NDJSON file store ([`file::FileStore`]).
//!
//! Both answer the same calls with the same typed errors, so observe and apply never know
//! which one they talk to. Resources stay `serde_json::Value`: careplane only touches the
//! fields it manages and sends everything else back unchanged.

pub mod auth;
pub mod file;
pub mod http;

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

/// The server's answer to a create or update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub id: String,
    pub version_id: Option<String>,
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
    #[error("{what} failed: could not reach the server ({reason})")]
    Transport { what: String, reason: String },
    #[error("{what}: the server's answer was not understood ({reason})")]
    InvalidResponse { what: String, reason: String },
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("file store {path}: {reason}")]
    Store { path: String, reason: String },
}

impl FhirError {
    /// Whether the same request may succeed if sent again later.
    pub fn is_transient(&self) -> bool {
        match self {
            FhirError::Http { status, .. } => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
            FhirError::Transport { .. } => true,
            _ => false,
        }
    }
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
    /// Requests sent so far (HTTP requests, or file-store operations).
    pub fn request_count(&self) -> u64 {
        match self {
            Store::Http(s) => s.request_count(),
            Store::File(s) => s.request_count(),
        }
    }
}
