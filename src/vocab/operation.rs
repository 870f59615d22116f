//! What apply does for one change, typed: apply dispatches on this, never on an object
//! kind's name, and never reads it back out of a display field.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The operation behind a change.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Operation {
    /// Write one object's managed fields (the change's `fields`), as its `action` says.
    #[default]
    Object,
    /// Put a participant on (or take them off) the care teams of the selected patients;
    /// the `patients` field's lists (sealed, never in the plan file) say who joins and who
    /// leaves. One read-modify-write per patient.
    CareTeamParticipant(Participant),
    /// Route one open task (team, owner, labels in `fields`) by a routing rule.
    RouteTask {
        /// The routing rule's `metadata.name`.
        rule: String,
        /// Its `order`.
        order: i64,
    },
    /// Open tasks one routing rule routes, folded into one change (a plan may route
    /// 100,000 tasks): each task's change is this change (action, fields, reason, notes)
    /// on `Task/<id>`, with the task's own precondition and, where they differ, its own
    /// before/after values. Never in a plan file (routing is an effect of rules); apply
    /// unfolds it into one `RouteTask` change per task (`plan::Change::unfolded`).
    RouteTasks {
        /// The routing rule's `metadata.name`.
        rule: String,
        /// Its `order`.
        order: i64,
        #[serde(skip)]
        #[schemars(skip)]
        tasks: Vec<RoutedTask>,
    },
    /// Install (create) or update the rules plugin through the target's plugin API, enabled:
    /// the package is built from the rules data the change carries sealed (never in a plan
    /// file), with the ids of teams and groups this apply creates filled in.
    Plugin {
        /// The SDK version the package is written for (`sdk_version` in its manifest).
        sdk_version: String,
    },
}

/// The participant of a care-team assignment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Participant {
    /// `Practitioner/<id>`.
    pub practitioner: String,
    pub role: Coding,
    /// The care team's lead for these patients.
    pub lead: bool,
    /// Take the role off anyone else holding it, and off patients no longer selected.
    pub authoritative: bool,
}

/// A coding (`system`, `code`, `display`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Coding {
    pub system: String,
    pub code: String,
    pub display: String,
}

/// One open task of a folded routing change ([`Operation::RouteTasks`]): what differs from
/// the folded change, kept compact.
#[derive(Clone, Debug, PartialEq)]
pub struct RoutedTask {
    /// The task's server id, then its `meta.versionId` and `meta.lastUpdated` seen when
    /// planning (its precondition), each after a line break: one allocation per task, not
    /// three ([`RoutedTask::new`]).
    seen: Box<str>,
    /// Which of the version and the time were seen (bits 0 and 1).
    present: u8,
    /// Before and after of each of the folded change's fields, in its order, where any of
    /// them is not the folded change's own (a task that had labels already).
    pub values: Option<Box<[BeforeAfter]>>,
}

/// A field's value before and after a change (`None`: absent).
pub type BeforeAfter = (Option<serde_json::Value>, Option<serde_json::Value>);

impl RoutedTask {
    /// A task by id, with the version and time seen; None if one of them holds a line
    /// break (no FHIR id or instant does).
    pub fn new(id: &str, version_id: Option<&str>, last_updated: Option<&str>) -> Option<Self> {
        let parts = [Some(id), version_id, last_updated];
        if parts.iter().flatten().any(|p| p.contains('\n')) {
            return None;
        }
        Some(RoutedTask {
            seen: parts.map(|p| p.unwrap_or("")).join("\n").into(),
            present: u8::from(version_id.is_some()) | (u8::from(last_updated.is_some()) << 1),
            values: None,
        })
    }

    fn part(&self, i: usize) -> &str {
        self.seen.split('\n').nth(i).unwrap_or("")
    }

    pub fn id(&self) -> &str {
        self.part(0)
    }

    pub fn version_id(&self) -> Option<&str> {
        (self.present & 1 != 0).then(|| self.part(1))
    }

    pub fn last_updated(&self) -> Option<&str> {
        (self.present & 2 != 0).then(|| self.part(2))
    }
}
