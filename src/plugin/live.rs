//! The one I/O step of `plugin build --target`: read the target's live state once and
//! resolve the FHIR ids of the teams and patient groups the manifests declare, matched
//! exactly as plan matches them (the dialect's identity: the manifest name careplane
//! recorded, or, on Canvas, which cannot hold a mark, the name the server shows). These are
//! the objects `careplane apply` writes; the plugin touches no other group.

use crate::manifest::Manifests;
use crate::observe;
use crate::ops::OpsError;
use crate::target::ResolvedTarget;
use crate::vocab::ObjectKind;
use crate::vocab::capability::Identity;

use super::Resolved;

/// Whether a target's dialect runs Canvas plugins.
pub fn runs_plugins(target: &ResolvedTarget) -> bool {
    target.info.dialect == "canvas"
}

pub async fn resolve(m: &Manifests, target: &ResolvedTarget) -> Result<Resolved, OpsError> {
    let observed = observe::observe(
        &target.store,
        target.dialect.as_ref(),
        &m.desired.project,
        observe::RuleReads::default(),
    )
    .await
    .map_err(OpsError::Observe)?;
    let caps = target.dialect.capabilities();
    let find = |kind: ObjectKind, name: &str, shown: &str| {
        let identity = caps.of(kind).map(|c| c.identity);
        observed
            .objects
            .iter()
            .find(|o| {
                o.kind == kind
                    && match identity {
                        Some(Identity::ManifestName) => o.name.as_deref() == Some(name),
                        _ => o.natural_key.as_deref() == Some(shown),
                    }
            })
            .map(|o| o.id.clone())
    };
    let mut r = Resolved {
        target: Some(target.info.name.clone()),
        ..Resolved::default()
    };
    for t in &m.desired.teams {
        if let Some(id) = find(ObjectKind::Team, &t.name, &t.display_name) {
            r.teams.insert(t.name.clone(), id);
        }
    }
    for g in &m.desired.patient_groups {
        if let Some(id) = find(ObjectKind::PatientGroup, &g.name, &g.display_name) {
            r.groups.insert(g.name.clone(), id);
        }
    }
    Ok(r)
}
