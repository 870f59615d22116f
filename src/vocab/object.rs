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

/// An [`ObservedObject`] held compactly: boxed strings and its non-null fields as one
/// sorted slice (a null field reads as an absent one everywhere: diff and routing skip
/// both). For kinds observed by the hundred thousand (open tasks), of which a plan turns
/// only the few it touches back into [`ObservedObject`]s.
#[derive(Clone, Debug, PartialEq)]
pub struct CompactObject {
    pub kind: ObjectKind,
    name: Option<Box<str>>,
    natural_key: Option<Box<str>>,
    resource_type: Box<str>,
    id: Box<str>,
    version_id: Option<Box<str>>,
    last_updated: Option<Box<str>>,
    fields: Box<[(Box<str>, Value)]>,
    managed: bool,
    partial: bool,
    evidence: Option<Box<str>>,
}

impl CompactObject {
    pub fn new(o: ObservedObject) -> Self {
        let boxed = |s: Option<String>| s.map(String::into_boxed_str);
        CompactObject {
            kind: o.kind,
            name: boxed(o.name),
            natural_key: boxed(o.natural_key),
            resource_type: o.resource_type.into_boxed_str(),
            id: o.id.into_boxed_str(),
            version_id: boxed(o.version_id),
            last_updated: boxed(o.last_updated),
            fields: o
                .fields
                .into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.into_boxed_str(), v))
                .collect(),
            managed: o.managed,
            partial: o.partial,
            evidence: boxed(o.evidence),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn natural_key(&self) -> Option<&str> {
        self.natural_key.as_deref()
    }

    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// A non-null field.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields
            .binary_search_by(|(k, _)| (**k).cmp(name))
            .ok()
            .map(|i| &self.fields[i].1)
    }

    /// The object as the stages see it (without the null fields).
    pub fn to_observed(&self) -> ObservedObject {
        let owned = |s: &Option<Box<str>>| s.as_deref().map(str::to_owned);
        ObservedObject {
            kind: self.kind,
            name: owned(&self.name),
            natural_key: owned(&self.natural_key),
            resource_type: self.resource_type.to_string(),
            id: self.id.to_string(),
            version_id: owned(&self.version_id),
            last_updated: owned(&self.last_updated),
            fields: self
                .fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            managed: self.managed,
            partial: self.partial,
            evidence: owned(&self.evidence),
        }
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
