//! Stage 3: observe live state.
//!
//! Runs the dialect's searches (one paged search per resource type, concurrently), then
//! sorts what comes back into objects careplane owns, look-alikes it does not own, and the
//! staff directory used to resolve practitioner references.

use crate::dialect::{Dialect, Purpose};
use crate::fhir::Query;
use crate::fhir::{FhirError, Store};
use crate::vocab::{ForeignObject, ObservedObject, PatientReads, Recognised, StaffIndex};

#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Everything the dialect recognised (managed or not).
    pub objects: Vec<ObservedObject>,
    pub foreign: Vec<ForeignObject>,
    pub staff: StaffIndex,
    /// How many searches were run.
    pub searches: usize,
    /// What rules can see of each patient (only when patient groups are declared).
    pub patients: std::collections::BTreeMap<String, crate::rules::PatientFacts>,
    /// Open tasks (only when routing rules are declared).
    pub tasks: Vec<crate::rules::TaskFacts>,
    /// Practitioner ids with `active: false` (for the live care-model checks).
    pub staff_inactive: std::collections::BTreeSet<String>,
    /// Active care teams read (Canvas always; R4 when care-team assignments or rules need
    /// them), as participants (`Practitioner/<id>`, role `system|code`, lead): no patient.
    pub care_teams: Vec<Vec<(String, String, bool)>>,
}

/// The participants of active care teams, for the live checks (a lead is a participant
/// extension whose url ends in `lead`, as both dialects write it, set to true).
fn care_team_participants<'a>(
    resources: impl Iterator<Item = &'a serde_json::Value>,
) -> Vec<Vec<(String, String, bool)>> {
    let mut seen = std::collections::HashSet::new();
    resources
        .filter(|r| {
            r["resourceType"] == "CareTeam" && r["status"].as_str().unwrap_or("active") == "active"
        })
        .filter(|r| seen.insert(r["id"].as_str().unwrap_or_default().to_owned()))
        .map(|r| {
            r["participant"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    let who = p.pointer("/member/reference")?.as_str()?.to_owned();
                    let role = p
                        .pointer("/role/0/coding/0")
                        .map(|c| {
                            format!(
                                "{}|{}",
                                c["system"].as_str().unwrap_or_default(),
                                c["code"].as_str().unwrap_or_default()
                            )
                        })
                        .unwrap_or_default();
                    let lead = p["extension"].as_array().into_iter().flatten().any(|e| {
                        e["url"].as_str().is_some_and(|u| u.ends_with("lead"))
                            && e["valueBoolean"] == true
                    });
                    Some((who, role, lead))
                })
                .collect()
        })
        .collect()
}

pub use crate::rules::RuleReads;

/// The searches that read patient facts for rules: all patients; all consents and active
/// care teams when a rule looks at them (unless the dialect's own queries read care teams
/// already). Small answers (`_elements`) where the target honours them.
pub fn patient_queries(how: PatientReads, consents: bool, care_teams: bool) -> Vec<Query> {
    let elements = |q: Query, e: &str| {
        if how.elements {
            q.param("_elements", e)
        } else {
            q
        }
    };
    let mut q = vec![elements(
        Query::new("Patient"),
        "active,gender,birthDate,identifier,address",
    )];
    if consents {
        q.push(elements(Query::new("Consent"), "patient,status,category"));
    }
    if care_teams && !how.care_teams_in_queries {
        q.push(elements(
            Query::new("CareTeam").param("status", "active"),
            "status,subject,participant",
        ));
    }
    q
}

pub async fn observe(
    store: &Store,
    dialect: &dyn Dialect,
    project: &str,
    reads: RuleReads,
) -> Result<Observed, FhirError> {
    let mut queries = dialect.queries(project);
    if reads.tasks {
        let mut q = crate::fhir::Query::new("Task").param("status", "requested");
        if let Some(since) = &reads.tasks_since {
            let param = dialect.capabilities().target().modified_since;
            q = q.param(param, format!("gt{since}"));
        }
        queries.push((Purpose::Objects, q));
    }
    if reads.patients {
        queries.extend(
            patient_queries(
                dialect.capabilities().target().patient_reads,
                reads.consents,
                reads.care_teams,
            )
            .into_iter()
            .map(|q| (Purpose::Patients, q)),
        );
    }
    let results = futures::future::join_all(queries.iter().map(|(_, q)| store.search(q))).await;
    let mut observed = Observed {
        searches: queries.len(),
        ..Observed::default()
    };
    let mut seen = std::collections::HashSet::new();
    let mut staff = Vec::new();
    let mut all = Vec::new();
    let mut patient_data = Vec::new();
    for ((purpose, _), result) in queries.iter().zip(results) {
        let resources = result?;
        match purpose {
            Purpose::Staff => staff.extend(resources.iter().cloned()),
            Purpose::Patients => patient_data.extend(resources),
            Purpose::Objects | Purpose::StaffAndObjects => {
                // care teams read for other reasons (Canvas verifies care-team roles with
                // them) also serve rules
                if reads.care_teams {
                    patient_data.extend(
                        resources
                            .iter()
                            .filter(|r| r["resourceType"] == "CareTeam")
                            .cloned(),
                    );
                }
                if *purpose == Purpose::StaffAndObjects {
                    staff.extend(resources.iter().cloned());
                }
                all.extend(resources.iter().cloned());
                for r in &resources {
                    let key = (
                        r.get("resourceType")
                            .and_then(|v| v.as_str())
                            .unwrap_or_default()
                            .to_owned(),
                        r.get("id")
                            .and_then(|v| v.as_str())
                            .unwrap_or_default()
                            .to_owned(),
                    );
                    if !seen.insert(key) {
                        continue;
                    }
                    match dialect.identify(project, r) {
                        Recognised::Object(o) => observed.objects.push(o),
                        Recognised::Foreign(f) => observed.foreign.push(*f),
                        Recognised::Other => {}
                    }
                }
            }
        }
    }
    observed.staff = StaffIndex::from_practitioners(&staff);
    observed.staff_inactive = staff
        .iter()
        .filter(|r| r["active"] == false)
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect();
    observed.care_teams = care_team_participants(all.iter().chain(patient_data.iter()));
    observed.patients = crate::rules::facts(&patient_data);
    if reads.tasks {
        observed.tasks = crate::rules::task_facts(&all);
    }
    observed.objects.extend(dialect.aggregate(project, &all));
    observed.objects.sort_by(|a, b| {
        (a.kind, &a.name, &a.natural_key, &a.id).cmp(&(b.kind, &b.name, &b.natural_key, &b.id))
    });
    Ok(observed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::{canvas::Canvas, r4::R4};

    fn shapes(d: &dyn Dialect, consents: bool, care_teams: bool) -> Vec<String> {
        patient_queries(
            d.capabilities().target().patient_reads,
            consents,
            care_teams,
        )
        .iter()
        .map(|q| {
            let names: Vec<&str> = q.params.iter().map(|(k, _)| k.as_str()).collect();
            format!("{}?{}", q.resource_type, names.join("&"))
        })
        .collect()
    }

    #[test]
    fn patient_searches_follow_the_capability_table() {
        // R4: small answers, care teams searched when a rule needs them
        assert_eq!(shapes(&R4::default(), false, false), ["Patient?_elements"]);
        assert_eq!(
            shapes(&R4::default(), true, true),
            [
                "Patient?_elements",
                "Consent?_elements",
                "CareTeam?status&_elements"
            ]
        );
        // Canvas: no _elements, care teams come with the dialect's own queries
        assert_eq!(
            shapes(&Canvas::default(), true, true),
            ["Patient?", "Consent?"]
        );
    }

    #[test]
    fn the_changed_after_parameter_is_the_tables() {
        assert_eq!(
            R4::default().capabilities().target().modified_since,
            "_lastUpdated"
        );
        assert_eq!(
            Canvas::default().capabilities().target().modified_since,
            "modified"
        );
    }
}
