//! The kinds of object careplane manages.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The kinds of object careplane manages on a target.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectKind {
    /// All declared roles, as one catalog.
    RoleCatalog,
    /// All declared care-team roles, as one catalog.
    CareTeamRoleCatalog,
    Team,
    RoleAssignment,
    /// One role, where the target keeps roles one by one (and may not let careplane write
    /// them: then they are checklist items).
    Role,
    /// One care-team role, likewise.
    CareTeamRole,
    /// A patient group whose members follow a rule.
    PatientGroup,
    /// The routing of one open task (team, owner, labels), set by routing rules.
    TaskRouting,
    /// A staff member in a care-team role on the care teams of selected patients.
    CareTeamAssignment,
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 9] = [
        ObjectKind::RoleCatalog,
        ObjectKind::CareTeamRoleCatalog,
        ObjectKind::Team,
        ObjectKind::RoleAssignment,
        ObjectKind::Role,
        ObjectKind::CareTeamRole,
        ObjectKind::PatientGroup,
        ObjectKind::TaskRouting,
        ObjectKind::CareTeamAssignment,
    ];

    /// Apply order: catalogs, then teams, then assignments. Deletes run in reverse.
    pub fn level(self) -> u8 {
        match self {
            ObjectKind::RoleCatalog
            | ObjectKind::CareTeamRoleCatalog
            | ObjectKind::Role
            | ObjectKind::CareTeamRole => 0,
            ObjectKind::Team | ObjectKind::PatientGroup => 1,
            ObjectKind::RoleAssignment | ObjectKind::CareTeamAssignment => 2,
            ObjectKind::TaskRouting => 3,
        }
    }

    pub fn slug(self) -> &'static str {
        match self {
            ObjectKind::RoleCatalog => "role-catalog",
            ObjectKind::CareTeamRoleCatalog => "care-team-role-catalog",
            ObjectKind::Team => "team",
            ObjectKind::RoleAssignment => "role-assignment",
            ObjectKind::Role => "role",
            ObjectKind::CareTeamRole => "care-team-role",
            ObjectKind::PatientGroup => "patient-group",
            ObjectKind::TaskRouting => "task-routing",
            ObjectKind::CareTeamAssignment => "care-team-assignment",
        }
    }

    /// Fields whose values identify patients: plans carry counts and keyed pseudonyms
    /// of them, never the values.
    pub fn sensitive_fields(self) -> &'static [&'static str] {
        match self {
            ObjectKind::PatientGroup => &["members"],
            ObjectKind::CareTeamAssignment => &["patients"],
            _ => &[],
        }
    }

    pub fn from_slug(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.slug() == s)
    }

    /// How a person would say it.
    pub fn label(self) -> &'static str {
        match self {
            ObjectKind::RoleCatalog => "role catalog",
            ObjectKind::CareTeamRoleCatalog => "care-team-role catalog",
            ObjectKind::Team => "team",
            ObjectKind::RoleAssignment => "role assignment",
            ObjectKind::Role => "role",
            ObjectKind::CareTeamRole => "care-team role",
            ObjectKind::PatientGroup => "patient group",
            ObjectKind::TaskRouting => "task routing",
            ObjectKind::CareTeamAssignment => "care-team assignment",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.slug())
    }
}
