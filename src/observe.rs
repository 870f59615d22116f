//! Stage 3: observe live state.
//!
//! Runs the dialect's searches (one paged search per resource type, concurrently), then
//! sorts what comes back into objects careplane owns, look-alikes it does not own, and the
//! staff directory used to resolve practitioner references.

use crate::dialect::{Dialect, Purpose};
use crate::fhir::Query;
use crate::fhir::{FhirError, Store};
use crate::vocab::{
    CompactObject, ForeignObject, ObjectKind, ObservedObject, PatientReads, Recognised, StaffIndex,
};

#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Everything the dialect recognised (managed or not), open tasks aside.
    pub objects: Vec<ObservedObject>,
    /// Open tasks as routing objects (never managed), held compactly: a plan materialises
    /// only the ones it routes.
    pub task_objects: Vec<CompactObject>,
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

/// One care team's participants: (who, role `system|code`, lead), read as the patient facts
/// read them ([`crate::rules::care_team_participant`]), for the live checks.
type Participants = Vec<(String, String, bool)>;

fn care_team_participants(r: &serde_json::Value) -> Option<(String, Participants)> {
    if r["resourceType"] != "CareTeam" || r["status"].as_str().unwrap_or("active") != "active" {
        return None;
    }
    let participants = r["participant"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(crate::rules::care_team_participant)
        .collect();
    Some((
        r["id"].as_str().unwrap_or_default().to_owned(),
        participants,
    ))
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

/// What one search's results were reduced to as its pages arrived: no resource is kept
/// whole except staff records and what the dialect's `aggregate` reads.
#[derive(Default)]
struct Reduced {
    /// Each resource's (type, id) and what the dialect recognised in it, in order.
    recognised: Vec<((String, String), Recognised)>,
    /// Open tasks the dialect recognised as routing objects, compact.
    task_objects: Vec<CompactObject>,
    staff: Vec<serde_json::Value>,
    /// Resources kept whole for [`Dialect::aggregate`].
    kept: Vec<serde_json::Value>,
    facts: crate::rules::FactsBuilder,
    tasks: Vec<crate::rules::TaskFacts>,
    /// Each active care team's id and participants (who, role, lead), for live checks.
    care_teams: Vec<(String, Participants)>,
}

impl Reduced {
    /// Reduce one resource of a search made for `purpose`.
    fn take(
        &mut self,
        purpose: Purpose,
        r: serde_json::Value,
        dialect: &dyn Dialect,
        project: &str,
        reads: &RuleReads,
    ) {
        if let Some(team) = care_team_participants(&r) {
            self.care_teams.push(team);
        }
        match purpose {
            Purpose::Staff => self.staff.push(r),
            Purpose::Patients => self.facts.add(&r),
            Purpose::Objects | Purpose::StaffAndObjects => {
                let rt = r
                    .get("resourceType")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned();
                // care teams read for other reasons (Canvas verifies care-team roles with
                // them) also serve rules
                if reads.care_teams && rt == "CareTeam" {
                    self.facts.add(&r);
                }
                if reads.tasks
                    && let Some(t) = crate::rules::task_fact(&r)
                {
                    self.tasks.push(t);
                }
                let id = r
                    .get("id")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned();
                match dialect.identify(project, &r) {
                    Recognised::Object(o) if o.kind == ObjectKind::TaskRouting && !o.managed => {
                        self.task_objects.push(CompactObject::new(o));
                    }
                    recognised => self.recognised.push(((rt.clone(), id), recognised)),
                }
                let keep = dialect.aggregates(&rt);
                if purpose == Purpose::StaffAndObjects {
                    if keep {
                        self.kept.push(r.clone());
                    }
                    self.staff.push(r);
                } else if keep {
                    self.kept.push(r);
                }
            }
        }
    }
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
    // Every search runs concurrently, each reducing its own pages as they arrive; the
    // reductions are then combined in the order of the searches.
    let reads = &reads;
    let results = futures::future::join_all(queries.iter().map(|(purpose, q)| async move {
        let mut reduced = Reduced::default();
        store
            .search_each(q, &mut |r| {
                reduced.take(*purpose, r, dialect, project, reads)
            })
            .await
            .map(|()| reduced)
    }))
    .await;
    let mut observed = Observed {
        searches: queries.len(),
        ..Observed::default()
    };
    let mut seen = std::collections::HashSet::new();
    let mut staff = Vec::new();
    let mut kept = Vec::new();
    let mut facts = crate::rules::FactsBuilder::default();
    let mut care_teams = Vec::new();
    for result in results {
        let reduced = result?;
        care_teams.extend(reduced.care_teams);
        staff.extend(reduced.staff);
        kept.extend(reduced.kept);
        facts.extend(reduced.facts);
        observed.tasks.extend(reduced.tasks);
        observed.task_objects.extend(reduced.task_objects);
        for (key, recognised) in reduced.recognised {
            if !seen.insert(key) {
                continue;
            }
            match recognised {
                Recognised::Object(o) => observed.objects.push(o),
                Recognised::Foreign(f) => observed.foreign.push(*f),
                Recognised::Other => {}
            }
        }
    }
    // a task found by two searches counts once (the first), as other objects do
    let keep: Vec<bool> = {
        let mut ids = std::collections::HashSet::new();
        observed
            .task_objects
            .iter()
            .map(|t| ids.insert(t.id()))
            .collect()
    };
    let mut keep = keep.into_iter();
    observed
        .task_objects
        .retain(|_| keep.next().unwrap_or(true));
    observed.task_objects.shrink_to_fit();
    observed.tasks.shrink_to_fit();
    observed.staff = StaffIndex::from_practitioners(&staff);
    observed.staff_inactive = staff
        .iter()
        .filter(|r| r["active"] == false)
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect();
    let mut team_seen = std::collections::HashSet::new();
    observed.care_teams = care_teams
        .into_iter()
        .filter(|(id, _)| team_seen.insert(id.clone()))
        .map(|(_, participants)| participants)
        .collect();
    observed.patients = facts.finish();
    observed.objects.extend(dialect.aggregate(project, &kept));
    observed.objects.sort_by(|a, b| {
        (a.kind, &a.name, &a.natural_key, &a.id).cmp(&(b.kind, &b.name, &b.natural_key, &b.id))
    });
    Ok(observed)
}

/// The plugins a target's plugin API lists (name, version, enabled): the plugin kind's
/// live state.
pub async fn plugins(
    api: &crate::dialect::plugin::live::Endpoint,
) -> Result<
    Vec<crate::dialect::plugin::live::Installed>,
    crate::dialect::plugin::live::PluginApiError,
> {
    crate::dialect::plugin::live::installed(api).await
}

/// What careplane recorded when it last installed the plugin on this target (absent,
/// unreadable or another plugin's: `None`).
pub fn plugin_record(
    api: &crate::dialect::plugin::live::Endpoint,
    plugin: &str,
) -> Option<crate::dialect::plugin::Applied> {
    let text = std::fs::read_to_string(api.record.as_ref()?).ok()?;
    let a: crate::dialect::plugin::Applied = serde_json::from_str(&text).ok()?;
    (a.plugin == plugin).then_some(a)
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
