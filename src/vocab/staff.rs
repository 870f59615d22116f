//! The staff directory: practitioners indexed by the ways manifests name them.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::manifest::Diagnostic;
use crate::model::PractitionerRef;

/// Practitioners indexed by the ways manifests name them.
#[derive(Clone, Debug, Default)]
pub struct StaffIndex {
    pub by_npi: BTreeMap<String, Vec<String>>,
    pub by_email: BTreeMap<String, Vec<String>>,
    pub ids: std::collections::BTreeSet<String>,
    /// id → how a manifest would name them (`npi …`, else `email …`).
    pub names: BTreeMap<String, String>,
}

/// Why a practitioner reference did not resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unresolved {
    Missing,
    Ambiguous(usize),
}

impl StaffIndex {
    pub const NPI_SYSTEM: &'static str = "http://hl7.org/fhir/sid/us-npi";

    pub fn from_practitioners(resources: &[Value]) -> Self {
        let mut idx = StaffIndex::default();
        for r in resources {
            let Some(id) = r.get("id").and_then(Value::as_str) else {
                continue;
            };
            idx.ids.insert(id.to_owned());
            for ident in r
                .get("identifier")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if ident.get("system").and_then(Value::as_str) == Some(Self::NPI_SYSTEM)
                    && let Some(v) = ident.get("value").and_then(Value::as_str)
                {
                    idx.by_npi
                        .entry(v.to_owned())
                        .or_default()
                        .push(id.to_owned());
                    idx.names.insert(id.to_owned(), format!("npi {v}"));
                }
            }
            for t in r
                .get("telecom")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if t.get("system").and_then(Value::as_str) == Some("email")
                    && let Some(v) = t.get("value").and_then(Value::as_str)
                {
                    let ids = idx.by_email.entry(v.trim().to_lowercase()).or_default();
                    if !ids.iter().any(|x| x == id) {
                        ids.push(id.to_owned());
                    }
                    idx.names
                        .entry(id.to_owned())
                        .or_insert_with(|| format!("email {v}"));
                }
            }
        }
        idx
    }

    /// `Practitioner/<id>` for a manifest reference, or a diagnostic at its position.
    /// `place` says where staff were looked for ("on the target"), `add` how to add them.
    pub fn resolve_located(
        &self,
        r: &crate::model::Located<PractitionerRef>,
        place: &str,
        add: &str,
    ) -> Result<String, Diagnostic> {
        self.resolve(&r.value)
            .map(|id| format!("Practitioner/{id}"))
            .map_err(|why| {
                let (message, help) = match why {
                    Unresolved::Missing => (
                        format!("no Practitioner {place} has {}", r.value),
                        format!("careplane never creates staff: {add}, or fix the reference"),
                    ),
                    Unresolved::Ambiguous(n) => (
                        format!("{n} Practitioners {place} have {}", r.value),
                        "name this staff member by id or NPI instead".to_owned(),
                    ),
                };
                Diagnostic {
                    source: r.source.clone(),
                    message,
                    help: Some(help),
                }
            })
    }

    /// How to name `Practitioner/<id>` for a reviewer.
    pub fn describe(&self, reference: &str) -> Option<&String> {
        self.names.get(reference.strip_prefix("Practitioner/")?)
    }

    /// The Practitioner id a reference names.
    pub fn resolve(&self, r: &PractitionerRef) -> Result<String, Unresolved> {
        let found: Vec<String> = match r {
            PractitionerRef::Id(id) => self.ids.get(id).cloned().into_iter().collect(),
            PractitionerRef::Npi(n) => self.by_npi.get(n).cloned().unwrap_or_default(),
            PractitionerRef::Email(e) => self
                .by_email
                .get(&e.trim().to_lowercase())
                .cloned()
                .unwrap_or_default(),
        };
        match found.len() {
            0 => Err(Unresolved::Missing),
            1 => Ok(found[0].clone()),
            n => Err(Unresolved::Ambiguous(n)),
        }
    }
}
