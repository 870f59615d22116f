//! Apply's write of the rules plugin ([`crate::vocab::Operation::Plugin`]): after every
//! other write of the apply (the package carries the ids of the teams and groups they
//! create), through the target's plugin API.
//!
//! The precondition is the plan's: the plugin must still be absent (create) or still at the
//! version the plan saw (update); the plugin API has no conditional write, so apply
//! re-reads the list right before it uploads.

use std::collections::BTreeMap;

use super::{ApplyError, Outcome};
use crate::dialect::plugin::live::{self, Endpoint, PluginApi};
use crate::dialect::plugin::{self, Applied, RULES_FIELD};
use crate::fhir::Written;
use crate::plan::Change;
use crate::vocab::ObjectKind;

/// Ids of the objects an apply created, by kind and manifest name.
pub type Created = BTreeMap<(ObjectKind, String), String>;

/// Writes of this apply that did not go through, by kind and manifest name: why, as the
/// end of a sentence ("failed: …", "was not started …").
pub type Unwritten = BTreeMap<(ObjectKind, String), String>;

/// The writes among `outcomes` that did not go through, for [`install`].
pub fn unwritten(outcomes: &[Outcome]) -> Unwritten {
    outcomes
        .iter()
        .filter_map(|o| {
            let why = match o.result.as_ref().err()? {
                ApplyError::NotStarted { .. } => {
                    "was not started (the apply was interrupted before it)".to_owned()
                }
                _ => "failed to be written in this apply".to_owned(),
            };
            Some(((o.target.kind, o.target.name.clone()), why))
        })
        .collect()
}

fn stale(c: &Change, detail: String) -> ApplyError {
    ApplyError::Stale {
        target: c.target.clone(),
        detail,
    }
}

/// What [`install`] did: the outcome, and what to record for the next plan's diff.
pub struct Installed {
    pub outcome: Outcome,
    pub record: Option<Applied>,
}

/// Whether the plugin change `c` is stale against what the plugin API lists now: the plan
/// saw it absent and it is installed, or saw a version and it is uninstalled or at another.
/// Checked by [`install`] right before its upload, and with the rest of a saved plan's
/// configuration before its first write (`ops::stale_objects`).
pub fn stale_against(c: &Change, listed: &[live::Installed]) -> Option<ApplyError> {
    let stale = |detail: String| stale(c, detail);
    let live = listed.iter().find(|p| p.name == c.target.name);
    match (c.precondition.absent, live) {
        (true, Some(p)) => Some(stale(format!(
            "it is installed now (version {})",
            p.version.as_deref().unwrap_or("unknown")
        ))),
        (false, None) => Some(stale("it was uninstalled".into())),
        (false, Some(p)) if p.version != c.precondition.version_id => Some(stale(format!(
            "version {} now, {} when planned",
            p.version.as_deref().unwrap_or("unknown"),
            c.precondition.version_id.as_deref().unwrap_or("unknown")
        ))),
        _ => None,
    }
}

/// Installs or updates the plugin `c` (change number `i` of a plan for `project`).
pub async fn install(
    i: usize,
    c: &Change,
    project: &str,
    api: &Endpoint,
    created: &Created,
    unwritten: &Unwritten,
) -> Installed {
    let done = |result: Result<Option<Written>, ApplyError>, note: Option<String>| Outcome {
        change: i,
        action: c.action,
        target: c.target.clone(),
        writes: usize::from(result.is_ok()),
        result,
        note,
    };
    let stale = |detail: String| stale(c, detail);
    let api_err = |source| ApplyError::PluginApi {
        target: c.target.clone(),
        source,
    };
    let Some(mut rules) = c
        .fields
        .iter()
        .find(|f| f.field == RULES_FIELD)
        .and_then(|f| f.sealed.as_deref().cloned())
        .and_then(|(_, after)| after)
    else {
        let e = stale(
            "the plan carries the plugin's rules in memory only, and they were not rebuilt".into(),
        );
        return Installed {
            outcome: done(Err(e), None),
            record: None,
        };
    };
    let of = |kind: ObjectKind| -> BTreeMap<String, String> {
        created
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, name), id)| (name.clone(), id.clone()))
            .collect()
    };
    let filled = plugin::fill_ids(
        &mut rules,
        &of(ObjectKind::Team),
        &of(ObjectKind::PatientGroup),
    );
    // a rule whose team or group has no id (its create failed or never started) would run
    // with none: the plugin waits for the next apply, which writes that object first
    if let Some((kind, name)) = plugin::missing_ids(&rules).into_iter().next() {
        let why = unwritten
            .get(&(kind, name.clone()))
            .cloned()
            .unwrap_or_else(|| "has no id on the target (this apply did not create it)".into());
        let e = ApplyError::DependencyUnwritten {
            target: c.target.clone(),
            dependency: format!("{} '{name}'", kind.label()),
            why,
        };
        return Installed {
            outcome: done(Err(e), None),
            record: None,
        };
    }
    let Some(package) = plugin::package_from_rules(project, rules, Vec::new()) else {
        let e = stale("the plugin's rules are empty".into());
        return Installed {
            outcome: done(Err(e), None),
            record: None,
        };
    };
    let result = async {
        let client = PluginApi::connect(api).await.map_err(api_err)?;
        let listed = client.list().await.map_err(api_err)?;
        if let Some(e) = stale_against(c, &listed) {
            return Err(e);
        }
        client
            .upload(&package, c.precondition.absent)
            .await
            .map_err(api_err)?;
        Ok(Some(Written {
            id: package.name.clone(),
            version_id: package.version.clone(),
            existed: false,
        }))
    }
    .await;
    let version = package.rules_version().unwrap_or_default().to_owned();
    let note = (filled > 0 && result.is_ok()).then(|| {
        format!("{filled} id(s) of teams and groups this apply created filled in: installed version {version}")
    });
    let record = result.is_ok().then(|| Applied {
        plugin: package.name.clone(),
        version,
        rules: plugin::fingerprint(&package.rules),
    });
    Installed {
        outcome: done(result, note),
        record,
    }
}
