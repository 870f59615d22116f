//! The rules plugin as a managed object (targets whose capability table has the `plugin`
//! kind: Canvas): create / update / no-op, decided from the package the rules build and
//! what the target's plugin API lists.
//!
//! The plugin API lists a plugin's name, version and whether it is enabled; it does not
//! give the installed package back (canvas_cli `list`). So the package's content hash
//! rides in its `plugin_version` (`1.0.0+<sha256 prefix>`), and the rule-level diff is
//! against the rules careplane itself last installed on this target, recorded as
//! per-field digests ([`crate::dialect::plugin::fingerprint`]) when that record's version
//! is the installed one. Otherwise the plan says the diff is unknown.

use serde_json::{Value, json};

use crate::dialect::plugin::live::Installed;
use crate::dialect::plugin::{self, Applied, Package, RuleChange};
use crate::manifest::types::EffectsBy;
use crate::plan::reason::Why;
use crate::plan::{Action, Change, FieldChange, Precondition, Reason, Target};
use crate::vocab::{ObjectKind, Operation};

/// The plugin part of a plan's inputs.
#[derive(Clone, Debug, Default)]
pub struct Input {
    /// Who keeps the effects of rules current on this target.
    pub effects: EffectsBy,
    /// The package the rules build (`effects: plugin` on a target that runs plugins, and
    /// the project declares rules), team and group ids resolved from live state.
    pub package: Option<Package>,
    /// The plugin careplane would install under the project's name (also with `effects:
    /// watch`, to see whether it is still installed).
    pub name: Option<String>,
    /// What the target's plugin API lists; `None` where it was not read.
    pub installed: Option<Vec<Installed>>,
    /// What careplane recorded when it last installed the plugin here.
    pub applied: Option<Applied>,
    /// Where that record is kept (for the plan's words).
    pub record_at: Option<String>,
    /// Why the plugin API could not be read, where the plan goes on without it (it only
    /// serves a warning).
    pub unreadable: Option<String>,
}

pub use crate::dialect::plugin::RULES_FIELD;

/// Why a plan for a target that runs plugins has no plugin change: what keeps the
/// project's rules there instead, if anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unmanaged {
    /// `effects: watch`, and the project declares rules: `careplane watch` keeps them.
    KeptByWatch,
    /// The project declares no routing or patient-group rule: nothing keeps any (the
    /// project's `effects` setting as it is).
    NoRules(EffectsBy),
    /// `effects: plugin` with rules, but the target has no plugin API to install on.
    NoPluginApi,
}

/// [`Unmanaged`] from the project's `effects` on a target that runs plugins and whether
/// it declares routing or patient-group rules (with `effects: plugin` and rules, a plan
/// lacks the plugin change only where the target has no plugin API).
pub fn unmanaged(effects: EffectsBy, has_rules: bool) -> Unmanaged {
    match (has_rules, effects) {
        (false, e) => Unmanaged::NoRules(e),
        (true, EffectsBy::Watch) => Unmanaged::KeptByWatch,
        (true, EffectsBy::Plugin) => Unmanaged::NoPluginApi,
    }
}

impl Unmanaged {
    /// What `plugin status` says for target `target`.
    pub fn status(self, target: &str) -> String {
        match self {
            Unmanaged::KeptByWatch => format!(
                "the project's routing and patient-group rules are kept by `careplane watch` on target '{target}' (effects: watch): careplane does not manage its plugin there"
            ),
            Unmanaged::NoRules(e) => format!(
                "the project declares no routing or patient-group rule, so there is nothing for a plugin to keep on target '{target}' (effects: {}): careplane manages no plugin there",
                e.word()
            ),
            Unmanaged::NoPluginApi => format!(
                "target '{target}' has no plugin API, so careplane cannot install the project's plugin there (effects: plugin)"
            ),
        }
    }

    /// Why `plugin install` has nothing to install on target `target`, and what to do.
    pub fn install(self, target: &str) -> String {
        match self {
            Unmanaged::KeptByWatch => format!(
                "the project's routing and patient-group rules are kept by `careplane watch` on target '{target}' (effects: watch); set effects: plugin in the project file to install the plugin"
            ),
            Unmanaged::NoRules(e) => format!(
                "the project declares no routing or patient-group rule, so there is no plugin to install on target '{target}' (effects: {}); add a RoutingRule or PatientGroup first",
                e.word()
            ),
            Unmanaged::NoPluginApi => self.status(target),
        }
    }
}

fn field(name: &str, before: Option<Value>, after: Option<Value>) -> FieldChange {
    FieldChange {
        field: name.to_owned(),
        before,
        after,
        source: None,
        labels: Default::default(),
        membership: None,
        sealed: None,
    }
}

/// The change for the plugin, and warnings for the plan (both keepers active).
/// `created`: teams and patient groups this plan creates (their ids are filled in at
/// apply).
pub fn change(input: &Input, created: &[String]) -> (Option<Change>, Vec<String>) {
    let mut warnings = Vec::new();
    let live = |name: &str| {
        input
            .installed
            .as_ref()
            .and_then(|l| l.iter().find(|p| p.name == name))
    };
    let Some(package) = &input.package else {
        if let (Some(why), Some(name)) = (&input.unreadable, &input.name) {
            warnings.push(format!(
                "whether plugin {name} still runs on the target is unknown: its plugin API could not be read ({why})"
            ));
        }
        if let Some(name) = &input.name
            && let Some(p) = live(name)
            && p.enabled
        {
            warnings.push(match input.effects {
                EffectsBy::Watch => format!(
                    "the project's effects are kept by `careplane watch` (effects: watch), but plugin {name} is installed and enabled on the target: both would maintain routing and patient groups. Disable it (`canvas disable {name}`), or set effects: plugin"
                ),
                // effects: plugin, and no rule left to build it from
                EffectsBy::Plugin => format!(
                    "plugin {name} is installed and enabled on the target, but the project declares no routing or patient-group rule any more: it still runs the rules it was built with. careplane never uninstalls a plugin: disable or uninstall it (`canvas disable {name}`)"
                ),
            });
        }
        return (None, warnings);
    };
    let version = package.rules_version().unwrap_or_default().to_owned();
    let installed = live(&package.name);
    let mut fields = Vec::new();
    let mut notes = Vec::new();
    let (before_version, before_enabled) = match installed {
        Some(p) => (p.version.clone(), Some(p.enabled)),
        None => (None, None),
    };
    if before_version.as_deref() != Some(version.as_str()) {
        fields.push(field(
            "version",
            before_version.clone().map(Value::String),
            Some(json!(version)),
        ));
    }
    if before_enabled != Some(true) {
        fields.push(field(
            "enabled",
            before_enabled.map(Value::Bool),
            Some(json!(true)),
        ));
    }
    let action = match (installed, fields.is_empty()) {
        (None, _) => Action::Create,
        (Some(_), false) => Action::Update,
        (Some(_), true) => Action::NoOp,
    };
    let new_print = plugin::fingerprint(&package.rules);
    let diff: Option<Vec<RuleChange>> = match (action, installed, &input.applied) {
        (Action::NoOp, _, _) => Some(Vec::new()),
        (Action::Create, _, _) => Some(plugin::rule_diff(&json!({}), &new_print)),
        (_, Some(p), Some(a)) if p.version.as_deref() == Some(a.version.as_str()) => {
            notes.push(format!(
                "rules compared with the ones careplane installed as version {}{}",
                a.version,
                input
                    .record_at
                    .as_deref()
                    .map(|r| format!(" (recorded in {r})"))
                    .unwrap_or_default()
            ));
            Some(plugin::rule_diff(&a.rules, &new_print))
        }
        // the same content, only disabled
        (_, Some(_), _) if before_version.as_deref() == Some(version.as_str()) => Some(Vec::new()),
        _ => {
            notes.push(format!(
                "the installed version {} was not installed by careplane from here (no record of its rules): which rules differ is unknown; apply replaces the whole package",
                before_version.as_deref().unwrap_or("(none)")
            ));
            None
        }
    };
    for c in diff.iter().flatten() {
        let (name, after) = match c {
            RuleChange::Added { what, name } => (format!("{what} '{name}'"), json!("added")),
            RuleChange::Removed { what, name } => (format!("{what} '{name}'"), json!("removed")),
            RuleChange::Changed { what, name, fields } => (
                format!("{what} '{name}'"),
                json!(format!("changed: {}", fields.join(", "))),
            ),
        };
        fields.push(field(&name, None, Some(after)));
    }
    if action != Action::NoOp {
        let mut rules = field(
            RULES_FIELD,
            None,
            Some(json!(format!(
                "{} routing rule(s), {} patient group(s)",
                package.routing_rules, package.group_rules
            ))),
        );
        rules.sealed = Some(Box::new((None, Some(package.rules.clone()))));
        fields.push(rules);
        let waiting: Vec<&String> = package
            .unresolved
            .iter()
            .filter(|u| created.iter().any(|c| u.ends_with(&format!(" {c}"))))
            .collect();
        if !waiting.is_empty() {
            notes.push(format!(
                "{} this plan creates: apply fills in their ids, so the installed version will differ from the one shown",
                waiting.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        let left: Vec<&String> = package
            .unresolved
            .iter()
            .filter(|u| !waiting.contains(u))
            .collect();
        if !left.is_empty() {
            notes.push(format!(
                "{} has no id on the target: the plugin looks teams up by name and leaves such groups alone",
                left.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    let why = match action {
        Action::Create => Why::Missing {
            kind: ObjectKind::Plugin,
            name: &package.name,
            manual: false,
        },
        Action::NoOp => Why::Matches {
            evidence: None,
            route: None,
        },
        _ => Why::Differs {
            kind: ObjectKind::Plugin,
            fields: fields
                .iter()
                .filter(|f| f.field == "version" || f.field == "enabled")
                .map(|f| f.field.as_str())
                .collect(),
            route: None,
            manual: false,
        },
    };
    let change = Change {
        action,
        target: Target {
            kind: ObjectKind::Plugin,
            name: package.name.clone(),
            resource_type: "Plugin".into(),
            id: installed.map(|p| p.name.clone()),
        },
        reason: Reason::new(None, why),
        fields,
        operation: Operation::Plugin {
            sdk_version: plugin::SDK_VERSION.into(),
        },
        precondition: Precondition {
            version_id: before_version,
            last_updated: None,
            absent: installed.is_none(),
        },
        notes,
    };
    (Some(change), warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_plugin_change_is_explained_by_effects_and_rules() {
        assert_eq!(
            unmanaged(EffectsBy::Plugin, false),
            Unmanaged::NoRules(EffectsBy::Plugin)
        );
        assert_eq!(
            unmanaged(EffectsBy::Watch, false),
            Unmanaged::NoRules(EffectsBy::Watch)
        );
        assert_eq!(unmanaged(EffectsBy::Watch, true), Unmanaged::KeptByWatch);
        assert_eq!(unmanaged(EffectsBy::Plugin, true), Unmanaged::NoPluginApi);
        // only where watch keeps rules does the sentence say so
        for u in [
            Unmanaged::NoRules(EffectsBy::Plugin),
            Unmanaged::NoRules(EffectsBy::Watch),
            Unmanaged::NoPluginApi,
        ] {
            assert!(!u.status("t").contains("kept by"), "{u:?}");
            assert!(!u.install("t").contains("kept by"), "{u:?}");
        }
        assert!(
            Unmanaged::KeptByWatch
                .status("t")
                .contains("`careplane watch`")
        );
    }
}
