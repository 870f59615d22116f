//! Stage 6: apply a plan.
//!
//! Executes the plan's changes in dependency order (catalogs → teams → assignments;
//! deletes in reverse), with bounded concurrency inside one level, and returns one typed
//! outcome per change. Before every write it re-checks the change's precondition against
//! the server (the object is still absent / still at the version the plan saw / still
//! owned by careplane), and writes conditionally (`If-Match`, `If-None-Exist`), so a stale
//! plan is refused object by object instead of clobbering someone's edit. A failed write
//! does not stop the others; the next plan starts from whatever did land.

use std::collections::BTreeMap;

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
    #[error(
        "{target} is not owned by careplane project '{project}'; careplane will not write to it"
    )]
    NotOwned { target: Target, project: String },
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

fn precondition(c: &Change) -> fhir::Precondition {
    fhir::Precondition {
        version_id: c.precondition.version_id.clone(),
        last_updated: c.precondition.last_updated.clone(),
    }
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

async fn apply_one(
    c: &Change,
    project: &str,
    store: &Store,
    dialect: &dyn Dialect,
) -> Result<Option<Written>, ApplyError> {
    let write_err = |source: FhirError| match source {
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
    match c.action {
        Action::NoOp | Action::Manual => Ok(None),
        Action::Create => {
            let find = dialect.find_query(project, c.target.kind, &c.target.name);
            let existing = store.search(&find).await.map_err(write_err)?;
            if !existing.is_empty() {
                return Err(ApplyError::Stale {
                    target: c.target.clone(),
                    detail: "it exists now".into(),
                });
            }
            let fields = c
                .fields
                .iter()
                .filter_map(|f| f.after.clone().map(|v| (f.field.clone(), v)))
                .collect();
            let resource = dialect.build(project, c.target.kind, &c.target.name, &fields);
            store
                .create(&resource, Some(&find))
                .await
                .map(Some)
                .map_err(write_err)
        }
        Action::Update | Action::Delete => {
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
            if !dialect.owns(project, &live) {
                return Err(ApplyError::NotOwned {
                    target: c.target.clone(),
                    project: project.into(),
                });
            }
            still_as_planned(c, &live).map_err(|detail| ApplyError::Stale {
                target: c.target.clone(),
                detail,
            })?;
            let pre = precondition(c);
            if c.action == Action::Delete {
                store
                    .delete(&c.target.resource_type, id, &pre)
                    .await
                    .map(|_| None)
                    .map_err(write_err)
            } else {
                let fields: BTreeMap<String, Option<Value>> = c
                    .fields
                    .iter()
                    .map(|f| (f.field.clone(), f.after.clone()))
                    .collect();
                let merged = dialect.merge(c.target.kind, &live, &fields);
                store
                    .update(&merged, &pre)
                    .await
                    .map(Some)
                    .map_err(write_err)
            }
        }
    }
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
        .filter(|(_, c)| matches!(c.action, Action::Create | Action::Update | Action::Delete))
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
        let results: Vec<Outcome> = futures::stream::iter(batch)
            .map(|(i, c)| async move {
                Outcome {
                    change: i,
                    action: c.action,
                    target: c.target.clone(),
                    result: apply_one(c, &plan.project, store, dialect).await,
                }
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        report.outcomes.extend(results);
    }
    report.outcomes.sort_by_key(|o| o.change);
    report
}
