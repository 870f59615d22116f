//! Objects as the stages see them: desired (from the manifests), observed (recognised on
//! the target) and foreign (look-alikes careplane does not own), as maps of managed fields.

use std::collections::BTreeMap;

use serde_json::Value;

use super::ObjectKind;
use crate::model::Source;

/// Managed fields of one object, by field name. Lists whose order means nothing are kept
/// sorted so that order never shows up as drift.
pub type Fields = BTreeMap<String, Value>;

/// One object as the manifests want it on this target.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredObject {
    pub kind: ObjectKind,
    /// Manifest name (`metadata.name`), or the catalog's name.
    pub name: String,
    /// A name a person recognises on the server (team name), used to spot same-named
    /// objects careplane does not own.
    pub natural_key: Option<String>,
    pub fields: Fields,
    /// Where each field was asked for.
    pub field_sources: BTreeMap<String, Source>,
    /// The manifest position that declares the object.
    pub source: Source,
    /// How the manifests name values that are ids on the server (`Practitioner/ab12` →
    /// `npi 1234567893`), so a reviewer can tell who a reference is.
    pub labels: BTreeMap<String, String>,
    /// Fields careplane only adds to (additive membership): the live values stay.
    pub additive: Vec<&'static str>,
    /// Refuse to apply when a sensitive list would lose more than this share.
    pub max_removal_share: Option<f64>,
    /// Compare only the fields declared here (a routing rule sets some of a task's fields
    /// and says nothing about the others).
    pub only_declared: bool,
    /// What apply does with it ([`Operation::Object`] unless a rule routes a task; the
    /// routing rule is then also why the object is wanted).
    pub operation: super::Operation,
}

/// A catalog object (all roles, all care-team roles) keeps one managed field per entry,
/// named by its key: `concept[CODE]`.
///
/// ```
/// use careplane::vocab::object::{catalog_entry, catalog_field};
/// assert_eq!(catalog_entry(&catalog_field("MD")), Some("MD"));
/// assert_eq!(catalog_entry("name"), None);
/// ```
pub fn catalog_field(key: &str) -> String {
    format!("concept[{key}]")
}

/// The entry key of a catalog field, or `None` for any other field.
pub fn catalog_entry(field: &str) -> Option<&str> {
    field.strip_prefix("concept[")?.strip_suffix(']')
}

/// Evaluated patient-group memberships: group name → `Patient/<id>` references.
pub type Memberships = BTreeMap<String, std::collections::BTreeSet<String>>;

/// A live object the dialect recognised, read back into managed fields.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedObject {
    pub kind: ObjectKind,
    /// The manifest name careplane recorded on it, where the target can hold one.
    pub name: Option<String>,
    /// The key the server shows (team name, `Practitioner/<id>`, role code).
    pub natural_key: Option<String>,
    pub resource_type: String,
    pub id: String,
    pub version_id: Option<String>,
    pub last_updated: Option<String>,
    pub fields: Fields,
    /// careplane may delete or retire it once no manifest declares it (it carries the
    /// project's ownership tag, or the target declares every object of the kind managed).
    pub managed: bool,
    /// Only `fields` can be seen on the target: compare just those.
    pub partial: bool,
    /// What on the target shows that the object exists, when it cannot be read directly
    /// ("role code MD is held by 3 staff members").
    pub evidence: Option<String>,
}

impl ObservedObject {
    /// How to call it in messages: the manifest name, else the server's key, else the id.
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .or_else(|| self.natural_key.clone())
            .unwrap_or_else(|| self.id.clone())
    }
}

/// A live resource careplane does not own but that a manifest object could be mistaken for.
#[derive(Clone, Debug, PartialEq)]
pub struct ForeignObject {
    pub kind: ObjectKind,
    pub natural_key: String,
    pub resource_type: String,
    pub id: String,
    pub version_id: Option<String>,
    pub last_updated: Option<String>,
    /// Its managed fields, for adoption (`--adopt`, `import`).
    pub fields: Fields,
}

/// What a dialect makes of one live resource.
#[derive(Clone, Debug, PartialEq)]
pub enum Recognised {
    /// An object of a kind careplane manages (owned or, on natural-key targets, matched).
    Object(ObservedObject),
    /// An object careplane does not own that a manifest object could be mistaken for.
    Foreign(Box<ForeignObject>),
    /// Anything else.
    Other,
}

impl Recognised {
    pub fn object(self) -> Option<ObservedObject> {
        match self {
            Recognised::Object(o) => Some(o),
            _ => None,
        }
    }
}
