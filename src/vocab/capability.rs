//! What a target allows, per object kind: the data half of a dialect.

use serde::Serialize;

use super::ObjectKind;

/// How live objects of a kind are matched with manifest objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Identity {
    /// By the manifest name careplane recorded on the resource (an identifier).
    ManifestName,
    /// By a key the server itself shows (a team's name, a practitioner's id), for targets
    /// where careplane cannot record anything of its own.
    NaturalKey,
}

/// What a target allows for one object kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KindCapability {
    pub kind: ObjectKind,
    pub resource_type: &'static str,
    pub create: bool,
    pub update: bool,
    pub delete: bool,
    pub identity: Identity,
    /// List fields whose values may belong to one object at a time on the server (a
    /// responsibility to one team): apply releases such values before another object of
    /// the same kind takes them, so moves and swaps work.
    pub exclusive: &'static [&'static str],
    /// Where a person makes the change the API cannot (shown on the manual checklist).
    pub manual_hint: Option<&'static str>,
}

/// What a target keeps besides the objects careplane manages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RecordCapability {
    /// A FHIR `Provenance` can be written: apply stores one per run that wrote something.
    pub provenance: bool,
}

/// The capability table of a dialect: per object kind, and for the records apply keeps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Capabilities(pub Vec<KindCapability>, pub RecordCapability);

impl Capabilities {
    /// Whether apply may store its record as a FHIR `Provenance` on this target.
    pub fn provenance(&self) -> bool {
        self.1.provenance
    }

    pub fn of(&self, kind: ObjectKind) -> Option<&KindCapability> {
        self.0.iter().find(|c| c.kind == kind)
    }
}
