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
//!
//! Where the dialect's table and the server's CapabilityStatement allow, a level's changes
//! go `batchSize` at a time as FHIR `batch` Bundles (one of reads, one of writes; each
//! entry under its own precondition, each entry's answer its change's outcome), and an
//! update as a guarded JSON Patch ([`fhir::patch`]). A delete under `If-Match` is not read
//! first. The read before an update stays: a PUT sends back every field careplane does not
//! manage, and a patch needs the indexes and version it is computed from.
//!
//! A write whose answer is lost (the connection drops after the server took the request,
//! so the retry finds the object existing or its version moved) is not reported as
//! somebody else's edit: apply re-reads the object and, if it now holds what this apply
//! wrote (careplane's identifier and managed fields, compared as diff compares them),
//! counts the write as done, with a note.
//!
//! A saved plan is checked whole before its first write ([`stale_objects`], its reads in
//! Bundles where the target takes them): one stale object refuses the whole plan.
//!
//! Every apply yields an [`ApplyRecord`] (what was written, and why), which the CLI saves
//! with `--report` and, where the target keeps them, ops stores as a FHIR `Provenance`.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use serde_json::Value;

use crate::dialect::Dialect;
use crate::fhir::{self, FhirError, Store, Written};
use crate::model::Source;
use crate::plan::{Action, Change, Plan, Target};
use crate::vocab::Identity;

/// The note on a write whose answer was lost but which re-reading shows landed.
pub const LANDED_NOTE: &str = "the server's answer was lost; re-read shows the write landed";

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{target} changed on the server after the plan was made ({detail}); make a new plan")]
    Stale { target: Target, detail: String },
    #[error("{target} is not careplane's to write for project '{project}'; it was left alone")]
    NotOwned { target: Target, project: String },
    /// The server refused a conditional write (409/412) and re-reading the object shows
    /// something other than what this apply meant to write: who moved it is unknown.
    #[error(
        "{target}: the server refused the write as out of date (HTTP {status}), and re-reading it shows other values than this apply writes; nothing of this change was written: plan again to see what is there now"
    )]
    Refused { target: Target, status: u16 },
    #[error(
        "{target}: {failed} of {total} patient care team(s) could not be written (the others were); first error: {first}"
    )]
    Partial {
        target: Target,
        failed: usize,
        total: usize,
        first: FhirError,
    },
    /// The apply was interrupted (Ctrl-C, SIGTERM) before this write started.
    #[error(
        "{target}: not started (the apply was interrupted before this write); the next apply makes it"
    )]
    NotStarted { target: Target },
    /// A write the plugin's rules depend on (the create of a team or patient group whose
    /// id they carry) failed or was not started: the plugin was left as it is.
    #[error(
        "{target}: not installed, because its rules carry the id of {dependency}, which {why}; the plugin was not changed, and the next apply installs it once that is written"
    )]
    DependencyUnwritten {
        target: Target,
        dependency: String,
        why: String,
    },
    /// The target's plugin API failed (the plugin was not changed).
    #[error("{target}: {source}; the plugin was not changed")]
    PluginApi {
        target: Target,
        #[source]
        source: crate::dialect::plugin::live::PluginApiError,
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
    /// How it went, when that is not obvious (a lost answer, confirmed by a re-read).
    pub note: Option<String>,
    /// Resources written for it (one, or one per patient care team).
    pub writes: usize,
}

/// A write that went through.
#[derive(Debug, Default)]
struct Done {
    written: Option<Written>,
    note: Option<String>,
    writes: usize,
}

impl Done {
    fn wrote(w: Option<Written>) -> Self {
        Done {
            written: w,
            note: None,
            writes: 1,
        }
    }
    fn landed(w: Option<Written>) -> Self {
        Done {
            written: w,
            note: Some(LANDED_NOTE.into()),
            writes: 1,
        }
    }
}

/// Whether a write error may hide a write that landed: a lost answer shows up as a
/// transport error, as a conflict when the retry meets our own first write, or as a large
/// write that got no answer (never sent again whole).
fn maybe_landed(e: &FhirError) -> bool {
    matches!(
        e,
        FhirError::Conflict { .. }
            | FhirError::Transport { .. }
            | FhirError::LargeWriteUnanswered { .. }
    )
}

/// Whether `live` holds what this apply meant to write: careplane's object (under the
/// manifest name, where the target records one) whose managed fields equal `fields` as diff
/// compares them (read back through the dialect, so server-added defaults do not count;
/// an absent or null field equals `None`).
fn holds(
    c: &Change,
    project: &str,
    dialect: &dyn Dialect,
    live: &Value,
    fields: &BTreeMap<String, Option<Value>>,
) -> bool {
    let Some(o) = dialect.identify(project, live).object() else {
        return false;
    };
    let identity = dialect.capabilities().of(c.target.kind).map(|k| k.identity);
    if o.kind != c.target.kind
        || (identity == Some(Identity::ManifestName) && o.name.as_deref() != Some(&c.target.name))
    {
        return false;
    }
    fields.iter().all(|(k, want)| {
        o.fields.get(k).filter(|v| !v.is_null()) == want.as_ref().filter(|v| !v.is_null())
    })
}

/// After a create whose answer was lost or that found the object existing: the object
/// careplane's identifier search finds, if it holds what this create wrote.
async fn created_here(
    c: &Change,
    project: &str,
    store: &Store,
    dialect: &dyn Dialect,
    find: &fhir::Query,
    fields: &crate::vocab::Fields,
) -> Option<Written> {
    let wanted: BTreeMap<String, Option<Value>> = fields
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    let found = store.search(find).await.ok()?;
    found
        .iter()
        .filter(|r| dialect.capabilities().same_object(c.target.kind, fields, r))
        .find(|r| holds(c, project, dialect, r, &wanted))
        .and_then(|r| {
            Some(Written {
                id: r.get("id")?.as_str()?.to_owned(),
                version_id: crate::vocab::json::meta(r, "versionId"),
                existed: false,
            })
        })
}

#[derive(Debug, Default)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
    /// A saved plan refused before its first write: every stale object.
    pub refused: Vec<ApplyError>,
}

impl Report {
    pub fn failed(&self) -> usize {
        self.outcomes.iter().filter(|o| o.result.is_err()).count()
    }
    /// Writes an interruption kept from starting.
    pub fn not_started(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| matches!(o.result, Err(ApplyError::NotStarted { .. })))
            .count()
    }
    /// Whether the plan was refused whole (nothing written).
    pub fn is_refused(&self) -> bool {
        !self.refused.is_empty()
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
    match (f.membership.as_deref(), f.sealed.as_deref()) {
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
pub(crate) fn released(
    c: &Change,
    exclusive: &[&str],
) -> BTreeMap<String, (Vec<Value>, Vec<Value>)> {
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

/// The live object a change writes, checked: still there (or, for a delete, gone:
/// `None`), careplane's to write (or adoptable), and as the plan saw it (`check_plan`).
#[allow(clippy::result_large_err)] // the error is the outcome: it is kept, not propagated far
fn check_live(
    c: &Change,
    project: &str,
    dialect: &dyn Dialect,
    live: Option<Value>,
    check_plan: bool,
) -> Result<Option<Value>, ApplyError> {
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
    let live = if c.action == Action::Adopt && !dialect.owns(project, c.target.kind, &live) {
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
    if check_plan {
        still_as_planned(c, &live).map_err(|detail| ApplyError::Stale {
            target: c.target.clone(),
            detail,
        })?;
    }
    Ok(Some(live))
}

fn exists_now(c: &Change, detail: &str) -> ApplyError {
    ApplyError::Stale {
        target: c.target.clone(),
        detail: detail.into(),
    }
}

const OTHER_VALUES: &str = "it exists now, with other values than this apply writes";

/// The fields a create writes (sealed lists in full).
fn create_fields(c: &Change) -> crate::vocab::Fields {
    c.fields
        .iter()
        .filter_map(|f| written_value(f).map(|v| (f.field.clone(), v)))
        .collect()
}

async fn apply_one(
    c: &Change,
    step: Step,
    project: &str,
    store: &Store,
    dialect: &dyn Dialect,
    mode: &Mode,
) -> Result<Done, ApplyError> {
    let write_err = |source: FhirError| write_error(c, source);
    if c.fields
        .iter()
        .any(|f| f.membership.is_some() && f.sealed.is_none())
    {
        return Err(ApplyError::Stale {
            target: c.target.clone(),
            detail: "the plan carries patient lists only as counts and digests, and they were not re-evaluated".into(),
        });
    }
    if let (crate::vocab::Operation::CareTeamParticipant(p), Action::Update) =
        (&c.operation, c.action)
    {
        return apply_care_team(c, p, project, store, dialect, mode).await;
    }
    match c.action {
        Action::NoOp | Action::Manual => Ok(Done::default()),
        Action::Create => {
            let (resource, find, fields) = create_request(c, project, dialect);
            let conditional = dialect.capabilities().target().conditional_create;
            if !conditional {
                let existing = store.search(&find).await.map_err(write_err)?;
                if existing.iter().any(|r| {
                    dialect
                        .capabilities()
                        .same_object(c.target.kind, &fields, r)
                }) {
                    return Err(exists_now(c, "it exists now"));
                }
            }
            // If-None-Exist both refuses a duplicate and makes the POST safe to retry.
            let result = store.create(&resource, conditional.then_some(&find)).await;
            created(c, project, store, dialect, &find, &fields, result).await
        }
        Action::Update | Action::Delete | Action::Adopt => {
            let id = c.target.id.as_deref().unwrap_or_default();
            if let Some(prepared) = unread_delete(c) {
                let Some(Write::Delete(pre)) = &prepared.write else {
                    unreachable!("unread_delete makes a delete")
                };
                let result = store
                    .delete(&c.target.resource_type, id, pre)
                    .await
                    .map(|()| None);
                return written(c, project, store, dialect, &prepared, result).await;
            }
            let live = store
                .read(&c.target.resource_type, id)
                .await
                .map_err(write_err)?;
            let prepared = prepare(c, step, project, dialect, live, mode)?;
            let Some(write) = prepared.write.clone() else {
                return Ok(Done::default());
            };
            let result = match &write {
                Write::Delete(pre) => store
                    .delete(&c.target.resource_type, id, pre)
                    .await
                    .map(|()| None),
                Write::Put(body, pre) => store.update(body, pre).await.map(Some),
                Write::Patch(ops, pre) => store
                    .patch(&c.target.resource_type, id, ops, pre)
                    .await
                    .map(Some),
            };
            written(c, project, store, dialect, &prepared, result).await
        }
    }
}

/// A delete under `If-Match` needs no read first: the version it names is the one the
/// plan saw careplane's object at, so the server refuses it (412) if anything changed,
/// ownership included, and a DELETE carries no body.
fn unread_delete(c: &Change) -> Option<Prepared> {
    let version = c.precondition.version_id.clone()?;
    (c.action == Action::Delete).then(|| Prepared {
        write: Some(Write::Delete(fhir::Precondition {
            version_id: Some(version.clone()),
            last_updated: None,
        })),
        fields: BTreeMap::new(),
        version: Some(version),
    })
}

/// How one update, adopt or delete goes to the server, decided from the object as read.
#[derive(Clone, Debug)]
enum Write {
    Delete(fhir::Precondition),
    /// The whole resource (every field careplane does not manage sent back as read).
    Put(Value, fhir::Precondition),
    /// Only what changed, as a guarded JSON Patch ([`fhir::patch`]).
    Patch(Value, fhir::Precondition),
}

/// An update, adopt or delete checked against the object as read: what to send (`None`:
/// nothing, the object of a delete is gone) and the fields it writes.
#[derive(Clone, Debug)]
struct Prepared {
    write: Option<Write>,
    fields: BTreeMap<String, Option<Value>>,
    /// The version the write was computed from (a refused patch is told apart by it).
    version: Option<String>,
}

/// What apply may use on this target beyond single whole-resource requests: the
/// dialect's table (`batch`, `patch`) confirmed by the server's CapabilityStatement.
#[derive(Debug, Default)]
struct Mode {
    /// Writes per batch Bundle; 0 or 1: one request per write.
    batch: usize,
    /// Writes per Bundle now: halved each time a Bundle gets no answer in time (the
    /// server takes longer per entry than the target's timeouts allow for `batch`).
    size: std::sync::atomic::AtomicUsize,
    /// Resource types updated by JSON Patch.
    patch: BTreeSet<String>,
}

impl Mode {
    async fn of(store: &Store, dialect: &dyn Dialect, writes: Writes) -> Mode {
        let table = dialect.capabilities().target();
        if !(table.patch || table.batch && writes.batch_size > 1) {
            return Mode::default();
        }
        let server = store.features().await;
        let batch = if table.batch && server.batch {
            writes.batch_size
        } else {
            0
        };
        Mode {
            batch,
            size: std::sync::atomic::AtomicUsize::new(batch),
            patch: if table.patch {
                server.patch
            } else {
                BTreeSet::new()
            },
        }
    }
    fn batches(&self) -> bool {
        self.batch > 1
    }
    /// Writes per Bundle now.
    fn size(&self) -> usize {
        self.size.load(std::sync::atomic::Ordering::SeqCst)
    }
    /// A Bundle got no answer in time: smaller ones from now on (down to one request per
    /// change).
    fn unanswered(&self) {
        let _ = self.size.fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |n| Some((n / 2).max(1)),
        );
    }
}

/// Whether a Bundle's failure means it got no answer in time (not a refusal).
fn unanswered(e: &FhirError) -> bool {
    matches!(
        e,
        FhirError::LargeWriteUnanswered { .. } | FhirError::Timeout { .. }
    ) || matches!(
        e,
        FhirError::Http {
            status: 408 | 504,
            ..
        }
    )
}

/// `chunk` in Bundles of the size `mode` allows now (it shrinks when a Bundle gets no
/// answer in time), one request per change once it is down to one.
async fn apply_adaptive(
    chunk: &[(usize, &Change, Step)],
    project: &str,
    store: &Store,
    dialect: &dyn Dialect,
    mode: &Mode,
) -> Vec<(usize, Result<Done, ApplyError>)> {
    let mut out = Vec::new();
    let mut rest = chunk;
    while !rest.is_empty() {
        let n = mode.size().clamp(1, rest.len());
        let (now, later) = rest.split_at(n);
        if n == 1 && mode.size() <= 1 {
            let (i, c, step) = now[0];
            out.push((i, apply_one(c, step, project, store, dialect, mode).await));
        } else {
            out.extend(apply_chunk(now, project, store, dialect, mode).await);
        }
        rest = later;
    }
    out
}

#[allow(clippy::result_large_err)] // the error is the outcome: it is kept, not propagated far
fn prepare(
    c: &Change,
    step: Step,
    project: &str,
    dialect: &dyn Dialect,
    live: Option<Value>,
    mode: &Mode,
) -> Result<Prepared, ApplyError> {
    let Some(live) = check_live(c, project, dialect, live, step != Step::AfterRelease)? else {
        return Ok(Prepared {
            write: None,
            fields: BTreeMap::new(),
            version: None,
        });
    };
    let pre = write_precondition(c, &live, step);
    let version = crate::vocab::json::meta(&live, "versionId");
    if c.action == Action::Delete {
        return Ok(Prepared {
            write: Some(Write::Delete(pre)),
            fields: BTreeMap::new(),
            version,
        });
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
    // A patch where the server takes one for this type and the version guards it (an
    // adoption rewrites ownership marks in `meta`: sent whole). Otherwise the live
    // resource is not needed after the merge: it becomes the merged one, uncopied.
    let patchable = c.action == Action::Update
        && pre.version_id.is_some()
        && mode.patch.contains(&c.target.resource_type);
    let write = if patchable {
        let merged = dialect.merge(c.target.kind, &live, &fields);
        match fhir::patch::diff(&live, &merged) {
            Some(ops) => Write::Patch(ops, pre),
            None => Write::Put(merged, pre),
        }
    } else {
        Write::Put(dialect.merge_owned(c.target.kind, live, &fields), pre)
    };
    Ok(Prepared {
        write: Some(write),
        fields,
        version,
    })
}

/// The outcome of an update, adopt or delete sent as `prepared` (alone or in a batch).
/// A write that may have landed though it failed (lost answer, conflict with our own
/// first attempt, a patch whose guard failed) is re-read: if the object now holds what the
/// write meant, it counts as done.
async fn written(
    c: &Change,
    project: &str,
    store: &Store,
    dialect: &dyn Dialect,
    prepared: &Prepared,
    result: Result<Option<Written>, FhirError>,
) -> Result<Done, ApplyError> {
    let id = c.target.id.as_deref().unwrap_or_default();
    let e = match result {
        Ok(w) => return Ok(Done::wrote(w)),
        Err(e) => e,
    };
    let patch_refused = matches!(prepared.write, Some(Write::Patch(..)))
        && matches!(
            e,
            FhirError::Http {
                status: 400 | 422,
                ..
            }
        );
    if !maybe_landed(&e) && !patch_refused {
        return Err(write_error(c, e));
    }
    let now = store.read(&c.target.resource_type, id).await;
    if matches!(prepared.write, Some(Write::Delete(_))) {
        return match now {
            Ok(None) => Ok(Done::landed(None)),
            _ => Err(write_error(c, e)),
        };
    }
    match now {
        Ok(Some(now)) if holds(c, project, dialect, &now, &prepared.fields) => {
            Ok(Done::landed(Some(Written {
                id: id.to_owned(),
                version_id: crate::vocab::json::meta(&now, "versionId"),
                existed: false,
            })))
        }
        // the patch's guard failed because the object moved: somebody else's edit
        Ok(Some(now))
            if patch_refused && crate::vocab::json::meta(&now, "versionId") != prepared.version =>
        {
            Err(ApplyError::Refused {
                target: c.target.clone(),
                status: match e {
                    FhirError::Http { status, .. } => status,
                    _ => 412,
                },
            })
        }
        _ => Err(write_error(c, e)),
    }
}

/// A create's resource, its `If-None-Exist` search and the fields it writes.
fn create_request(
    c: &Change,
    project: &str,
    dialect: &dyn Dialect,
) -> (Value, fhir::Query, crate::vocab::Fields) {
    let find = dialect.find_query(project, c.target.kind, &c.target.name);
    let fields = create_fields(c);
    let resource = dialect.build(project, c.target.kind, &c.target.name, &fields);
    (resource, find, fields)
}

/// The outcome of a create (alone or in a batch): one that found the object existing, or
/// whose answer was lost, counts as done if careplane's search finds it holding what the
/// create wrote.
async fn created(
    c: &Change,
    project: &str,
    store: &Store,
    dialect: &dyn Dialect,
    find: &fhir::Query,
    fields: &crate::vocab::Fields,
    result: Result<Written, FhirError>,
) -> Result<Done, ApplyError> {
    match result {
        Ok(w) if !w.existed => Ok(Done::wrote(Some(w))),
        // found existing: our own first attempt whose answer was lost, or another's
        Ok(_) => created_here(c, project, store, dialect, find, fields)
            .await
            .map(|w| Done::landed(Some(w)))
            .ok_or_else(|| exists_now(c, OTHER_VALUES)),
        Err(e) if maybe_landed(&e) => {
            match created_here(c, project, store, dialect, find, fields).await {
                Some(w) => Ok(Done::landed(Some(w))),
                None => Err(write_error(c, e)),
            }
        }
        Err(e) => Err(write_error(c, e)),
    }
}

/// A write's error as the change's outcome: a patient group's server message is withheld
/// (it may quote members), a conflict is a refusal.
fn write_error(c: &Change, source: FhirError) -> ApplyError {
    let sensitive = !c.target.kind.sensitive_fields().is_empty();
    match source {
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
        FhirError::Conflict { status, .. } => ApplyError::Refused {
            target: c.target.clone(),
            status,
        },
        source => ApplyError::Write {
            target: c.target.clone(),
            origin: c.reason.source.clone(),
            source,
        },
    }
}

/// Before the first write of a saved plan: every change with a precondition, checked
/// against the target now (objects re-read; creates searched for). Returns every stale
/// object (empty: the plan still holds). A read that fails counts as stale: the plan
/// cannot be shown to hold. Where the target takes `batch` Bundles, the reads and searches
/// go `batchSize` to a Bundle (smaller once one gets no answer in time), each entry's
/// answer checked as its single request's would be.
pub async fn stale_objects(
    plan: &Plan,
    store: &Store,
    dialect: &dyn Dialect,
    writes: Writes,
) -> Vec<ApplyError> {
    let project = plan.project.as_str();
    let checks: Vec<(usize, &Change)> = plan
        .changes
        .iter()
        .filter(|c| checked_before_apply(c))
        .enumerate()
        .collect();
    if checks.is_empty() {
        return Vec::new();
    }
    let mode = Mode::of(store, dialect, writes).await;
    let groups: Vec<Vec<(usize, &Change)>> = if mode.batches() {
        checks.chunks(mode.batch).map(<[_]>::to_vec).collect()
    } else {
        checks.into_iter().map(|x| vec![x]).collect()
    };
    let mode = &mode;
    let mut stale: Vec<(usize, ApplyError)> = futures::stream::iter(groups)
        .map(|group| async move {
            let mut out = Vec::new();
            let mut rest = group.as_slice();
            while !rest.is_empty() {
                let n = mode.size().clamp(1, rest.len());
                let (now, later) = rest.split_at(n);
                rest = later;
                if n == 1 {
                    let (i, c) = now[0];
                    out.push((i, stale_one(c, project, store, dialect).await));
                } else {
                    out.extend(stale_in_bundle(now, project, store, dialect, mode).await);
                }
            }
            out
        })
        .buffer_unordered(writes.concurrency.max(1))
        .flat_map(futures::stream::iter)
        .filter_map(|(i, r)| async move { r.err().map(|e| (i, e)) })
        .collect()
        .await;
    stale.sort_by_key(|(i, _)| *i);
    stale.into_iter().map(|(_, e)| e).collect()
}

/// A read for the stale check that failed: the plan cannot be shown to hold.
fn unreadable(c: &Change, source: FhirError) -> ApplyError {
    ApplyError::Write {
        target: c.target.clone(),
        origin: c.reason.source.clone(),
        source,
    }
}

/// Whether a create's object exists now, from what careplane's search finds.
#[allow(clippy::result_large_err)] // the error is the outcome: it is kept, not propagated far
fn absent_still(c: &Change, dialect: &dyn Dialect, found: &[Value]) -> Result<(), ApplyError> {
    let fields = create_fields(c);
    if found.iter().any(|r| {
        dialect
            .capabilities()
            .same_object(c.target.kind, &fields, r)
    }) {
        return Err(ApplyError::Stale {
            target: c.target.clone(),
            detail: "it exists now".into(),
        });
    }
    Ok(())
}

/// One change of a saved plan checked with its own request: a create searched for, any
/// other write's object read.
async fn stale_one(
    c: &Change,
    project: &str,
    store: &Store,
    dialect: &dyn Dialect,
) -> Result<(), ApplyError> {
    match c.action {
        Action::Create => {
            let find = dialect.find_query(project, c.target.kind, &c.target.name);
            match store.search(&find).await {
                Ok(found) => absent_still(c, dialect, &found),
                Err(e) => Err(unreadable(c, e)),
            }
        }
        _ => {
            let id = c.target.id.as_deref().unwrap_or_default();
            match store.read(&c.target.resource_type, id).await {
                Ok(live) => check_live(c, project, dialect, live, true).map(|_| ()),
                Err(e) => Err(unreadable(c, e)),
            }
        }
    }
}

/// Changes of a saved plan checked in one Bundle of reads and searches. A Bundle that
/// fails whole checks its changes one by one (reads are safe to send again); one without
/// an answer in time makes the Bundles after it smaller. A search whose first page is not
/// all of its matches is finished with the single search.
async fn stale_in_bundle(
    group: &[(usize, &Change)],
    project: &str,
    store: &Store,
    dialect: &dyn Dialect,
    mode: &Mode,
) -> Vec<(usize, Result<(), ApplyError>)> {
    let entries: Vec<fhir::BatchEntry> = group
        .iter()
        .map(|(_, c)| match c.action {
            Action::Create => {
                fhir::BatchEntry::Search(dialect.find_query(project, c.target.kind, &c.target.name))
            }
            _ => fhir::BatchEntry::Read {
                resource_type: c.target.resource_type.clone(),
                id: c.target.id.clone().unwrap_or_default(),
            },
        })
        .collect();
    let mut out = Vec::with_capacity(group.len());
    let answers = match store.batch(&entries).await {
        Ok(answers) => answers,
        Err(e) => {
            if unanswered(&e) {
                mode.unanswered();
            }
            for (i, c) in group {
                out.push((*i, stale_one(c, project, store, dialect).await));
            }
            return out;
        }
    };
    for ((i, c), answer) in group.iter().zip(answers) {
        let r = match answer {
            Ok(fhir::BatchAnswer::Read(live)) if c.action != Action::Create => {
                check_live(c, project, dialect, live, true).map(|_| ())
            }
            Ok(fhir::BatchAnswer::Found {
                matches,
                complete: true,
            }) if c.action == Action::Create => absent_still(c, dialect, &matches),
            // more than one page of matches: the single search reads them all
            Ok(fhir::BatchAnswer::Found {
                matches,
                complete: false,
            }) if c.action == Action::Create => match absent_still(c, dialect, &matches) {
                Ok(()) => stale_one(c, project, store, dialect).await,
                stale => stale,
            },
            // an entry the Bundle could not answer (or answered with something else) is
            // asked again on its own: reads are safe to repeat, and a server may take a
            // request singly that it refuses inside a batch
            Ok(_) | Err(_) => stale_one(c, project, store, dialect).await,
        };
        out.push((*i, r));
    }
    out
}

/// Whether a saved plan's change is checked against the target before the first write:
/// writes of the configuration layer only. Effects of rules (memberships, care-team
/// participants, task routing) are recomputed from live data at apply time, so activity in
/// patients, consents, care teams and tasks never makes a saved plan stale.
pub(crate) fn checked_before_apply(c: &Change) -> bool {
    matches!(
        c.action,
        Action::Create | Action::Update | Action::Delete | Action::Adopt
    ) && c.layer() == crate::plan::Layer::Configuration
        && !is_plugin(c)
}

/// The rules plugin is written by [`plugin::install`] after every other write (it carries
/// the ids they create), and checked there, against the plugin API.
pub fn is_plugin(c: &Change) -> bool {
    matches!(c.operation, crate::vocab::Operation::Plugin { .. })
}

pub mod plugin;

/// A care-team assignment: one read-modify-write per patient who joins or leaves (the
/// patient lists are sealed in the change). Every other participant is sent back as read.
/// Where the server takes batches, the conditional creates, the reads and the writes go in
/// Bundles ([`care_teams_in_bundles`]).
async fn apply_care_team(
    c: &Change,
    p: &crate::vocab::Participant,
    project: &str,
    store: &Store,
    dialect: &dyn Dialect,
    mode: &Mode,
) -> Result<Done, ApplyError> {
    use crate::dialect::{CareTeamLocation, ParticipantChange};
    let stale = |detail: String| ApplyError::Stale {
        target: c.target.clone(),
        detail,
    };
    let list = |v: &Option<Value>| -> BTreeSet<String> {
        crate::vocab::json::str_list(v.as_ref())
            .into_iter()
            .collect()
    };
    let Some((before, after)) = c
        .fields
        .iter()
        .find(|f| f.field == "patients")
        .and_then(|f| f.sealed.as_deref().cloned())
    else {
        return Err(stale("the plan carries no patient lists".into()));
    };
    let (before, after) = (list(&before), list(&after));
    let change = |add: bool| ParticipantChange {
        practitioner: p.practitioner.clone(),
        role: serde_json::json!({"system": p.role.system, "code": p.role.code, "display": p.role.display}),
        lead: p.lead,
        add,
        replace_role: p.authoritative,
    };
    // lead handovers on care teams the participant is on already: the same write as a
    // join (the participant sent back as the lead, everyone else explicitly not); a
    // participant joining with a handover is written once, by its join
    let handed_over: BTreeSet<String> = c
        .fields
        .iter()
        .find(|f| f.field == crate::plan::LEAD_FIELD)
        .and_then(|f| f.sealed.as_deref().cloned())
        .map(|(b, a)| list(&a).difference(&list(&b)).cloned().collect())
        .unwrap_or_default();
    let joins: BTreeSet<String> = after.difference(&before).cloned().collect();
    // (patient, add, a care team that holds the participant exists)
    let work: Vec<(String, bool, bool)> = joins
        .iter()
        .map(|x| (x.clone(), true, false))
        .chain(
            handed_over
                .difference(&joins)
                .map(|x| (x.clone(), true, true)),
        )
        .chain(before.difference(&after).map(|x| (x.clone(), false, true)))
        .collect();
    // Where a create carries If-None-Exist, a patient joining is first a conditional
    // create (the search inside it replaces a read of our own); only if a care team exists
    // is it read and merged. A removal, and a handover on a care team the participant is
    // on, always read.
    let create_first = dialect.capabilities().target().conditional_create;
    // Where the server takes batches, those first creates go `mode.size()` to a Bundle;
    // a patient whose entry found a care team (or failed) is read first, as below.
    let mut batched = BTreeSet::new();
    let mut read_first = BTreeSet::new();
    if create_first && mode.batches() {
        let creates: Vec<(&String, fhir::BatchEntry)> = work
            .iter()
            .filter(|(_, add, exists)| *add && !*exists)
            .filter_map(
                |(patient, _, _)| match dialect.care_team_location(project, patient) {
                    CareTeamLocation::Search(q) => Some((
                        patient,
                        fhir::BatchEntry::Create {
                            resource: dialect.care_team_merge(
                                project,
                                patient,
                                None,
                                &change(true),
                            ),
                            if_none_exist: Some(q),
                        },
                    )),
                    CareTeamLocation::Read { .. } => None,
                },
            )
            .collect();
        let (patients, entries): (Vec<&String>, Vec<fhir::BatchEntry>) =
            creates.into_iter().unzip();
        let size = mode.size().max(1);
        for (patients, entries) in patients.chunks(size).zip(entries.chunks(size)) {
            // a Bundle that failed whole: each patient the single way (conditional creates
            // are safe to send again); one without an answer in time makes the Bundles
            // after it smaller, as for every other change
            let answers = match store.batch(entries).await {
                Ok(answers) => answers,
                Err(e) => {
                    if unanswered(&e) {
                        mode.unanswered();
                    }
                    continue;
                }
            };
            for (patient, answer) in patients.iter().zip(answers) {
                match answer {
                    Ok(fhir::BatchAnswer::Written(w)) if !w.existed => {
                        batched.insert((*patient).clone());
                    }
                    _ => {
                        read_first.insert((*patient).clone());
                    }
                }
            }
        }
    }
    let mut tally = CareTeamTally {
        read_first,
        ..Default::default()
    };
    // Every other patient's care team is read first (a removal, a handover, a join whose
    // create found a care team or failed, a join where creates are not conditional).
    // Where the server takes batches, those reads go `mode.size()` to a Bundle, then the
    // merged care teams in another; what cannot go in a Bundle goes the single way below.
    let pending = work
        .iter()
        .enumerate()
        .filter(|(_, (patient, _, _))| !batched.contains(patient));
    if mode.batches() {
        let (reread, single): (Vec<usize>, Vec<usize>) = pending.map(|(k, _)| k).partition(|&k| {
            let (patient, add, exists) = &work[k];
            let conditional = matches!(
                dialect.care_team_location(project, patient),
                CareTeamLocation::Search(_)
            );
            !(*add
                && !*exists
                && conditional
                && create_first
                && !tally.read_first.contains(patient))
        });
        tally.single = single;
        let mut rest = reread.as_slice();
        while !rest.is_empty() {
            let n = mode.size().clamp(1, rest.len());
            if n == 1 {
                tally.single.extend_from_slice(rest);
                break;
            }
            let (now, later) = rest.split_at(n);
            rest = later;
            care_teams_in_bundles(
                now, &work, &change, project, store, dialect, mode, &mut tally,
            )
            .await;
        }
        tally.single.sort_unstable();
    } else {
        tally.single = pending.map(|(k, _)| k).collect();
    }
    for k in std::mem::take(&mut tally.single) {
        let (patient, add, exists) = &work[k];
        let location = dialect.care_team_location(project, patient);
        let read_first = &tally.read_first;
        let result = async {
            // at most twice: a conditional create that finds the care team made meanwhile
            // by another write merges into it instead
            for attempt in 0..2 {
                let conditional = matches!(location, CareTeamLocation::Search(_));
                let live = if attempt == 0
                    && *add
                    && !*exists
                    && conditional
                    && create_first
                    && !read_first.contains(patient)
                {
                    None
                } else {
                    read_care_team(store, &location).await?
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
            tally
                .settle(k, patient, e, store, &location, &change(*add))
                .await;
        }
    }
    tally.failed.sort_by_key(|(k, _)| *k);
    let (count, landed) = (tally.failed.len(), tally.landed);
    match tally.failed.into_iter().next() {
        None => Ok(Done {
            written: None,
            note: (landed > 0).then(|| {
                format!("the server's answer to {landed} care-team write(s) was lost; re-read shows they landed")
            }),
            writes: work.len(),
        }),
        Some((_, first)) => Err(ApplyError::Partial {
            target: c.target.clone(),
            failed: count,
            total: work.len(),
            first,
        }),
    }
}

/// How a care-team assignment's patients went so far.
#[derive(Default)]
struct CareTeamTally {
    /// (the patient's place in the work list, the error): the first reported is the first
    /// patient's.
    failed: Vec<(usize, FhirError)>,
    /// Writes whose answer was lost, which re-reading shows landed.
    landed: usize,
    /// Patients still to write one request at a time.
    single: Vec<usize>,
    /// Patients whose care team is read before it is written (a conditional create found
    /// one).
    read_first: BTreeSet<String>,
}

impl CareTeamTally {
    /// A patient's write failed with `e`: where its answer may have been lost, the care
    /// team is read again and the write counts as done if it shows the change.
    async fn settle(
        &mut self,
        k: usize,
        patient: &str,
        e: FhirError,
        store: &Store,
        location: &crate::dialect::CareTeamLocation,
        change: &crate::dialect::ParticipantChange,
    ) {
        if maybe_landed(&e)
            && let Ok(now) = read_care_team(store, location).await
            && participant_in_effect(now.as_ref(), change)
        {
            self.landed += 1;
        } else {
            self.failed.push((k, withhold(e, patient)));
        }
    }
}

/// A patient's care team as it is now (the first match where it is searched for).
async fn read_care_team(
    store: &Store,
    location: &crate::dialect::CareTeamLocation,
) -> Result<Option<Value>, FhirError> {
    match location {
        crate::dialect::CareTeamLocation::Read { resource_type, id } => {
            store.read(resource_type, id).await
        }
        crate::dialect::CareTeamLocation::Search(q) => {
            Ok(store.search(q).await?.into_iter().next())
        }
    }
}

/// Patients (`now`, places in `work`) whose care teams are read in one Bundle and written
/// in another: each merged care team a PUT under the version read (`ifMatch`), or, where
/// the patient has none, a conditional create (`ifNoneExist`). Each entry's answer is its
/// patient's: a failure is settled as a single write's would be; a create that finds a
/// care team made meanwhile, a care team without a version to send (`If-Unmodified-Since`
/// has no batch form), and every patient of a Bundle that failed whole (after a re-read
/// where its answer may have been lost) go the single way.
#[allow(clippy::too_many_arguments)]
async fn care_teams_in_bundles(
    now: &[usize],
    work: &[(String, bool, bool)],
    change: &dyn Fn(bool) -> crate::dialect::ParticipantChange,
    project: &str,
    store: &Store,
    dialect: &dyn Dialect,
    mode: &Mode,
    tally: &mut CareTeamTally,
) {
    use crate::dialect::CareTeamLocation;
    let locations: Vec<CareTeamLocation> = now
        .iter()
        .map(|&k| dialect.care_team_location(project, &work[k].0))
        .collect();
    let reads: Vec<fhir::BatchEntry> = locations
        .iter()
        .map(|l| match l {
            CareTeamLocation::Read { resource_type, id } => fhir::BatchEntry::Read {
                resource_type: resource_type.clone(),
                id: id.clone(),
            },
            CareTeamLocation::Search(q) => fhir::BatchEntry::Search(q.clone()),
        })
        .collect();
    let answers = match store.batch(&reads).await {
        Ok(answers) => answers,
        Err(e) => {
            // nothing was written yet: every patient the single way
            if unanswered(&e) {
                mode.unanswered();
            }
            tally.single.extend_from_slice(now);
            return;
        }
    };
    // (place in `now`, entry)
    let mut writes: Vec<(usize, fhir::BatchEntry)> = Vec::new();
    for (j, answer) in answers.into_iter().enumerate() {
        let k = now[j];
        let (patient, add, _) = &work[k];
        let live = match answer {
            Ok(fhir::BatchAnswer::Read(live)) => live,
            Ok(fhir::BatchAnswer::Found { matches, .. }) => matches.into_iter().next(),
            // a read the Bundle could not answer: nothing was written for this patient
            // yet, so the single way reads (and writes) again; a server may take a read
            // singly that it refuses inside a batch
            Ok(_) | Err(_) => {
                tally.single.push(k);
                continue;
            }
        };
        if live.is_none() && !*add {
            continue; // nothing to take anyone off
        }
        let body = dialect.care_team_merge(project, patient, live.as_ref(), &change(*add));
        let pre = live
            .as_ref()
            .map(crate::fhir::Precondition::seen_on)
            .unwrap_or_default();
        let entry = match &locations[j] {
            _ if body.get("id").is_some() => {
                if pre.version_id.is_none() && pre.last_updated.is_some() {
                    tally.single.push(k);
                    continue;
                }
                fhir::BatchEntry::Update {
                    resource: body,
                    pre,
                }
            }
            CareTeamLocation::Search(q) => fhir::BatchEntry::Create {
                resource: body,
                if_none_exist: Some(q.clone()),
            },
            // an unconditional create is never in a Bundle (it is not safe to send again)
            CareTeamLocation::Read { .. } => {
                tally.single.push(k);
                continue;
            }
        };
        writes.push((j, entry));
    }
    if writes.is_empty() {
        return;
    }
    let (places, entries): (Vec<usize>, Vec<fhir::BatchEntry>) = writes.into_iter().unzip();
    match store.batch(&entries).await {
        Ok(answers) => {
            for (j, answer) in places.into_iter().zip(answers) {
                let k = now[j];
                let (patient, add, _) = &work[k];
                match answer {
                    // a care team made meanwhile by another write: merged into, singly
                    Ok(fhir::BatchAnswer::Written(w)) if w.existed => {
                        tally.read_first.insert(patient.clone());
                        tally.single.push(k);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tally
                            .settle(k, patient, e, store, &locations[j], &change(*add))
                            .await;
                    }
                }
            }
        }
        Err(e) => {
            // The Bundle failed whole. Where its answer may have been lost, what landed is
            // read back; the rest goes the single way (which reads again and writes under
            // the version it finds).
            if unanswered(&e) {
                mode.unanswered();
            }
            let lost = maybe_landed(&e) || unanswered(&e);
            for j in places {
                let k = now[j];
                if lost
                    && let Ok(live) = read_care_team(store, &locations[j]).await
                    && participant_in_effect(live.as_ref(), &change(work[k].1))
                {
                    tally.landed += 1;
                } else {
                    tally.single.push(k);
                }
            }
        }
    }
}

/// Whether a patient's care team (as read now) shows the participant change made: the
/// practitioner holds the role (and, authoritative, nobody else does; `lead`, they lead
/// and nobody else does), or no longer does.
fn participant_in_effect(live: Option<&Value>, change: &crate::dialect::ParticipantChange) -> bool {
    let code = change.role["code"].as_str();
    let parts: Vec<(Option<&str>, Option<&str>, bool)> = live
        .and_then(|l| l["participant"].as_array())
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p.pointer("/member/reference").and_then(Value::as_str),
                p.pointer("/role/0/coding/0/code").and_then(Value::as_str),
                crate::rules::care_team_participant(p).is_some_and(|(_, _, lead)| lead),
            )
        })
        .collect();
    let me =
        |m: &Option<&str>, r: &Option<&str>| *m == Some(change.practitioner.as_str()) && *r == code;
    let mine = parts.iter().any(|(m, r, _)| me(m, r));
    if !change.add {
        return !mine;
    }
    let role_alone = !change.replace_role
        || !parts
            .iter()
            .any(|(m, r, _)| *r == code && *m != Some(change.practitioner.as_str()));
    let leads = !change.lead || parts.iter().all(|(m, r, lead)| *lead == me(m, r));
    mine && role_alone && leads
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

/// How a caller steers an apply in flight, without apply printing anything: a stop flag
/// (set on Ctrl-C or SIGTERM: no new write starts, the ones in flight finish) and a
/// callback for each finished write (progress).
#[derive(Default)]
pub struct Control<'a> {
    pub stop: Option<&'a std::sync::atomic::AtomicBool>,
    /// Called with each outcome, the writes finished so far and the writes planned.
    #[allow(clippy::type_complexity)]
    pub on_done: Option<&'a (dyn Fn(&Outcome, usize, usize) + Sync)>,
}

impl Control<'_> {
    fn stopped(&self) -> bool {
        self.stop
            .is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// Progress of one apply: writes planned and finished.
struct Progress {
    total: usize,
    done: std::sync::atomic::AtomicUsize,
}

/// Whether a change may go in a batch Bundle: a whole create (conditional), update, adopt
/// or delete of one object whose write carries a version (`ifMatch`). Care-team
/// assignments batch their own per-patient reads and writes; release steps go singly.
fn batchable(c: &Change, step: Step, dialect: &dyn Dialect) -> bool {
    step == Step::Whole
        && !matches!(c.operation, crate::vocab::Operation::CareTeamParticipant(_))
        && match c.action {
            Action::Create => dialect.capabilities().target().conditional_create,
            Action::Update | Action::Adopt | Action::Delete => c.precondition.version_id.is_some(),
            _ => false,
        }
}

/// Up to `mode.batch` changes as two batch Bundles: one reading every object an update,
/// adopt or delete writes (the whole resource is the body of a PUT; the read checks it is
/// still careplane's and as planned), then one with every write, each under its own
/// precondition (`ifNoneExist`, `ifMatch`). Each entry's answer is its change's outcome.
/// A Bundle that fails whole (or whose answer was lost) sends each change the single way,
/// after a re-read shows what landed.
async fn apply_chunk(
    chunk: &[(usize, &Change, Step)],
    project: &str,
    store: &Store,
    dialect: &dyn Dialect,
    mode: &Mode,
) -> Vec<(usize, Result<Done, ApplyError>)> {
    let mut out: Vec<(usize, Result<Done, ApplyError>)> = Vec::new();
    // reads
    let reads: Vec<(usize, fhir::BatchEntry)> = chunk
        .iter()
        .enumerate()
        .filter(|(_, (_, c, _))| c.action != Action::Create && unread_delete(c).is_none())
        .map(|(k, (_, c, _))| {
            (
                k,
                fhir::BatchEntry::Read {
                    resource_type: c.target.resource_type.clone(),
                    id: c.target.id.clone().unwrap_or_default(),
                },
            )
        })
        .collect();
    let mut live: BTreeMap<usize, Result<Option<Value>, FhirError>> = BTreeMap::new();
    if !reads.is_empty() {
        let entries: Vec<fhir::BatchEntry> = reads.iter().map(|(_, e)| e.clone()).collect();
        match store.batch(&entries).await {
            Ok(answers) => {
                for ((k, _), a) in reads.iter().zip(answers) {
                    live.insert(
                        *k,
                        a.map(|a| match a {
                            fhir::BatchAnswer::Read(r) => r,
                            _ => None,
                        }),
                    );
                }
            }
            Err(e) => {
                if unanswered(&e) {
                    mode.unanswered();
                }
                // nothing was written yet: every change the single way
                for (i, c, step) in chunk {
                    let r = apply_one(c, *step, project, store, dialect, mode).await;
                    out.push((*i, r));
                }
                return out;
            }
        }
    }
    // writes
    enum Pending {
        Create(fhir::Query, crate::vocab::Fields),
        Write(Box<Prepared>),
    }
    let mut entries = Vec::new();
    let mut pending: Vec<(usize, &Change, Step, Pending)> = Vec::new();
    for (k, (i, c, step)) in chunk.iter().enumerate() {
        if c.action == Action::Create {
            let (resource, find, fields) = create_request(c, project, dialect);
            entries.push(fhir::BatchEntry::Create {
                resource,
                if_none_exist: Some(find.clone()),
            });
            pending.push((*i, c, *step, Pending::Create(find, fields)));
            continue;
        }
        let read = match live.remove(&k) {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                out.push((*i, Err(write_error(c, e))));
                continue;
            }
            None => None,
        };
        let prepared = match unread_delete(c) {
            Some(p) => p,
            None => match prepare(c, *step, project, dialect, read, mode) {
                Ok(p) => p,
                Err(e) => {
                    out.push((*i, Err(e)));
                    continue;
                }
            },
        };
        let id = c.target.id.clone().unwrap_or_default();
        let rt = c.target.resource_type.clone();
        let entry = match &prepared.write {
            None => {
                out.push((*i, Ok(Done::default())));
                continue;
            }
            Some(Write::Delete(pre)) => fhir::BatchEntry::Delete {
                resource_type: rt,
                id,
                pre: pre.clone(),
            },
            Some(Write::Put(body, pre)) => fhir::BatchEntry::Update {
                resource: body.clone(),
                pre: pre.clone(),
            },
            Some(Write::Patch(ops, pre)) => fhir::BatchEntry::Patch {
                resource_type: rt,
                id,
                ops: ops.clone(),
                pre: pre.clone(),
            },
        };
        entries.push(entry);
        pending.push((*i, c, *step, Pending::Write(Box::new(prepared))));
    }
    if entries.is_empty() {
        return out;
    }
    match store.batch(&entries).await {
        Ok(answers) => {
            for ((i, c, _, p), a) in pending.into_iter().zip(answers) {
                let r = match p {
                    Pending::Create(find, fields) => {
                        let result = a.and_then(|a| match a {
                            fhir::BatchAnswer::Written(w) => Ok(w),
                            _ => Err(FhirError::InvalidResponse {
                                what: format!("create {}", c.target.resource_type),
                                reason: "the batch answer is not a write".into(),
                            }),
                        });
                        created(c, project, store, dialect, &find, &fields, result).await
                    }
                    Pending::Write(prepared) => {
                        let result = a.map(|a| match a {
                            fhir::BatchAnswer::Written(w) => Some(w),
                            _ => None,
                        });
                        written(c, project, store, dialect, &prepared, result).await
                    }
                };
                out.push((i, r));
            }
        }
        Err(e) => {
            // The Bundle failed whole. Where its answer may have been lost, what landed is
            // read back first; the rest goes the single way (conditional creates are safe
            // to send again; an update re-reads and meets its own precondition again).
            if unanswered(&e) {
                mode.unanswered();
            }
            let lost = maybe_landed(&e) || unanswered(&e);
            for (i, c, step, p) in pending {
                let r = match p {
                    Pending::Create(find, fields) => {
                        match lost.then(|| created_here(c, project, store, dialect, &find, &fields))
                        {
                            Some(f) => match f.await {
                                Some(w) => Ok(Done::landed(Some(w))),
                                None => apply_one(c, step, project, store, dialect, mode).await,
                            },
                            None => apply_one(c, step, project, store, dialect, mode).await,
                        }
                    }
                    Pending::Write(prepared) => {
                        let id = c.target.id.as_deref().unwrap_or_default();
                        let landed = if lost {
                            match store.read(&c.target.resource_type, id).await {
                                Ok(None) => matches!(prepared.write, Some(Write::Delete(_))),
                                Ok(Some(now)) => {
                                    !matches!(prepared.write, Some(Write::Delete(_)))
                                        && crate::vocab::json::meta(&now, "versionId")
                                            != prepared.version
                                        && holds(c, project, dialect, &now, &prepared.fields)
                                }
                                Err(_) => false,
                            }
                        } else {
                            false
                        };
                        if landed {
                            Ok(Done::landed(None))
                        } else {
                            apply_one(c, step, project, store, dialect, mode).await
                        }
                    }
                };
                out.push((i, r));
            }
        }
    }
    out
}

/// Where and how one level's changes are written (the same for every level of an apply).
#[derive(Clone, Copy)]
struct Level<'a> {
    project: &'a str,
    store: &'a Store,
    dialect: &'a dyn Dialect,
    concurrency: usize,
    mode: &'a Mode,
}

/// One level's changes, `concurrency` requests at a time: in batch Bundles of
/// `mode.batch` where the target takes them, one request per change otherwise.
async fn run_level<'a>(
    items: Vec<(usize, &'a Change, Step)>,
    index: &'a [usize],
    at: Level<'a>,
    control: &'a Control<'a>,
    progress: &'a Progress,
) -> Vec<Outcome> {
    let Level {
        project,
        store,
        dialect,
        concurrency,
        mode,
    } = at;
    let report = |i: usize, c: &Change, result: Result<Done, ApplyError>| {
        let (result, note, writes) = match result {
            Ok(d) => (Ok(d.written), d.note, d.writes),
            Err(e) => (Err(e), None, 0),
        };
        let outcome = Outcome {
            change: index[i],
            action: c.action,
            target: c.target.clone(),
            result,
            note,
            writes,
        };
        let done = progress
            .done
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        if let Some(f) = control.on_done {
            f(&outcome, done, progress.total);
        }
        outcome
    };
    let (batched, single): (Vec<_>, Vec<_>) = items
        .into_iter()
        .partition(|(_, c, step)| mode.batches() && batchable(c, *step, dialect));
    let chunks: Vec<Vec<(usize, &Change, Step)>> = batched
        .chunks(mode.batch.max(1))
        .map(<[_]>::to_vec)
        .collect();
    let by_batch = futures::stream::iter(chunks)
        .map(|chunk| async move {
            if control.stopped() {
                return chunk
                    .iter()
                    .map(|(i, c, _)| {
                        let target = c.target.clone();
                        report(*i, c, Err(ApplyError::NotStarted { target }))
                    })
                    .collect::<Vec<_>>();
            }
            let results = apply_adaptive(&chunk, project, store, dialect, mode).await;
            let changes: BTreeMap<usize, &Change> =
                chunk.iter().map(|(i, c, _)| (*i, *c)).collect();
            results
                .into_iter()
                .map(|(i, r)| report(i, changes[&i], r))
                .collect()
        })
        .buffer_unordered(concurrency.max(1))
        .flat_map(futures::stream::iter);
    let one_by_one = futures::stream::iter(single)
        .map(|(i, c, step)| async move {
            let result = if control.stopped() {
                let target = c.target.clone();
                Err(ApplyError::NotStarted { target })
            } else {
                apply_one(c, step, project, store, dialect, mode).await
            };
            report(i, c, result)
        })
        .buffer_unordered(concurrency.max(1));
    let mut out: Vec<Outcome> = by_batch.collect().await;
    out.extend(one_by_one.collect::<Vec<_>>().await);
    out
}

/// How apply sends its writes (the target's settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Writes {
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Writes per FHIR `batch` Bundle where the target takes them (1: one request each).
    pub batch_size: usize,
}

impl Writes {
    /// One request per write, `concurrency` at a time.
    pub fn single(concurrency: usize) -> Self {
        Writes {
            concurrency,
            batch_size: 1,
        }
    }
}

/// Tasks of a folded routing change unfolded and written at a time (at least one round of
/// Bundles at full concurrency); a handful in unit tests, so that several parts are quick.
const UNFOLDED_AT_ONCE: usize = if cfg!(test) { 7 } else { 2_000 };

/// Apply every change of `plan` that writes, in order, `concurrency` at a time per level.
pub async fn apply(plan: &Plan, store: &Store, dialect: &dyn Dialect, writes: Writes) -> Report {
    apply_with(plan, store, dialect, writes, &Control::default()).await
}

/// [`apply`], steered by `control` (stop flag, progress callback).
pub async fn apply_with(
    plan: &Plan,
    store: &Store,
    dialect: &dyn Dialect,
    writes: Writes,
    control: &Control<'_>,
) -> Report {
    let (concurrency, settings) = (writes.concurrency, writes);
    let mut report = Report::default();
    let writing = |c: &&Change| {
        matches!(
            c.action,
            Action::Create | Action::Update | Action::Delete | Action::Adopt
        ) && !is_plugin(c)
    };
    // Every write is numbered: `of_item[n]` is the index in the plan of write `n`'s change
    // (what its outcome carries, for `on_done` too).
    // A folded routing change is unfolded (one change per task) a part at a time when its
    // level comes, each task numbered then: 75,000 routed tasks are never all unfolded.
    let mut of_item: Vec<usize> = Vec::new();
    let writes: Vec<(usize, &Change)> = plan
        .changes
        .iter()
        .enumerate()
        .filter(|(_, c)| writing(c))
        .map(|(i, c)| {
            of_item.push(i);
            (of_item.len() - 1, c)
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
    let progress = Progress {
        total: phases.values().flatten().map(|(_, c)| c.width()).sum(),
        done: std::sync::atomic::AtomicUsize::new(0),
    };
    let mode = if progress.total == 0 {
        Mode::default()
    } else {
        Mode::of(store, dialect, settings).await
    };
    let at = Level {
        project: &plan.project,
        store,
        dialect,
        concurrency,
        mode: &mode,
    };
    for (_, batch) in phases {
        let (folded, batch): (Vec<_>, Vec<_>) = batch.into_iter().partition(|(_, c)| c.unfolds());
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
        // a release step is half of a write: not counted as one in the progress
        let quiet = Control {
            stop: control.stop,
            on_done: None,
        };
        let release_progress = Progress {
            total: 0,
            done: std::sync::atomic::AtomicUsize::new(0),
        };
        for o in run_level(releases, &of_item, at, &quiet, &release_progress).await {
            if o.result.is_err() {
                failed_release.insert(o.change);
                report.outcomes.push(o);
            }
        }
        let mut rest = Vec::new();
        for (i, c) in &batch {
            // outcomes carry plan indexes; `i` numbers the write
            if failed_release.contains(&of_item[*i]) {
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
            .extend(run_level(rest, &of_item, at, control, &progress).await);
        // folded routing changes (no exclusive values: nothing to release first)
        let part = UNFOLDED_AT_ONCE.max(mode.batch * concurrency);
        for (n, c) in folded {
            for from in (0..c.width()).step_by(part) {
                let tasks = c.unfolded_part(from..(from + part).min(c.width()));
                let items: Vec<(usize, &Change, Step)> = tasks
                    .iter()
                    .map(|t| {
                        of_item.push(of_item[n]);
                        (of_item.len() - 1, t, Step::Whole)
                    })
                    .collect();
                report
                    .outcomes
                    .extend(run_level(items, &of_item, at, control, &progress).await);
            }
        }
    }
    report.outcomes.sort_by_key(|o| o.change);
    report
}

// ---------------------------------------------------------------------------------------
// The record of an apply: what was written and why (`--report FILE`, FHIR Provenance).

/// `format` of an apply report.
pub const RECORD_FORMAT: &str = "careplane-apply-report";
pub const RECORD_FORMAT_VERSION: u32 = 1;
/// Identifier systems used in the Provenance careplane writes.
pub const PLAN_SHA256_SYSTEM: &str = "https://careplane.dev/plan-sha256";
pub const COMMIT_SYSTEM: &str = "https://careplane.dev/manifests-commit";
pub const CLIENT_SYSTEM: &str = "https://careplane.dev/agent/oauth-client";
pub const SUBJECT_SYSTEM: &str = "https://careplane.dev/agent/token-subject";

/// Who applied: the project, and the OAuth2 client (or the token's subject) where known.
/// Never a credential.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct Agent {
    pub project: String,
    /// The OAuth2 client id, or the `sub` of a bearer token that is a JWT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// What `client` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_kind: Option<ClientKind>,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ClientKind {
    OauthClient,
    TokenSubject,
}

/// How an apply ended.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum RecordResult {
    /// Every write went through.
    Applied,
    /// Some writes failed (the others landed; nothing is rolled back).
    Incomplete,
    /// A saved plan was stale: nothing was written.
    Refused,
    /// The plan had nothing to write.
    NoChanges,
    /// `apply --plan`: the configuration was applied, and the effects of one or more
    /// rules were held back by a guard (see `effects`).
    HeldBack,
}

/// What happened to one change's write.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum WriteOutcome {
    Done,
    /// Nothing needed writing after all (a delete of an object already gone).
    Unchanged,
    Failed,
}

/// One change apply wrote (or tried to).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct RecordedWrite {
    pub action: Action,
    pub kind: crate::vocab::ObjectKind,
    /// Manifest name.
    pub name: String,
    pub resource_type: String,
    /// Server id; never for resources that identify patients (Patient, Consent, CareTeam).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    pub outcome: WriteOutcome,
    /// Resources written for it (one, or one per patient care team).
    pub writes: usize,
    /// Why (the plan's reason).
    pub reason: String,
    /// The manifest position that asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Whether the record was also stored on the target as a FHIR Provenance.
#[derive(
    Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum ProvenanceStatus {
    /// Written: `Provenance/<id>`.
    Written { reference: String },
    /// The target cannot store Provenance (Canvas): this report is the record.
    Unsupported,
    /// Nothing was written, so nothing was recorded on the target.
    NothingWritten,
    /// Writing it failed.
    Failed { error: String },
}

/// The record of one apply. Carries resource ids of configuration only: resources that
/// identify patients are counted in `withheld`, never listed.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ApplyRecord {
    pub format: String,
    pub format_version: u32,
    pub careplane_version: String,
    pub project: String,
    /// Target name, dialect and endpoint (never credentials).
    pub target: crate::plan::TargetInfo,
    pub agent: Agent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifests_commit: Option<String>,
    pub manifests_checksum: String,
    /// `sha256:<hex>` of the plan as a plan file (the digest the Markdown plan ends with).
    pub plan_sha256: String,
    /// Applied from a saved plan (`apply --plan`).
    pub saved_plan: bool,
    /// RFC 3339 times.
    pub started: String,
    pub ended: String,
    pub result: RecordResult,
    pub resources: Vec<RecordedWrite>,
    /// Resources written that identify patients, counted by type.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub withheld: BTreeMap<String, usize>,
    /// A refused saved plan: every stale object, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stale: Vec<String>,
    /// `apply --plan`: per rule, the effects the saved plan previewed against the ones
    /// recomputed from live data, and whether they were applied or held back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub effects: Vec<crate::plan::EffectCheck>,
    pub provenance: ProvenanceStatus,
}

/// Resource types whose ids identify patients (see [`fhir::shown`]).
fn identifies_patient(resource_type: &str) -> bool {
    matches!(resource_type, "Patient" | "Consent" | "CareTeam")
}

fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl ApplyRecord {
    /// The record of `plan` applied (`report`), or refused before any write (`stale`).
    pub fn new(
        plan: &Plan,
        agent: Agent,
        saved_plan: bool,
        started: std::time::SystemTime,
        ended: std::time::SystemTime,
        report: Option<&Report>,
        stale: &[ApplyError],
    ) -> Self {
        let mut resources = Vec::new();
        let mut withheld = BTreeMap::new();
        for o in report.map(|r| r.outcomes.as_slice()).unwrap_or_default() {
            let c = &plan.changes[o.change];
            let patient = identifies_patient(&o.target.resource_type);
            let (outcome, id, version_id, error) = match &o.result {
                Ok(w) => (
                    if o.writes == 0 {
                        WriteOutcome::Unchanged
                    } else {
                        WriteOutcome::Done
                    },
                    w.as_ref()
                        .map(|w| w.id.clone())
                        .or_else(|| o.target.id.clone()),
                    w.as_ref().and_then(|w| w.version_id.clone()),
                    None,
                ),
                Err(e) => (
                    WriteOutcome::Failed,
                    o.target.id.clone(),
                    None,
                    Some(e.to_string()),
                ),
            };
            if patient && o.writes > 0 {
                *withheld.entry(o.target.resource_type.clone()).or_insert(0) += o.writes;
            }
            resources.push(RecordedWrite {
                action: o.action,
                kind: o.target.kind,
                name: o.target.name.clone(),
                resource_type: o.target.resource_type.clone(),
                id: if patient { None } else { id },
                version_id: if patient { None } else { version_id },
                outcome,
                writes: o.writes,
                reason: c.reason.rule.clone(),
                source: c.reason.source.clone(),
                note: o.note.clone(),
                error,
            });
        }
        let result = if !stale.is_empty() {
            RecordResult::Refused
        } else if resources.iter().any(|r| r.outcome == WriteOutcome::Failed) {
            RecordResult::Incomplete
        } else if resources.is_empty() {
            RecordResult::NoChanges
        } else {
            RecordResult::Applied
        };
        ApplyRecord {
            format: RECORD_FORMAT.into(),
            format_version: RECORD_FORMAT_VERSION,
            careplane_version: env!("CARGO_PKG_VERSION").into(),
            project: plan.project.clone(),
            target: plan.target.clone(),
            agent,
            manifests_commit: plan.manifests_commit.clone(),
            manifests_checksum: plan.manifests_checksum.clone(),
            plan_sha256: crate::plan::file::checksum(plan),
            saved_plan,
            started: rfc3339(started),
            ended: rfc3339(ended),
            result,
            resources,
            withheld,
            stale: stale.iter().map(ToString::to_string).collect(),
            effects: Vec::new(),
            provenance: ProvenanceStatus::NothingWritten,
        }
    }

    /// Whether anything landed on the target.
    pub fn wrote_anything(&self) -> bool {
        self.resources
            .iter()
            .any(|r| r.outcome == WriteOutcome::Done)
    }

    /// The FHIR R4 Provenance of this apply: its targets are the resources written
    /// (patient-identifying ones only as a count), tagged as the project's. `None` when
    /// nothing was written.
    pub fn provenance(&self) -> Option<Value> {
        use serde_json::json;
        if !self.wrote_anything() {
            return None;
        }
        let mut targets: Vec<Value> = Vec::new();
        // each resource once, in the order written (a set: 75,000 routed tasks compared
        // with every target before them took most of an apply's time)
        let mut seen = std::collections::HashSet::new();
        for r in self
            .resources
            .iter()
            .filter(|r| r.outcome == WriteOutcome::Done && !identifies_patient(&r.resource_type))
        {
            if let Some(id) = &r.id {
                let reference = format!("{}/{id}", r.resource_type);
                if seen.insert(reference.clone()) {
                    targets.push(json!({ "reference": reference }));
                }
            }
        }
        for (rt, n) in &self.withheld {
            targets.push(json!({"display": format!("{n} {rt} resource(s); ids withheld")}));
        }
        let mut who = json!({"display": format!("careplane (project '{}')", self.project)});
        if let (Some(client), Some(kind)) = (&self.agent.client, self.agent.client_kind) {
            let system = match kind {
                ClientKind::OauthClient => CLIENT_SYSTEM,
                ClientKind::TokenSubject => SUBJECT_SYSTEM,
            };
            who["identifier"] = json!({"system": system, "value": client});
        }
        let mut entity = vec![json!({
            "role": "source",
            "what": {
                "identifier": {"system": PLAN_SHA256_SYSTEM, "value": self.plan_sha256},
                "display": format!("careplane plan ({})", if self.saved_plan { "saved plan file" } else { "planned at apply" })
            }
        })];
        if let Some(commit) = &self.manifests_commit {
            entity.push(json!({
                "role": "source",
                "what": {
                    "identifier": {"system": COMMIT_SYSTEM, "value": commit},
                    "display": "manifests commit"
                }
            }));
        }
        Some(json!({
            "resourceType": "Provenance",
            "meta": {"tag": [crate::vocab::ownership::tag(&self.project)]},
            "target": targets,
            "occurredPeriod": {"start": self.started, "end": self.ended},
            "recorded": self.ended,
            "activity": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                "code": "UPDATE",
                "display": "revise"
            }]},
            "agent": [{
                "type": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                    "code": "author",
                    "display": "Author"
                }]},
                "who": who
            }],
            "entity": entity
        }))
    }
}

/// Store the record as one FHIR `Provenance` (none when nothing was written). Provenance
/// has no identifier to make the create conditional, so a create whose answer was lost is
/// re-read like any other write: the project's Provenance updated since the apply started
/// with this apply's plan digest and time is the one this apply wrote.
pub async fn store_provenance(record: &ApplyRecord, store: &Store) -> ProvenanceStatus {
    let Some(resource) = record.provenance() else {
        return ProvenanceStatus::NothingWritten;
    };
    let written = |id: &str| ProvenanceStatus::Written {
        reference: format!("Provenance/{id}"),
    };
    match store.create(&resource, None).await {
        Ok(w) => written(&w.id),
        Err(e) => {
            let find = fhir::Query::new("Provenance")
                .param(
                    "_tag",
                    format!("{}|{}", crate::vocab::ownership::TAG_SYSTEM, record.project),
                )
                .param("_lastUpdated", format!("ge{}", record.started));
            let same = |p: &Value| {
                p["recorded"] == resource["recorded"] && p["entity"] == resource["entity"]
            };
            let found = if maybe_landed(&e) {
                store.search(&find).await.ok().and_then(|all| {
                    all.iter()
                        .find(|p| same(p))
                        .and_then(|p| p["id"].as_str().map(str::to_owned))
                })
            } else {
                None
            };
            match found {
                Some(id) => written(&id),
                None => ProvenanceStatus::Failed {
                    error: e.to_string(),
                },
            }
        }
    }
}

/// JSON Schema (draft-07) of the apply report, committed at
/// `schema/apply-report.schema.json`.
pub fn record_schema_text() -> String {
    let mut s = schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<ApplyRecord>()
        .to_value();
    if let Some(o) = s.as_object_mut() {
        o.insert(
            "$id".into(),
            "https://careplane.dev/schema/apply-report.schema.json".into(),
        );
        o.insert(
            "title".into(),
            "careplane apply report (format_version 1)".into(),
        );
    }
    let mut text = serde_json::to_string_pretty(&s).expect("schema serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Precondition, Reason, TargetInfo};
    use crate::vocab::ObjectKind;
    use serde_json::json;

    fn change(kind: ObjectKind, rt: &str, id: Option<&str>, action: Action) -> Change {
        Change {
            action,
            target: Target {
                kind,
                name: kind.slug().into(),
                resource_type: rt.into(),
                id: id.map(str::to_owned),
            },
            fields: Vec::new(),
            reason: Reason {
                code: crate::plan::ReasonCode::Differs,
                source: None,
                rule: "because".into(),
            },
            operation: Default::default(),
            precondition: Precondition::default(),
            notes: Vec::new(),
        }
    }

    fn outcome(
        i: usize,
        c: &Change,
        result: Result<Option<Written>, ApplyError>,
        writes: usize,
    ) -> Outcome {
        Outcome {
            change: i,
            action: c.action,
            target: c.target.clone(),
            result,
            note: None,
            writes,
        }
    }

    #[test]
    fn the_record_counts_patient_resources_and_the_provenance_names_only_configuration() {
        let changes = vec![
            change(ObjectKind::Team, "Group", None, Action::Create),
            change(
                ObjectKind::CareTeamAssignment,
                "CareTeam",
                None,
                Action::Update,
            ),
            change(
                ObjectKind::RoleAssignment,
                "PractitionerRole",
                Some("pr1"),
                Action::Update,
            ),
        ];
        let plan = Plan::new(
            "clinic",
            TargetInfo {
                name: "prod".into(),
                dialect: "fhir-r4".into(),
                endpoint: "https://fhir.example.org/r4/".into(),
            },
            vec![],
            "sha256:0",
            false,
            changes.clone(),
            vec![],
        );
        let w = |id: &str| Written {
            id: id.into(),
            version_id: Some("2".into()),
            existed: false,
        };
        let report = Report {
            outcomes: vec![
                outcome(0, &changes[0], Ok(Some(w("g1"))), 1),
                outcome(1, &changes[1], Ok(None), 3),
                outcome(
                    2,
                    &changes[2],
                    Err(ApplyError::Refused {
                        target: changes[2].target.clone(),
                        status: 412,
                    }),
                    0,
                ),
            ],
            refused: Vec::new(),
        };
        let now = std::time::SystemTime::now();
        let record = ApplyRecord::new(&plan, Agent::default(), true, now, now, Some(&report), &[]);
        assert_eq!(record.result, RecordResult::Incomplete);
        assert_eq!(record.withheld.get("CareTeam"), Some(&3));
        assert_eq!(record.resources[1].id, None);
        assert_eq!(record.resources[2].outcome, WriteOutcome::Failed);
        assert_eq!(record.plan_sha256, crate::plan::file::checksum(&plan));
        let p = record.provenance().unwrap();
        let targets: Vec<&Value> = p["target"].as_array().unwrap().iter().collect();
        assert_eq!(targets[0]["reference"], "Group/g1");
        assert_eq!(targets.len(), 2, "the failed write is not a target: {p:#}");
        assert_eq!(
            targets[1]["display"],
            "3 CareTeam resource(s); ids withheld"
        );
        assert!(!p.to_string().contains("CareTeam/"));
        assert_eq!(p["meta"]["tag"][0]["code"], "clinic");

        // nothing written: no Provenance
        let none = ApplyRecord::new(&plan, Agent::default(), true, now, now, None, &[]);
        assert_eq!(none.result, RecordResult::NoChanges);
        assert!(none.provenance().is_none());
    }

    #[test]
    fn a_participant_change_is_in_effect_once_the_care_team_shows_it() {
        let team = json!({"participant": [
            {"member": {"reference": "Practitioner/a"}, "role": [{"coding": [{"code": "pcp"}]}]},
            {"member": {"reference": "Practitioner/b"}, "role": [{"coding": [{"code": "rn"}]}]}
        ]});
        let ch = |who: &str, add: bool, replace_role: bool| crate::dialect::ParticipantChange {
            practitioner: format!("Practitioner/{who}"),
            role: json!({"code": "pcp"}),
            lead: false,
            add,
            replace_role,
        };
        assert!(participant_in_effect(Some(&team), &ch("a", true, false)));
        assert!(participant_in_effect(Some(&team), &ch("a", true, true)));
        assert!(!participant_in_effect(Some(&team), &ch("a", false, false)));
        assert!(participant_in_effect(Some(&team), &ch("c", false, false)));
        assert!(!participant_in_effect(Some(&team), &ch("c", true, false)));
        assert!(!participant_in_effect(None, &ch("a", true, false)));
    }

    #[test]
    fn a_lead_handover_is_in_effect_once_the_participant_alone_leads() {
        let ext = |on: bool| json!([{"url": crate::dialect::r4::CARE_TEAM_LEAD_EXTENSION, "valueBoolean": on}]);
        let team = |a_leads: bool, b_leads: bool| {
            json!({"participant": [
                {"extension": ext(a_leads), "member": {"reference": "Practitioner/a"}, "role": [{"coding": [{"code": "pcp"}]}]},
                {"extension": ext(b_leads), "member": {"reference": "Practitioner/b"}, "role": [{"coding": [{"code": "rn"}]}]}
            ]})
        };
        let lead = crate::dialect::ParticipantChange {
            practitioner: "Practitioner/a".into(),
            role: json!({"code": "pcp"}),
            lead: true,
            add: true,
            replace_role: false,
        };
        assert!(participant_in_effect(Some(&team(true, false)), &lead));
        assert!(!participant_in_effect(Some(&team(false, true)), &lead));
        assert!(!participant_in_effect(Some(&team(false, false)), &lead));
        assert!(!participant_in_effect(Some(&team(true, true)), &lead));
        // without `lead`, who leads does not matter
        let plain = crate::dialect::ParticipantChange {
            lead: false,
            ..lead
        };
        assert!(participant_in_effect(Some(&team(false, true)), &plain));
    }

    /// Patients joining a care-team assignment on a target with conditional create: one
    /// request each (the create's If-None-Exist does the lookup); one whose care team
    /// exists is still read and merged, and a removal reads first.
    #[test]
    fn a_new_care_team_is_created_without_a_lookup_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::File(crate::fhir::file::FileStore::new(dir.path()));
        let dialect = crate::dialect::r4::R4::default();
        let p = crate::vocab::Participant {
            practitioner: "Practitioner/dr".into(),
            role: crate::vocab::operation::Coding {
                system: "http://snomed.info/sct".into(),
                code: "453231000124104".into(),
                display: "PCP".into(),
            },
            lead: true,
            authoritative: false,
        };
        let assign = |before: &[&str], after: &[&str]| {
            let mut c = change(
                ObjectKind::CareTeamAssignment,
                "CareTeam",
                None,
                Action::Update,
            );
            c.operation = crate::vocab::Operation::CareTeamParticipant(p.clone());
            c.fields.push(crate::plan::FieldChange {
                field: "patients".into(),
                before: None,
                after: None,
                source: None,
                labels: Default::default(),
                membership: None,
                sealed: Some(Box::new((Some(json!(before)), Some(json!(after))))),
            });
            c
        };
        let requests = |s: &Store| match s {
            Store::File(f) => f.request_count(),
            _ => unreachable!(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let c = assign(&[], &["Patient/a", "Patient/b"]);
            apply_care_team(&c, &p, "proj", &store, &dialect, &Mode::default())
                .await
                .unwrap();
            assert_eq!(requests(&store), 2, "one conditional create per patient");
            let teams = store.search(&fhir::Query::new("CareTeam")).await.unwrap();
            assert_eq!(teams.len(), 2);

            // a care team that exists already (made by another write) is merged into
            let mut other = p.clone();
            other.practitioner = "Practitioner/rn".into();
            let mut c = assign(&[], &["Patient/a"]);
            c.operation = crate::vocab::Operation::CareTeamParticipant(other.clone());
            let before = requests(&store);
            apply_care_team(&c, &other, "proj", &store, &dialect, &Mode::default())
                .await
                .unwrap();
            assert_eq!(
                requests(&store) - before,
                3,
                "create finds it, read, update"
            );
            let teams = store.search(&fhir::Query::new("CareTeam")).await.unwrap();
            assert_eq!(teams.len(), 2, "no duplicate care team");
            let a = teams
                .iter()
                .find(|t| t["participant"].as_array().unwrap().len() == 2);
            assert!(a.is_some(), "both participants on one care team: {teams:?}");

            // leaving: read, then update
            let c = assign(&["Patient/b"], &[]);
            let before = requests(&store);
            apply_care_team(&c, &p, "proj", &store, &dialect, &Mode::default())
                .await
                .unwrap();
            assert_eq!(requests(&store) - before, 2);
        });
    }

    /// A lead handover on a care team the participant is on already: one read and one
    /// write for the patient, the participant made the lead and the previous lead not.
    #[test]
    fn a_lead_handover_on_a_care_team_the_participant_is_on_is_one_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::File(crate::fhir::file::FileStore::new(dir.path()));
        let dialect = crate::dialect::r4::R4::default();
        let participant = |who: &str, code: &str, lead: bool| crate::vocab::Participant {
            practitioner: format!("Practitioner/{who}"),
            role: crate::vocab::operation::Coding {
                system: "http://snomed.info/sct".into(),
                code: code.into(),
                display: code.into(),
            },
            lead,
            authoritative: false,
        };
        let list = |field: &str, before: &[&str], after: &[&str]| crate::plan::FieldChange {
            field: field.into(),
            before: None,
            after: None,
            source: None,
            labels: Default::default(),
            membership: None,
            sealed: Some(Box::new((Some(json!(before)), Some(json!(after))))),
        };
        let assign = |p: &crate::vocab::Participant, fields: Vec<crate::plan::FieldChange>| {
            let mut c = change(
                ObjectKind::CareTeamAssignment,
                "CareTeam",
                None,
                Action::Update,
            );
            c.operation = crate::vocab::Operation::CareTeamParticipant(p.clone());
            c.fields = fields;
            c
        };
        let requests = |s: &Store| match s {
            Store::File(f) => f.request_count(),
            _ => unreachable!(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            // the PCP joins without the lead, then the nurse joins as the lead
            let (pcp, rn) = (
                participant("dr", "pcp", true),
                participant("rn", "rn", true),
            );
            let pcp_plain = crate::vocab::Participant {
                lead: false,
                ..pcp.clone()
            };
            for p in [&pcp_plain, &rn] {
                let c = assign(p, vec![list("patients", &[], &["Patient/a"])]);
                apply_care_team(&c, p, "proj", &store, &dialect, &Mode::default())
                    .await
                    .unwrap();
            }
            // the PCP's assignment with `lead: true`: nobody joins, one handover
            let c = assign(
                &pcp,
                vec![
                    list("patients", &["Patient/a"], &["Patient/a"]),
                    list(crate::plan::LEAD_FIELD, &[], &["Patient/a"]),
                ],
            );
            let before = requests(&store);
            let done = apply_care_team(&c, &pcp, "proj", &store, &dialect, &Mode::default())
                .await
                .unwrap();
            assert_eq!(
                (done.writes, requests(&store) - before),
                (1, 2),
                "read, update"
            );
            let teams = store.search(&fhir::Query::new("CareTeam")).await.unwrap();
            let leads: Vec<(String, bool)> = teams[0]["participant"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(crate::rules::care_team_participant)
                .map(|(who, _, lead)| (who, lead))
                .collect();
            assert_eq!(teams.len(), 1);
            assert!(
                leads.contains(&("Practitioner/dr".into(), true)),
                "{leads:?}"
            );
            assert!(
                leads.contains(&("Practitioner/rn".into(), false)),
                "{leads:?}"
            );
        });
    }

    /// A folded routing change is written task by task, a part at a time: every task gets
    /// its own write under its own precondition and its own outcome (numbered with the
    /// folded change's index), across more tasks than one part holds; a task changed since
    /// the plan fails alone.
    #[test]
    fn a_folded_routing_change_writes_every_task_under_its_own_precondition() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::File(crate::fhir::file::FileStore::new(dir.path()));
        let dialect = crate::dialect::r4::R4::default();
        let n = 3 * UNFOLDED_AT_ONCE + 2;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut seen = Vec::new();
            for i in 0..n {
                let task = json!({"resourceType": "Task", "id": format!("t{i}"),
                    "status": "requested", "intent": "order", "description": "Lab follow-up"});
                let w = store
                    .update(&task, &crate::fhir::Precondition::default())
                    .await
                    .unwrap();
                seen.push(w.version_id.unwrap());
            }
            let mut fold = crate::plan::fold::Fold::default();
            for (i, version) in seen.iter().enumerate() {
                let team = crate::plan::FieldChange {
                    field: "team".into(),
                    before: None,
                    after: Some(json!("Group/g1")),
                    source: None,
                    labels: Default::default(),
                    membership: None,
                    sealed: None,
                };
                let mut c = crate::plan::fold::routed_task(
                    &format!("t{i}"),
                    "labs",
                    Action::Update,
                    vec![team],
                );
                c.precondition.version_id = Some(version.clone());
                fold.push(c);
            }
            let folded = fold.finish();
            assert_eq!((folded.len(), folded[0].width()), (1, n));
            // task t7 changes after the plan: its precondition no longer holds
            let t7 = store.read("Task", "t7").await.unwrap().unwrap();
            store
                .update(&t7, &crate::fhir::Precondition::default())
                .await
                .unwrap();
            let role = change(ObjectKind::Role, "CodeSystem", None, Action::NoOp);
            let plan = Plan::local(vec![role, folded[0].clone()]);
            let report = apply(&plan, &store, &dialect, Writes::single(4)).await;
            assert_eq!(report.outcomes.len(), n);
            assert!(report.outcomes.iter().all(|o| o.change == 1));
            let failed: Vec<&str> = report
                .outcomes
                .iter()
                .filter(|o| o.result.is_err())
                .map(|o| o.target.name.as_str())
                .collect();
            assert_eq!(failed, ["Task/t7"]);
            let names: BTreeSet<&str> = report
                .outcomes
                .iter()
                .map(|o| o.target.name.as_str())
                .collect();
            assert_eq!(names.len(), n, "one outcome per task");
            let last = store
                .read("Task", &format!("t{}", n - 1))
                .await
                .unwrap()
                .unwrap();
            assert_ne!(
                crate::vocab::json::meta(&last, "versionId"),
                Some(seen[n - 1].clone()),
                "the last part was written too"
            );
        });
    }

    #[test]
    fn only_configuration_changes_make_a_saved_plan_stale() {
        let team = change(ObjectKind::Team, "Group", Some("t1"), Action::Update);
        assert!(checked_before_apply(&team));
        let mut routed = change(
            ObjectKind::TaskRouting,
            "Task",
            Some("task1"),
            Action::Update,
        );
        routed.operation = crate::vocab::Operation::RouteTask {
            rule: "labs".into(),
            order: 10,
        };
        routed.precondition.version_id = Some("3".into());
        assert!(
            !checked_before_apply(&routed),
            "a routed task is an effect: a comment on it must not make the plan stale"
        );
        let mut members = change(
            ObjectKind::PatientGroup,
            "Group",
            Some("g1"),
            Action::Update,
        );
        members.fields.push(crate::plan::FieldChange {
            field: "members".into(),
            before: None,
            after: None,
            source: None,
            labels: Default::default(),
            membership: None,
            sealed: None,
        });
        members.precondition.version_id = Some("7".into());
        assert_eq!(members.layer(), crate::plan::Layer::Effects);
        assert!(
            !checked_before_apply(&members),
            "a group's members are an effect: a new patient must not make the plan stale"
        );
        let mut renamed = members.clone();
        renamed.fields.push(crate::plan::FieldChange {
            field: "name".into(),
            before: Some(json!("a")),
            after: Some(json!("b")),
            source: None,
            labels: Default::default(),
            membership: None,
            sealed: None,
        });
        assert!(checked_before_apply(&renamed), "a rename is configuration");
    }

    #[test]
    fn only_lost_answers_and_conflicts_are_re_read() {
        assert!(maybe_landed(&FhirError::Transport {
            what: "create Group".into(),
            reason: "connection closed".into()
        }));
        assert!(maybe_landed(&FhirError::Conflict {
            resource: "Group/1".into(),
            status: 412
        }));
        assert!(maybe_landed(&FhirError::LargeWriteUnanswered {
            what: "update Group/1".into(),
            reason: "HTTP 408".into(),
            size: "4000 members, 180000 bytes".into()
        }));
        assert!(!maybe_landed(&FhirError::Http {
            what: "update Group/1".into(),
            status: 400,
            message: None
        }));
    }
}
