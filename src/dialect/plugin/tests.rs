use std::collections::BTreeMap;

use super::*;
use crate::manifest::load_from_memory;

const HEADER: &str = "apiVersion: careplane.dev/v1\n";

fn manifests(docs: &str) -> Manifests {
    let mut files = BTreeMap::new();
    files.insert("rules.yaml".to_owned(), docs.to_owned());
    load_from_memory(files, "clinic").unwrap_or_else(|e| panic!("{:?}", e.diagnostics))
}

fn team_and_rule() -> String {
    format!(
        "{HEADER}kind: Team\nmetadata: {{name: bhc}}\nspec: {{displayName: Behavioral Health Coordinators}}\n---\n\
{HEADER}kind: RoutingRule\nmetadata: {{name: psych}}\nspec:\n  order: 10\n  match:\n    description: \"Refer patient to Psychiatry (TBD)\"\n  set:\n    team: bhc\n    addLabels: [Internal Referral]\n"
    )
}

fn group(rule: &str) -> String {
    format!(
        "{HEADER}kind: PatientGroup\nmetadata: {{name: cm}}\nspec:\n  displayName: Care management\n  mode: authoritative\n  maxRemovalShare: 0.25\n  include: [p-in]\n  exclude: [p-out]\n  rule:\n{rule}"
    )
}

#[test]
fn routing_rules_become_data_with_ids_resolved_from_the_target() {
    let m = manifests(&team_and_rule());
    let resolved = Resolved {
        target: Some("canvas".into()),
        teams: [("bhc".to_owned(), "e3fabb40".to_owned())].into(),
        groups: BTreeMap::new(),
    };
    let p = build(&m, &resolved).unwrap();
    let r = &p.rules["routing"][0];
    assert_eq!(r["name"], "psych");
    assert_eq!(r["order"], 10);
    assert_eq!(
        r["match"],
        json!({"title": "Refer patient to Psychiatry (TBD)"})
    );
    assert_eq!(
        r["set"],
        json!({"team": {"name": "bhc", "displayName": "Behavioral Health Coordinators", "groupId": "e3fabb40"},
               "addLabels": ["Internal Referral"]})
    );
    assert_eq!(p.rules["target"], "canvas");
    assert!(p.unresolved.is_empty());
    // the file on disk is the same data
    let on_disk: Value = serde_json::from_str(&p.files[DATA_FILE]).unwrap();
    assert_eq!(on_disk, p.rules);
    // the handler is the fixed file, verbatim; only the RouteNewTask handler is declared
    assert_eq!(p.files[HANDLER_MODULE], HANDLER_PY);
    let manifest: Value = serde_json::from_str(&p.files["CANVAS_MANIFEST.json"]).unwrap();
    assert_eq!(manifest["name"], "careplane_clinic");
    assert_eq!(manifest["sdk_version"], SDK_VERSION);
    let classes: Vec<&str> = manifest["components"]["handlers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["class"].as_str().unwrap())
        .collect();
    assert_eq!(
        classes,
        ["careplane_clinic.handlers.careplane_rules:RouteNewTask"]
    );
}

#[test]
fn group_rules_carry_conditions_lists_mode_and_share_and_no_id_without_a_target() {
    let m = manifests(&group(
        "    not:\n      consent: {code: A0001, status: rejected}\n",
    ));
    let p = build(&m, &Resolved::default()).unwrap();
    let g = &p.rules["groups"][0];
    assert_eq!(
        g["rule"],
        json!({"not": {"consent": {"code": "A0001", "status": "rejected"}}})
    );
    assert_eq!(g["mode"], "authoritative");
    assert_eq!(g["maxRemovalShare"], 0.25);
    assert_eq!(g["include"], json!(["p-in"]));
    assert_eq!(g["exclude"], json!(["p-out"]));
    // no target: no id, so the handler leaves the group alone (and the build says so)
    assert_eq!(g["groupId"], Value::Null);
    assert_eq!(p.unresolved, ["patient group cm"]);
}

#[test]
fn conditions_the_plugin_cannot_evaluate_are_refused_at_their_position() {
    for (rule, pointer_line, what) in [
        ("    gender: female\n", 11, "gender"),
        (
            "    all:\n      - active: true\n      - consent: {code: A0001, status: draft}\n",
            13,
            "status draft",
        ),
        (
            "    careTeam: {practitioner: {npi: \"1234567893\"}}\n",
            11,
            "careTeam",
        ),
    ] {
        let m = manifests(&group(rule));
        let e = build(&m, &Resolved::default()).expect_err(what);
        assert_eq!(e.diagnostics.len(), 1, "{what}");
        let d = &e.diagnostics[0];
        assert_eq!(d.source.file, "rules.yaml", "{what}");
        assert_eq!(d.source.line, pointer_line, "{what}: {}", d.message);
        assert!(
            d.message.contains("cannot run inside Canvas"),
            "{what}: {}",
            d.message
        );
        assert!(d.message.contains("'cm'"), "{what}: {}", d.message);
    }
}

#[test]
fn routing_settings_the_plugin_cannot_honour_are_refused() {
    let enforce = team_and_rule() + "  routing: {mode: enforce}\n";
    let e = build(&manifests(&enforce), &Resolved::default()).unwrap_err();
    assert!(
        e.diagnostics[0].message.contains("mode enforce"),
        "{:?}",
        e.diagnostics
    );
    assert_eq!(e.diagnostics[0].source.line, 16, "at the routing mode");
    let regex = team_and_rule().replace(
        "description: \"Refer patient to Psychiatry (TBD)\"",
        "descriptionMatches: \"^Refer (?i)patient\"",
    );
    let e = build(&manifests(&regex), &Resolved::default()).unwrap_err();
    assert!(
        e.diagnostics[0].message.contains("inline flags"),
        "{:?}",
        e.diagnostics
    );
    let email = team_and_rule().replace("    team: bhc\n", "    owner: {email: a@example.org}\n");
    let e = build(&manifests(&email), &Resolved::default()).unwrap_err();
    assert!(
        e.diagnostics[0].message.contains("email"),
        "{:?}",
        e.diagnostics
    );
}

#[test]
fn a_project_without_rules_builds_nothing() {
    let m = manifests(&format!(
        "{HEADER}kind: Team\nmetadata: {{name: bhc}}\nspec: {{}}\n"
    ));
    let e = build(&m, &Resolved::default()).unwrap_err();
    assert!(e.diagnostics[0].message.contains("nothing to build"));
}

#[test]
fn the_data_file_survives_the_sdk_template_reader() {
    let v = json!({"a": {"b": "{{ x }} {% y %} {# z #} 100% \"q\" \\{"}});
    let text = template_safe_json(&v);
    for bad in ["{{", "{%", "{#"] {
        assert!(!text.contains(bad), "{text}");
    }
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), v);
}

#[test]
fn the_content_hash_follows_the_rules() {
    let a = build(&manifests(&team_and_rule()), &Resolved::default()).unwrap();
    let b = build(
        &manifests(&team_and_rule().replace("Internal Referral", "Psychiatry")),
        &Resolved::default(),
    )
    .unwrap();
    let again = build(&manifests(&team_and_rule()), &Resolved::default()).unwrap();
    assert_eq!(a.hash, again.hash);
    assert_ne!(a.hash, b.hash);
    assert_ne!(
        a.files["CANVAS_MANIFEST.json"],
        b.files["CANVAS_MANIFEST.json"]
    );
}

#[test]
fn the_rule_level_diff_names_rules_and_fields_never_patient_ids() {
    let base = team_and_rule() + "---\n" + &group("    active: true\n");
    let old = build(&manifests(&base), &Resolved::default())
        .unwrap()
        .rules;
    let changed = base
        .replace("Internal Referral", "Psychiatry")
        .replace("include: [p-in]", "include: [p-in, p-secret]")
        .replace("name: psych}", "name: psych2}");
    let new = build(&manifests(&changed), &Resolved::default())
        .unwrap()
        .rules;
    let diff: Vec<String> = rule_diff(&old, &new)
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(
        diff,
        [
            "+ routing rule psych2",
            "- routing rule psych",
            "~ patient group cm: include",
        ]
    );
    let labels_only = base.replace("Internal Referral", "Psychiatry");
    let new = build(&manifests(&labels_only), &Resolved::default())
        .unwrap()
        .rules;
    let diff: Vec<String> = rule_diff(&old, &new)
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(diff, ["~ routing rule psych: set.addLabels"]);
    assert!(rule_diff(&old, &old).is_empty());
}

#[test]
fn the_plan_decides_create_update_no_op_and_diffs_rules_against_the_record() {
    use crate::manifest::types::EffectsBy;
    use crate::plan::Action;
    use crate::reconcile::plugin::{Input, change};
    use live::Installed;
    let p = build(&manifests(&team_and_rule()), &Resolved::default()).unwrap();
    let v = p.rules_version().unwrap().to_owned();
    let live = |version: &str, enabled| Installed {
        name: p.name.clone(),
        version: Some(version.into()),
        enabled,
    };
    let input = |installed: Vec<Installed>, applied: Option<Applied>| Input {
        effects: EffectsBy::Plugin,
        package: Some(p.clone()),
        name: Some(p.name.clone()),
        installed: Some(installed),
        applied,
        record_at: Some(".careplane/plugins/canvas.json".into()),
        unreadable: None,
    };
    let fields = |c: &crate::plan::Change| -> Vec<(String, String)> {
        c.fields
            .iter()
            .map(|f| {
                (
                    f.field.clone(),
                    f.after.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                )
            })
            .collect()
    };
    // not installed (or another plugin's name only): create, every rule added
    let other = Installed {
        name: "someone_else".into(),
        version: Some(v.clone()),
        enabled: true,
    };
    let (c, w) = change(&input(vec![other], None), &[]);
    let c = c.unwrap();
    assert!(w.is_empty());
    assert_eq!(c.action, Action::Create);
    assert!(c.precondition.absent);
    assert!(fields(&c).contains(&("routing rule 'psych'".into(), "\"added\"".into())));
    // the rules ride sealed: never in a plan file
    let rules = c.fields.iter().find(|f| f.field == "rules").unwrap();
    assert_eq!(rules.sealed.as_ref().unwrap().1.as_ref(), Some(&p.rules));
    assert!(
        !serde_json::to_string(&c)
            .unwrap()
            .contains("Internal Referral")
    );
    // installed as built and enabled: no-op
    let (c, _) = change(&input(vec![live(&v, true)], None), &[]);
    assert_eq!(c.unwrap().action, Action::NoOp);
    // disabled: an update of `enabled` only
    let (c, _) = change(&input(vec![live(&v, false)], None), &[]);
    let c = c.unwrap();
    assert_eq!(c.action, Action::Update);
    assert_eq!(
        fields(&c).iter().map(|f| f.0.as_str()).collect::<Vec<_>>(),
        ["enabled", "rules"]
    );
    // another version careplane recorded: the rule diff is against that record
    let old = build(
        &manifests(&team_and_rule().replace("Internal Referral", "Psychiatry")),
        &Resolved::default(),
    )
    .unwrap();
    let record = Applied {
        plugin: p.name.clone(),
        version: "1.0.0+old".into(),
        rules: fingerprint(&old.rules),
    };
    let (c, _) = change(
        &input(vec![live("1.0.0+old", true)], Some(record.clone())),
        &[],
    );
    let c = c.unwrap();
    assert_eq!(c.precondition.version_id.as_deref(), Some("1.0.0+old"));
    assert!(fields(&c).contains(&(
        "routing rule 'psych'".into(),
        "\"changed: set.addLabels\"".into()
    )));
    assert!(c.notes[0].contains("installed as version 1.0.0+old"));
    // a version careplane did not record: the diff is unknown, and the plan says so
    let (c, _) = change(
        &input(vec![live("1.0.0+elsewhere", true)], Some(record)),
        &[],
    );
    let c = c.unwrap();
    assert!(!fields(&c).iter().any(|f| f.0.contains(" '")));
    assert!(c.notes[0].contains("not installed by careplane from here"));
    // effects: watch, and the plugin still enabled: no change, a warning
    let watch = Input {
        effects: EffectsBy::Watch,
        package: None,
        ..input(vec![live(&v, true)], None)
    };
    let (c, w) = change(&watch, &[]);
    assert!(c.is_none());
    assert!(w[0].contains("both would maintain"));
    let (_, w) = change(
        &Input {
            installed: Some(vec![live(&v, false)]),
            ..watch.clone()
        },
        &[],
    );
    assert!(w.is_empty());
    // effects: plugin, and every rule gone from the manifests: the plugin is left running
    let gone = Input {
        effects: EffectsBy::Plugin,
        ..watch
    };
    let (c, w) = change(&gone, &[]);
    assert!(c.is_none());
    assert!(w[0].contains("declares no routing or patient-group rule any more"));
    // the plugin API could not be read where it only serves a warning: the plan says so
    let (c, w) = change(
        &Input {
            installed: None,
            unreadable: Some("the plugin API at x answered HTTP 403".into()),
            ..gone
        },
        &[],
    );
    assert!(c.is_none());
    assert_eq!(w.len(), 1);
    assert!(w[0].contains("could not be read (the plugin API at x answered HTTP 403)"));
}

#[test]
fn fingerprints_diff_like_the_data_and_hold_none_of_it() {
    let a = build(&manifests(&team_and_rule()), &Resolved::default()).unwrap();
    let b = build(
        &manifests(&team_and_rule().replace("Internal Referral", "Psychiatry")),
        &Resolved::default(),
    )
    .unwrap();
    assert_eq!(
        rule_diff(&fingerprint(&a.rules), &fingerprint(&b.rules)),
        rule_diff(&a.rules, &b.rules)
    );
    let f = fingerprint(&a.rules).to_string();
    assert!(!f.contains("Internal Referral") && !f.contains("Psychiatry (TBD)"));
}

#[test]
fn only_targets_whose_table_has_the_plugin_kind_get_it() {
    use crate::dialect::Dialect;
    use crate::vocab::ObjectKind;
    let canvas = crate::dialect::canvas::Canvas::default();
    let r4 = crate::dialect::r4::R4::default();
    assert!(canvas.capabilities().of(ObjectKind::Plugin).is_some());
    assert!(r4.capabilities().of(ObjectKind::Plugin).is_none());
    use crate::manifest::types::EffectsBy;
    assert_eq!(EffectsBy::on(None, true), EffectsBy::Plugin);
    assert_eq!(EffectsBy::on(None, false), EffectsBy::Watch);
    assert_eq!(
        EffectsBy::on(Some(EffectsBy::Plugin), false),
        EffectsBy::Watch
    );
    assert_eq!(
        EffectsBy::on(Some(EffectsBy::Watch), true),
        EffectsBy::Watch
    );
}
