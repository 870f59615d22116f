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
fn compare_names_missing_changed_and_disabled() {
    use live::{Installed, PluginDrift, compare};
    let p = build(&manifests(&team_and_rule()), &Resolved::default()).unwrap();
    let v = p.rules_version().map(str::to_owned);
    let live = |version: Option<String>, enabled| Installed {
        name: p.name.clone(),
        version,
        enabled,
    };
    assert_eq!(compare(&p, &[]), [PluginDrift::Missing]);
    assert!(compare(&p, &[live(v.clone(), true)]).is_empty());
    assert_eq!(
        compare(&p, &[live(v.clone(), false)]),
        [PluginDrift::Disabled]
    );
    assert_eq!(
        compare(&p, &[live(Some("1.0.0+old".into()), false)]),
        [
            PluginDrift::Changed {
                installed: Some("1.0.0+old".into())
            },
            PluginDrift::Disabled
        ]
    );
    // another plugin of another name is not ours
    let other = Installed {
        name: "someone_else".into(),
        version: v,
        enabled: true,
    };
    assert_eq!(compare(&p, &[other]), [PluginDrift::Missing]);
}
