//! The one I/O step of `plugin build --target`: read the target's live state once and
//! resolve the FHIR ids of careplane's own teams and patient groups, matched as plan
//! matches them (the dialect's identity: the recorded manifest name, or the name the
//! server shows). A patient group is resolved only when careplane manages it, so the
//! plugin never touches a group careplane does not own.

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
    let find = |kind: ObjectKind, name: &str, shown: &str, must_manage: bool| {
        let identity = caps.of(kind).map(|c| c.identity);
        observed
            .objects
            .iter()
            .find(|o| {
                o.kind == kind
                    && (o.managed || !must_manage)
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
        if let Some(id) = find(ObjectKind::Team, &t.name, &t.display_name, false) {
            r.teams.insert(t.name.clone(), id);
        }
    }
    for g in &m.desired.patient_groups {
        if let Some(id) = find(ObjectKind::PatientGroup, &g.name, &g.display_name, true) {
            r.groups.insert(g.name.clone(), id);
        }
    }
    Ok(r)
}
