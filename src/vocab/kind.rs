//! The kinds of object careplane manages, as one table: each row gives a kind's slug (its
//! name in plans and identifiers), its label (how a person says it), its apply level and
//! the fields whose values identify patients. A new kind is one row.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Generates [`ObjectKind`], [`ObjectKind::ALL`] and the per-kind accessors from rows of
/// `Variant => slug, label, level, [sensitive fields]`.
macro_rules! object_kinds {
    ($(
        $(#[$doc:meta])*
        $variant:ident => $slug:literal, $label:literal, $level:literal, [$($sensitive:literal),*];
    )*) => {
        /// The kinds of object careplane manages on a target.
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
            JsonSchema,
        )]
        pub enum ObjectKind {
            $(
                $(#[$doc])*
                #[serde(rename = $slug)]
                $variant,
            )*
        }

        impl ObjectKind {
            /// Every kind, in table order.
            pub const ALL: &'static [ObjectKind] = &[$(ObjectKind::$variant),*];

            /// The kind's name in plans, identifiers and file names (kebab-case).
            pub fn slug(self) -> &'static str {
                match self {
                    $(ObjectKind::$variant => $slug,)*
                }
            }

            /// How a person would say it.
            pub fn label(self) -> &'static str {
                match self {
                    $(ObjectKind::$variant => $label,)*
                }
            }

            /// Apply order: catalogs, then teams and groups, then assignments, then task
            /// routing. Deletes run in reverse.
            pub fn level(self) -> u8 {
                match self {
                    $(ObjectKind::$variant => $level,)*
                }
            }

            /// Fields whose values identify patients: plans carry counts and keyed
            /// pseudonyms of them, never the values.
            pub fn sensitive_fields(self) -> &'static [&'static str] {
                match self {
                    $(ObjectKind::$variant => &[$($sensitive),*],)*
                }
            }
        }
    };
}

object_kinds! {
    /// All declared roles, as one catalog.
    RoleCatalog => "role-catalog", "role catalog", 0, [];
    /// All declared care-team roles, as one catalog.
    CareTeamRoleCatalog => "care-team-role-catalog", "care-team-role catalog", 0, [];
    Team => "team", "team", 1, [];
    RoleAssignment => "role-assignment", "role assignment", 2, [];
    /// One role, where the target keeps roles one by one (and may not let careplane write
    /// them: then they are checklist items).
    Role => "role", "role", 0, [];
    /// One care-team role, likewise.
    CareTeamRole => "care-team-role", "care-team role", 0, [];
    /// A patient group whose members follow a rule.
    PatientGroup => "patient-group", "patient group", 1, ["members"];
    /// The routing of one open task (team, owner, labels), set by routing rules.
    TaskRouting => "task-routing", "task routing", 3, [];
    /// A staff member in a care-team role on the care teams of selected patients.
    CareTeamAssignment => "care-team-assignment", "care-team assignment", 2, ["patients"];
    /// The rules as a plugin running inside the target (Canvas), installed through its
    /// plugin API: after the teams and groups whose ids it carries.
    Plugin => "plugin", "plugin", 4, [];
}

impl ObjectKind {
    pub fn from_slug(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.slug() == s)
    }

    /// The object kind that carries a plain manifest kind (`Location` → `location`): the
    /// kind whose slug is the manifest kind in kebab-case.
    ///
    /// ```
    /// use careplane::vocab::ObjectKind;
    /// assert_eq!(ObjectKind::of_manifest_kind("PatientGroup"), Some(ObjectKind::PatientGroup));
    /// assert_eq!(ObjectKind::of_manifest_kind("Nope"), None);
    /// ```
    pub fn of_manifest_kind(kind: &str) -> Option<Self> {
        let mut slug = String::new();
        for (i, c) in kind.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                slug.push('-');
            }
            slug.push(c.to_ascii_lowercase());
        }
        Self::from_slug(&slug)
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.slug())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_serialises_as_its_slug_and_reads_back() {
        for k in ObjectKind::ALL {
            let v = serde_json::to_value(k).unwrap();
            assert_eq!(v, serde_json::json!(k.slug()));
            assert_eq!(serde_json::from_value::<ObjectKind>(v).unwrap(), *k);
            assert_eq!(ObjectKind::from_slug(k.slug()), Some(*k));
            assert!(!k.label().is_empty());
        }
        let mut slugs: Vec<&str> = ObjectKind::ALL.iter().map(|k| k.slug()).collect();
        slugs.sort_unstable();
        slugs.dedup();
        assert_eq!(slugs.len(), ObjectKind::ALL.len(), "slugs are unique");
    }
}
