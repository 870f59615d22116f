//! Stage 6: apply a plan.
//!
//! Executes the plan's changes in dependency order (catalogs and roles → teams →
//! assignments; deletes in reverse), with bounded concurrency inside one level, and
//! returns one typed outcome per change. Before every write it re-checks the change's
//! precondition against the server (the object is still absent / still as the plan saw it /
//! still careplane's to write), and writes conditionally (`If-Match`,
//! `If-Unmodified-Since`, `If-None-Exist`), so a stale plan is refused object by object
//! instead of clobbering someone's edit.
//!
//! Where the target lets a value of a field belong to one object only (a responsibility to
//! one team), values that move are first released by the objects that lose them, then
//! taken by the ones that gain them; a swap between two objects works the same way.
//!
//! A failed write does not stop the others; the next plan starts from whatever landed.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use serde_json::Value;

use crate::dialect::Dialect;
use crate::fhir::{self, FhirError, Store, Written};
use crate::model::Source;
use crate::plan::{Action, Change, Plan, Target};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{target} changed on the server after the plan was made ({detail}); make a new plan")]
    Stale { target: Target, detail: String },
    #[error("{target} is not careplane's to write for project '{project}'; it was left alone")]
    NotOwned { target: Target, project: String },
    #[error(
        "{target}: {failed} of {total} patient care team(s) could not be written (the others were); first error: {first}"
    )]
    Partial {
        target: Target,
        failed: usize,
        total: usize,
        first: FhirError,
    },
    #[error("{target}: {source}{}", origin.as_ref().map(|s| format!(" (asked for at {s})")).unwrap_or_default())]
    Write {
        target: Target,
        origin: Option<Source>,
        #[source]
        source: FhirError,
    },
}

/// What happened to one change.
#[derive(Debug)]
pub struct Outcome {
    pub change: usize,
    pub action: Action,
    pub target: Target,
    pub result: Result<Option<Written>, ApplyError>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
}

impl Report {
    pub fn failed(&self) -> usize {
        self.outcomes.iter().filter(|o| o.result.is_err()).count()
    }
    pub fn succeeded(&self) -> usize {
        self.outcomes.iter().filter(|o| o.result.is_ok()).count()
    }
}

/// One write of one change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// The whole change, checked against the plan's precondition.
    Whole,
    /// Only give up the exclusive values the change removes (first of two writes).
    Release,
    /// The whole change after our own release write: checked against what that write
    /// left, not against the plan.
    AfterRelease,
}

fn still_as_planned(c: &Change, live: &Value) -> Result<(), String> {
    if let Some(v) = &c.precondition.version_id {
        let now = live.pointer("/meta/versionId").and_then(Value::as_str);
        if now != Some(v.as_str()) {
            return Err(format!(
                "version {} now, {v} when planned",
                now.unwrap_or("unknown")
            ));
        }
    } else if let Some(t) = &c.precondition.last_updated {
        let now = live.pointer("/meta/lastUpdated").and_then(Value::as_str);
        if now != Some(t.as_str()) {
            return Err(format!(
                "last updated {} now, {t} when planned",
                now.unwrap_or("unknown")
            ));
        }
    }
    Ok(())
}

/// The precondition of the write itself: what the plan saw, or (after our own release
/// write) what we just read.
fn write_precondition(c: &Change, live: &Value, step: Step) -> fhir::Precondition {
    match step {
        Step::AfterRelease => fhir::Precondition::seen_on(live),
        _ => fhir::Precondition {
            version_id: c.precondition.version_id.clone(),
            last_updated: c.precondition.last_updated.clone(),
        },
    }
}

/// The value a write sets a field to: the sealed real list for patient lists (whose
/// `after` in the plan is only a count), else `after`.
fn written_value(f: &crate::plan::FieldChange) -> Option<Value> {
    match (&f.membership, &f.sealed) {
        (Some(_), Some((_, after))) => after.clone(),
        // ops re-evaluates saved plans before apply; without a sealed list nothing is
        // written for this field rather than a count
        (Some(_), None) => None,
        _ => f.after.clone(),
    }
}

/// The exclusive values a change gives up, by field.
/// For each exclusive field a change gives values up in: (the values it keeps, the values
/// it gives up).
fn released(c: &Change, exclusive: &[&str]) -> BTreeMap<String, (Vec<Value>, Vec<Value>)> {
    let list = |v: &Option<Value>| {
        v.as_ref()
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    c.fields
        .iter()
        .filter(|f| exclusive.contains(&f.field.as_str()))
        .filter_map(|f| {
            let after = list(&f.after);
            let (kept, given_up): (Vec<Value>, Vec<Value>) =
                list(&f.before).into_iter().partition(|v| after.contains(v));
            (!given_up.is_empty()).then(|| (f.field.clone(), (kept, given_up)))
        })
        .collect()
}

async fn apply_one(
    c: &Change,
    step: Step,
    project: &str,
    store: &Store,
    dialect: &dyn Dialect,
) -> Result<Option<Written>, ApplyError> {
    let sensitive = !c.target.kind.sensitive_fields().is_empty();
    let write_err = |source: FhirError| match source {
        // a patient group's server messages may quote its members
        FhirError::Http {
            what,
            status,
            message: Some(_),
        } if sensitive => ApplyError::Write {
            target: c.target.clone(),
            origin: c.reason.source.clone(),
            source: FhirError::Http {
                what,
                status,
                message: Some(
                    "(the server's message is withheld: it may quote patient data)".into(),
                ),
            },
        },
        FhirError::Conflict { .. } => ApplyError::Stale {
            target: c.target.clone(),
            detail: source.to_string(),
        },
        source => ApplyError::Write {
            target: c.target.clone(),
            origin: c.reason.source.clone(),
            source,
        },
    };
    if c.fields
        .iter()
        .any(|f| f.membership.is_some() && f.sealed.is_none())
    {
        return Err(ApplyError::Stale {
            target: c.target.clone(),
            detail: "the plan carries patient lists only as counts and digests, and they were not re-evaluated".into(),
        });
    }
    if c.target.kind == crate::dialect::ObjectKind::CareTeamAssignment && c.action == Action::Update
    {
        return apply_care_team(c, project, store, dialect).await;
    }
    match c.action {
        Action::NoOp | Action::Manual => Ok(None),
        Action::Create => {
            let find = dialect.find_query(project, c.target.kind, &c.target.name);
            let fields = c
                .fields
                .iter()
                .filter_map(|f| written_value(f).map(|v| (f.field.clone(), v)))
                .collect();
            let exists_now = || ApplyError::Stale {
                target: c.target.clone(),
                detail: "it exists now".into(),
            };
            let resource = dialect.build(project, c.target.kind, &c.target.name, &fields);
            if dialect.conditional_create() {
                // If-None-Exist both refuses a duplicate and makes the POST safe to retry.
                let w = store
                    .create(&resource, Some(&find))
                    .await
                    .map_err(write_err)?;
                return if w.existed {
                    Err(exists_now())
                } else {
                    Ok(Some(w))
                };
            }
            let existing = store.search(&find).await.map_err(write_err)?;
            if existing
                .iter()
                .any(|r| dialect.same_object(c.target.kind, &fields, r))
            {
                return Err(exists_now());
            }
            store
                .create(&resource, None)
                .await
                .map(Some)
                .map_err(write_err)
        }
        Action::Update | Action::Delete | Action::Adopt => {
            let id = c.target.id.as_deref().unwrap_or_default();
            let live = store
                .read(&c.target.resource_type, id)
                .await
                .map_err(write_err)?;
            let Some(live) = live else {
                return if c.action == Action::Delete {
                    Ok(None)
                } else {
                    Err(ApplyError::Stale {
                        target: c.target.clone(),
                        detail: "it was deleted".into(),
                    })
                };
            };
            let live = if c.action == Action::Adopt && !dialect.owns(project, c.target.kind, &live)
            {
                dialect
                    .adopt(project, c.target.kind, &c.target.name, &live)
                    .ok_or_else(|| ApplyError::NotOwned {
                        target: c.target.clone(),
                        project: project.into(),
                    })?
            } else if !dialect.owns(project, c.target.kind, &live) {
                return Err(ApplyError::NotOwned {
                    target: c.target.clone(),
                    project: project.into(),
                });
            } else {
                live
            };
            if step != Step::AfterRelease {
                still_as_planned(c, &live).map_err(|detail| ApplyError::Stale {
                    target: c.target.clone(),
                    detail,
                })?;
            }
            let pre = write_precondition(c, &live, step);
            if c.action == Action::Delete {
                return store
                    .delete(&c.target.resource_type, id, &pre)
                    .await
                    .map(|_| None)
                    .map_err(write_err);
            }
            let fields: BTreeMap<String, Option<Value>> = match step {
                Step::Release => {
                    let exclusive = dialect
                        .capabilities()
                        .of(c.target.kind)
                        .map(|cap| cap.exclusive)
                        .unwrap_or_default();
                    released(c, exclusive)
                        .into_iter()
                        .map(|(field, (kept, _))| (field, Some(Value::Array(kept))))
                        .collect()
                }
                _ => c
                    .fields
                    .iter()
                    .map(|f| (f.field.clone(), written_value(f)))
                    .collect(),
            };
            let merged = dialect.merge(c.target.kind, &live, &fields);
            store
                .update(&merged, &pre)
                .await
                .map(Some)
                .map_err(write_err)
        }
    }
}

/// A care-team assignment: one read-modify-write per patient who joins or leaves (the
/// patient lists are sealed in the change). Every other participant is sent back as read.
async fn apply_care_team(
    c: &Change,
    project: &str,
    store: &Store,
    dialect: &dyn Dialect,
) -> Result<Option<Written>, ApplyError> {
    use std::collections::BTreeSet;

    use crate::dialect::{CareTeamLocation, ParticipantChange};
    let stale = |detail: String| ApplyError::Stale {
        target: c.target.clone(),
        detail,
    };
    let list = |v: &Option<Value>| -> BTreeSet<String> {
        crate::dialect::util::str_list(v.as_ref())
            .into_iter()
            .collect()
    };
    let Some((before, after)) = c
        .fields
        .iter()
        .find(|f| f.field == "patients")
        .and_then(|f| f.sealed.clone())
    else {
        return Err(stale("the plan carries no patient lists".into()));
    };
    let Some(p) = c
        .fields
        .iter()
        .find(|f| f.field == "participant")
        .and_then(|f| f.after.clone())
    else {
        return Err(stale("the plan does not say which participant".into()));
    };
    let (before, after) = (list(&before), list(&after));
    let change = |add: bool| ParticipantChange {
        practitioner: p["practitioner"].as_str().unwrap_or_default().to_owned(),
        role: p["role"].clone(),
        lead: p["lead"].as_bool().unwrap_or(false),
        add,
        replace_role: p["authoritative"].as_bool().unwrap_or(false),
    };
    let work: Vec<(String, bool)> = after
        .difference(&before)
        .map(|x| (x.clone(), true))
        .chain(before.difference(&after).map(|x| (x.clone(), false)))
        .collect();
    let mut failed = Vec::new();
    for (patient, add) in &work {
        let result = async {
            let location = dialect.care_team_location(project, patient);
            // at most twice: a conditional create that finds the care team made meanwhile
            // by another write merges into it instead
            for _ in 0..2 {
                let live = match &location {
                    CareTeamLocation::Read { resource_type, id } => {
                        store.read(resource_type, id).await?
                    }
                    CareTeamLocation::Search(q) => store.search(q).await?.into_iter().next(),
                };
                if live.is_none() && !*add {
                    return Ok(()); // nothing to take anyone off
                }
                let body = dialect.care_team_merge(project, patient, live.as_ref(), &change(*add));
                let pre = live
                    .as_ref()
                    .map(crate::fhir::Precondition::seen_on)
                    .unwrap_or_default();
                if body.get("id").is_some() {
                    store.update(&body, &pre).await?;
                    return Ok(());
                }
                let condition = match &location {
                    CareTeamLocation::Search(q) => Some(q),
                    CareTeamLocation::Read { .. } => None,
                };
                if !store.create(&body, condition).await?.existed {
                    return Ok(());
                }
            }
            Ok::<(), FhirError>(())
        }
        .await;
        if let Err(e) = result {
            failed.push(withhold(e, patient));
        }
    }
    let count = failed.len();
    match failed.into_iter().next() {
        None => Ok(None),
        Some(first) => Err(ApplyError::Partial {
            target: c.target.clone(),
            failed: count,
            total: work.len(),
            first,
        }),
    }
}

/// A server's message may quote the patient's id (Canvas: "Unknown CareTeam resource
/// '<id>'"): keep the message, withhold the id.
fn withhold(e: FhirError, patient: &str) -> FhirError {
    let pid = patient.strip_prefix("Patient/").unwrap_or(patient);
    let clean = |s: String| s.replace(pid, "(patient id withheld)");
    match e {
        FhirError::Http {
            what,
            status,
            message,
        } => FhirError::Http {
            what: clean(what),
            status,
            message: message.map(clean),
        },
        FhirError::Conflict { resource, status } => FhirError::Conflict {
            resource: clean(resource),
            status,
        },
        FhirError::InvalidResponse { what, reason } => FhirError::InvalidResponse {
            what: clean(what),
            reason: clean(reason),
        },
        FhirError::Transport { what, reason } => FhirError::Transport {
            what: clean(what),
            reason: clean(reason),
        },
        FhirError::Unsupported(m) => FhirError::Unsupported(clean(m)),
        FhirError::Store { path, reason } => FhirError::Store {
            path,
            reason: clean(reason),
        },
        other => other,
    }
}

async fn run_batch<'a>(
    batch: Vec<(usize, &'a Change, Step)>,
    plan: &'a Plan,
    store: &'a Store,
    dialect: &'a dyn Dialect,
    concurrency: usize,
) -> Vec<Outcome> {
    futures::stream::iter(batch)
        .map(|(i, c, step)| async move {
            Outcome {
                change: i,
                action: c.action,
                target: c.target.clone(),
                result: apply_one(c, step, &plan.project, store, dialect).await,
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await
}

/// Apply every change of `plan` that writes, in order, `concurrency` at a time per level.
pub async fn apply(
    plan: &Plan,
    store: &Store,
    dialect: &dyn Dialect,
    concurrency: usize,
) -> Report {
    let mut report = Report::default();
    let writes: Vec<(usize, &Change)> = plan
        .changes
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            matches!(
                c.action,
                Action::Create | Action::Update | Action::Delete | Action::Adopt
            )
        })
        .collect();
    // (phase, level): creates/updates by ascending level, then deletes by descending level.
    let mut phases: BTreeMap<(u8, i16), Vec<(usize, &Change)>> = BTreeMap::new();
    for (i, c) in writes {
        let level = c.target.kind.level() as i16;
        let key = if c.action == Action::Delete {
            (1, -level)
        } else {
            (0, level)
        };
        phases.entry(key).or_default().push((i, c));
    }
    for (_, batch) in phases {
        // Exclusive values taken by some change of this batch: whoever gives one of them
        // up writes that first.
        let exclusive_of = |c: &Change| {
            dialect
                .capabilities()
                .of(c.target.kind)
                .map(|cap| cap.exclusive)
                .unwrap_or_default()
        };
        let mut wanted = BTreeSet::new();
        for (_, c) in &batch {
            for f in c
                .fields
                .iter()
                .filter(|f| exclusive_of(c).contains(&f.field.as_str()))
            {
                let before = f
                    .before
                    .as_ref()
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for v in f
                    .after
                    .as_ref()
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if !before.contains(v) {
                        wanted.insert((f.field.clone(), v.to_string()));
                    }
                }
            }
        }
        // Changes that give up a value another change of this batch takes: computed once.
        let needs_release: BTreeSet<usize> = batch
            .iter()
            .filter(|(_, c)| {
                c.action == Action::Update
                    && released(c, exclusive_of(c))
                        .iter()
                        .any(|(field, (_, given_up))| {
                            given_up
                                .iter()
                                .any(|v| wanted.contains(&(field.clone(), v.to_string())))
                        })
            })
            .map(|(i, _)| *i)
            .collect();
        let releases: Vec<(usize, &Change, Step)> = batch
            .iter()
            .filter(|(i, _)| needs_release.contains(i))
            .map(|(i, c)| (*i, *c, Step::Release))
            .collect();
        let mut failed_release = BTreeSet::new();
        for o in run_batch(releases, plan, store, dialect, concurrency).await {
            if o.result.is_err() {
                failed_release.insert(o.change);
                report.outcomes.push(o);
            }
        }
        let mut rest = Vec::new();
        for (i, c) in &batch {
            if failed_release.contains(i) {
                continue;
            }
            let step = if needs_release.contains(i) {
                Step::AfterRelease
            } else {
                Step::Whole
            };
            rest.push((*i, *c, step));
        }
        report
            .outcomes
            .extend(run_batch(rest, plan, store, dialect, concurrency).await);
    }
    report.outcomes.sort_by_key(|o| o.change);
    report
}
