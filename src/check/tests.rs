use super::*;
use crate::model::{
    CareTeamAssignment, CareTeamRole, Located, Role, RoleAssignment, RoleDomain, RoleType, Team,
};

fn src(line: u64) -> Source {
    Source {
        file: "m.yaml".into(),
        line,
        col: 1,
    }
}

fn npi(v: &str) -> Located<PractitionerRef> {
    Located {
        value: PractitionerRef::Npi(v.into()),
        source: src(90),
    }
}

fn team(name: &str, line: u64, resp: &[Responsibility], members: &[&str]) -> Team {
    Team {
        name: name.into(),
        display_name: name.into(),
        responsibilities: resp
            .iter()
            .map(|r| Located {
                value: *r,
                source: src(line),
            })
            .collect(),
        members: members.iter().map(|m| npi(m)).collect(),
        source: src(line),
    }
}

fn rule(name: &str, order: i64, line: u64) -> RoutingRule {
    RoutingRule {
        name: name.into(),
        order,
        description: None,
        description_matches: None,
        label: None,
        patient_group: None,
        team: Some("t".into()),
        owner: None,
        add_labels: vec![],
        mode: Default::default(),
        max_deviation: Default::default(),
        source: src(line),
    }
}

fn cta(
    name: &str,
    who: &str,
    role: &str,
    group: &str,
    lead: bool,
    line: u64,
) -> CareTeamAssignment {
    CareTeamAssignment {
        name: name.into(),
        practitioner: Located {
            value: PractitionerRef::Npi(who.into()),
            source: src(line),
        },
        role: role.into(),
        group: Some(group.into()),
        rule: None,
        lead,
        authoritative: false,
        max_removal_share: 0.5,
        max_deviation: Default::default(),
        source: src(line),
    }
}

fn ids(d: &DesiredState) -> Vec<&'static str> {
    run(d).iter().map(|f| f.id).collect()
}

fn all_owned() -> Team {
    team("all", 1, &RESPONSIBILITIES, &["1"])
}

#[test]
fn a_clean_model_has_no_findings() {
    let d = DesiredState {
        teams: vec![all_owned()],
        ..Default::default()
    };
    assert_eq!(run(&d), vec![]);
    // no team declared: teams are not managed, nothing to say
    assert_eq!(run(&DesiredState::default()), vec![]);
}

#[test]
fn cp101_lists_the_tasks_that_go_nowhere() {
    let d = DesiredState {
        teams: vec![team(
            "results",
            3,
            &[Responsibility::CommunicateDiagnosticResultsToPatient],
            &["1"],
        )],
        ..Default::default()
    };
    let f = run(&d);
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].id, f[0].slug), ("CP101", "responsibility-unowned"));
    assert_eq!(f[0].severity, Severity::Warning);
    assert_eq!(f[0].source, src(3));
    assert!(
        f[0].message
            .starts_with("10 of the 11 responsibilities are on no team")
    );
    assert!(
        f[0].message
            .contains("PROCESS_REFILL_REQUESTS (refill-request notifications)")
    );
    assert!(
        f[0].message
            .contains("REVIEW_COVERAGES (the task to finish documenting a coverage)")
    );
    assert!(
        !f[0]
            .message
            .contains("COMMUNICATE_DIAGNOSTIC_RESULTS_TO_PATIENT")
    );
    assert!(
        f[0].message
            .contains("no Canvas logic yet: COLLECT_SPECIMENS_FROM_PATIENT")
    );
}

#[test]
fn cp102_empty_team() {
    let d = DesiredState {
        teams: vec![all_owned(), team("night", 9, &[], &[])],
        ..Default::default()
    };
    let f = run(&d);
    assert_eq!(ids(&d), vec!["CP102"]);
    assert_eq!(f[0].source, src(9));
    assert_eq!(f[0].message, "team 'night' has no members");
}

#[test]
fn cp103_unused_care_team_role() {
    let ctr = |n: &str, line| CareTeamRole {
        name: n.into(),
        system: "s".into(),
        code: n.into(),
        display: n.into(),
        source: src(line),
    };
    let d = DesiredState {
        teams: vec![all_owned()],
        care_team_roles: vec![ctr("pcp", 4), ctr("nurse", 8)],
        care_team_assignments: vec![cta("a", "1", "pcp", "g", false, 20)],
        ..Default::default()
    };
    let f = run(&d);
    assert_eq!(ids(&d), vec!["CP103"]);
    assert_eq!(f[0].source, src(8));
    assert_eq!(f[0].severity, Severity::Info);
    assert!(f[0].message.contains("'nurse'"));
}

#[test]
fn cp104_same_title_shadows_a_later_rule() {
    let mut a = rule("refills", 10, 5);
    a.description = Some("Refill request".into());
    let mut b = rule("refills-vip", 20, 12);
    b.description = Some("Refill request".into());
    b.label = Some("vip".into());
    let d = DesiredState {
        teams: vec![all_owned()],
        routing_rules: vec![a.clone(), b.clone()],
        ..Default::default()
    };
    let f = run(&d);
    assert_eq!(ids(&d), vec!["CP104"]);
    assert_eq!(f[0].severity, Severity::Error);
    assert_eq!(f[0].source, src(12));
    assert!(f[0].message.contains(
        "'refills-vip' (order 20) never routes a task: rule 'refills' (order 10, m.yaml:5:1)"
    ));
    // the narrower rule first: both can route
    let d = DesiredState {
        teams: vec![all_owned()],
        routing_rules: vec![b, a],
        ..Default::default()
    };
    assert_eq!(ids(&d), Vec::<&str>::new());
}

#[test]
fn cp104_other_titles_labels_groups_do_not_shadow() {
    let mut a = rule("a", 1, 5);
    a.description = Some("X".into());
    let mut b = rule("b", 2, 6);
    b.description = Some("Y".into());
    assert!(!shadows(&a, &b));
    let mut a = rule("a", 1, 5);
    a.label = Some("l1".into());
    let mut b = rule("b", 2, 6);
    b.label = Some("l2".into());
    assert!(!shadows(&a, &b));
    let mut a = rule("a", 1, 5);
    a.patient_group = Some("g".into());
    let b = rule("b", 2, 6);
    assert!(!shadows(&a, &b));
    // a regex that matches the later rule's exact title does shadow it
    let mut a = rule("a", 1, 5);
    a.description_matches = Some("^Refill".into());
    let mut b = rule("b", 2, 6);
    b.description = Some("Refill request".into());
    assert!(shadows(&a, &b));
    b.description = Some("Lab order".into());
    assert!(!shadows(&a, &b));
}

#[test]
fn cp105_two_leads_for_one_group() {
    let d = DesiredState {
        teams: vec![all_owned()],
        care_team_assignments: vec![
            cta("a", "1", "pcp", "diabetes", true, 10),
            cta("b", "2", "pcp", "diabetes", true, 20),
            cta("c", "3", "pcp", "asthma", true, 30),
            cta("d", "4", "pcp", "asthma", false, 40),
        ],
        ..Default::default()
    };
    let f: Vec<Finding> = run(&d).into_iter().filter(|f| f.id == "CP105").collect();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].source, src(20));
    assert!(f[0].message.contains("'a' (m.yaml:10:1) and 'b' both"));
    assert!(f[0].message.contains("patient group 'diabetes'"));
}

#[test]
fn cp106_administrative_staff_on_care_teams() {
    let role = |n: &str, domain| Role {
        name: n.into(),
        code: n.into(),
        display: n.into(),
        abbreviation: None,
        domain,
        privilege_level: None,
        role_type: Some(RoleType::NonLicensed),
        auth_groups: vec![],
        source: src(2),
    };
    let ra = |who: &str, roles: &[&str]| RoleAssignment {
        name: who.into(),
        practitioner: npi(who),
        roles: roles
            .iter()
            .map(|r| Located {
                value: r.to_string(),
                source: src(3),
            })
            .collect(),
        source: src(3),
    };
    let d = DesiredState {
        teams: vec![all_owned()],
        roles: vec![
            role("front-desk", RoleDomain::Administrative),
            role("rn", RoleDomain::Clinical),
        ],
        assignments: vec![ra("1", &["front-desk"]), ra("2", &["front-desk", "rn"])],
        care_team_assignments: vec![
            cta("desk", "1", "pcp", "g", false, 10),
            cta("nurse", "2", "pcp", "g", false, 20),
            cta("unknown", "3", "pcp", "g", false, 30),
        ],
        ..Default::default()
    };
    let f: Vec<Finding> = run(&d).into_iter().filter(|f| f.id == "CP106").collect();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].source, src(10));
    assert!(f[0].message.contains("npi 1"));
    assert!(
        f[0].message.contains(
            "none of their declared roles (front-desk) is a clinical or hybrid role (careplane's shipped care model: administrative staff cannot join patient care teams)"
        ),
        "{}",
        f[0].message
    );
}

#[test]
fn skipping_by_id_or_slug() {
    let d = DesiredState {
        teams: vec![all_owned(), team("night", 9, &[], &[])],
        ..Default::default()
    };
    assert!(without(run(&d), &["cp102".into()]).is_empty());
    assert!(without(run(&d), &["team-empty".into()]).is_empty());
    assert!(is_check("CP104") && is_check("routing-rule-shadowed") && !is_check("CP999"));
}

fn role(n: &str, code: &str, domain: RoleDomain, line: u64) -> Role {
    Role {
        name: n.into(),
        code: code.into(),
        display: n.into(),
        abbreviation: None,
        domain,
        privilege_level: None,
        role_type: Some(RoleType::NonLicensed),
        auth_groups: vec![],
        source: src(line),
    }
}

fn ra(who: &str, roles: &[&str]) -> RoleAssignment {
    RoleAssignment {
        name: who.into(),
        practitioner: npi(who),
        roles: roles
            .iter()
            .map(|r| Located {
                value: r.to_string(),
                source: src(3),
            })
            .collect(),
        source: src(3),
    }
}

/// Front-desk staff (npi 7) on the results team; a nurse (npi 8) on it is fine.
fn front_desk_on_results() -> DesiredState {
    let mut results = team(
        "results",
        40,
        &[Responsibility::CommunicateDiagnosticResultsToPatient],
        &["8"],
    );
    results.members.push(Located {
        value: PractitionerRef::Npi("7".into()),
        source: src(44),
    });
    let mut rest = all_owned();
    rest.responsibilities
        .retain(|r| r.value != Responsibility::CommunicateDiagnosticResultsToPatient);
    DesiredState {
        teams: vec![rest, results],
        roles: vec![
            role("front-desk", "FD", RoleDomain::Administrative, 2),
            role("rn", "RN", RoleDomain::Clinical, 5),
        ],
        assignments: vec![ra("7", &["front-desk"]), ra("8", &["rn"])],
        ..Default::default()
    }
}

#[test]
fn cp108_front_desk_on_the_results_team() {
    let d = front_desk_on_results();
    let f = run(&d);
    assert_eq!(ids(&d), vec!["CP108"]);
    assert_eq!(f[0].source, src(44));
    assert_eq!(f[0].severity, Severity::Warning);
    assert_eq!(
        f[0].message,
        "npi 7 is on team 'results', which holds COMMUNICATE_DIAGNOSTIC_RESULTS_TO_PATIENT, and none of their roles (front-desk) is a clinical or hybrid role (careplane's shipped care model: results are clinical information, so the staff who communicate them hold a clinical or hybrid role)"
    );
}

#[test]
fn a_care_model_changes_the_fit_rules() {
    use care_model::{CareModelSpec, FitRule};
    let d = front_desk_on_results();
    // the clinic lets administrative staff communicate results
    let spec = CareModelSpec {
        replace_defaults: false,
        responsibilities: vec![FitRule {
            pattern: "COMMUNICATE_*".into(),
            domains: vec![],
            types: vec![],
            reason: None,
        }],
        care_team_roles: vec![],
    };
    let inputs = Inputs {
        care_model: CareModel::from_spec(&spec, src(70)),
        labels: None,
    };
    assert!(run_with(&d, &inputs).is_empty());
    // replacing the defaults with a stricter rule: licensed staff only
    let spec = CareModelSpec {
        replace_defaults: true,
        responsibilities: vec![FitRule {
            pattern: "COMMUNICATE_DIAGNOSTIC_RESULTS_TO_PATIENT".into(),
            domains: vec![],
            types: vec![RoleType::Licensed, RoleType::Provider],
            reason: None,
        }],
        care_team_roles: vec![],
    };
    let inputs = Inputs {
        care_model: CareModel::from_spec(&spec, src(70)),
        labels: None,
    };
    let f = run_with(&d, &inputs);
    assert_eq!(
        f.iter().map(|f| f.id).collect::<Vec<_>>(),
        ["CP108", "CP108"]
    );
    assert!(
        f[0].message
            .ends_with("is a role of type licensed or provider (the CareModel at m.yaml:70:1)"),
        "{}",
        f[0].message
    );
}

#[test]
fn glob_patterns() {
    use care_model::glob;
    assert!(glob("REVIEW_*_RESULTS", "REVIEW_LAB_RESULTS"));
    assert!(glob("REVIEW_*", "REVIEW_COVERAGES"));
    assert!(glob("*", "anything"));
    assert!(glob("PROCESS_*_REQUESTS", "PROCESS_REFILL_REQUESTS"));
    assert!(!glob("REVIEW_*_RESULTS", "REVIEW_COVERAGES"));
    assert!(!glob("A*A", "A"));
    assert!(glob("EXACT", "EXACT") && !glob("EXACT", "EXACTLY"));
}

#[test]
fn cp107_labels_outside_the_catalog() {
    let mut r = rule("psych", 10, 30);
    r.add_labels = vec!["Intrenal Referral".into(), "Urgent".into()];
    r.label = Some("urgent".into());
    let d = DesiredState {
        teams: vec![all_owned()],
        routing_rules: vec![r],
        ..Default::default()
    };
    // no catalog declared: labels are not checked
    assert!(run(&d).is_empty());
    let inputs = Inputs {
        labels: Some(LabelCatalog {
            labels: vec!["Urgent".into(), "Internal Referral".into()],
            source: src(1),
        }),
        ..Default::default()
    };
    let f = run_with(&d, &inputs);
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!(f[0].id, "CP107");
    assert_eq!(f[0].source, src(30));
    assert_eq!(
        f[0].message,
        "routing rule 'psych' matches label 'urgent', which is not in the label catalog"
    );
    assert!(f[0].help.starts_with("did you mean 'Urgent'?"));
    assert_eq!(
        f[1].message,
        "routing rule 'psych' adds label 'Intrenal Referral', which is not in the label catalog"
    );
    assert!(
        f[1].help.starts_with("did you mean 'Internal Referral'?"),
        "{}",
        f[1].help
    );
}

fn files(text: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("m.yaml".to_owned(), text.to_owned())])
}

fn empty_night() -> DesiredState {
    DesiredState {
        teams: vec![all_owned(), team("night", 3, &[], &[])],
        ..Default::default()
    }
}

#[test]
fn project_levels_change_severity_or_turn_checks_off() {
    let d = empty_night();
    let none: BTreeMap<String, String> = BTreeMap::new();
    let f = configured(run(&d), &BTreeMap::new(), &none);
    assert_eq!(f[0].severity, Severity::Warning);
    let up = BTreeMap::from([("CP102".to_owned(), config::Level::Error)]);
    assert_eq!(configured(run(&d), &up, &none)[0].severity, Severity::Error);
    let off = BTreeMap::from([("team-empty".to_owned(), config::Level::Off)]);
    assert!(configured(run(&d), &off, &none).is_empty());
}

#[test]
fn unknown_check_keys_say_what_was_meant() {
    assert_eq!(config::unknown_key("CP102"), None);
    assert_eq!(config::unknown_key("team-empty"), None);
    let (message, help) = config::unknown_key("CP1O2").unwrap();
    assert_eq!(message, "'CP1O2' in `checks` is not a check");
    assert!(help.starts_with("did you mean 'CP102'?"), "{help}");
    let (_, help) = config::unknown_key("team-emtpy").unwrap();
    assert!(help.starts_with("did you mean 'team-empty'?"), "{help}");
}

#[test]
fn a_marker_with_a_reason_suppresses_the_finding_on_its_line_or_the_next() {
    let d = empty_night();
    let none = BTreeMap::new();
    // just above the line the finding points at (line 3)
    let above =
        "a\n  # careplane:ignore CP102 reason: night team fills up in January\n  name: night\n";
    assert!(configured(run(&d), &none, &files(above)).is_empty());
    // on it, by name
    let on = "a\nb\n  name: night # careplane:ignore team-empty reason: seasonal\n";
    assert!(configured(run(&d), &none, &files(on)).is_empty());
    // after a `#` in a quoted value
    let quoted = "a\nb\n  name: \"night #2\" # careplane:ignore CP102 reason: seasonal\n";
    assert!(configured(run(&d), &none, &files(quoted)).is_empty());
    // two lines above: too far
    let far = "# careplane:ignore CP102 reason: x\nb\n  name: night\n";
    assert_eq!(ids_of(&configured(run(&d), &none, &files(far))), ["CP102"]);
    // another check named: not suppressed
    let other = "a\n# careplane:ignore CP104 reason: x\n  name: night\n";
    assert_eq!(
        ids_of(&configured(run(&d), &none, &files(other))),
        ["CP102"]
    );
}

fn ids_of(f: &[Finding]) -> Vec<&'static str> {
    f.iter().map(|f| f.id).collect()
}

#[test]
fn a_marker_without_a_reason_is_a_finding_and_suppresses_nothing() {
    let d = empty_night();
    let none = BTreeMap::new();
    let bare = "a\n  # careplane:ignore CP102\n  name: night\n";
    let f = configured(run(&d), &none, &files(bare));
    assert_eq!(ids_of(&f), ["CP109", "CP102"]);
    assert_eq!(
        f[0].source,
        Source {
            file: "m.yaml".into(),
            line: 2,
            col: 3
        }
    );
    assert_eq!(
        f[0].message,
        "`careplane:ignore CP102` gives no reason, so it suppresses nothing"
    );
    let typo = "a\n# careplane:ignore CP1002 reason: x\n  name: night\n";
    let f = configured(run(&d), &none, &files(typo));
    assert_eq!(ids_of(&f), ["CP109", "CP102"]);
    assert!(
        f[0].message
            .contains("names 'CP1002', which is not a check")
    );
    assert!(
        f[0].help.starts_with("did you mean 'CP102'?"),
        "{}",
        f[0].help
    );
}

mod live_checks {
    use std::collections::{BTreeMap, BTreeSet};

    use serde_json::json;

    use super::*;
    use crate::check::live::{self, Snapshot};
    use crate::vocab::StaffIndex;

    fn practitioner(id: &str, npi: &str) -> serde_json::Value {
        json!({"resourceType": "Practitioner", "id": id,
               "identifier": [{"system": StaffIndex::NPI_SYSTEM, "value": npi}]})
    }

    /// Staff p1..p4 with npi 1..4.
    fn snapshot() -> Snapshot {
        Snapshot {
            staff: StaffIndex::from_practitioners(&[
                practitioner("p1", "1"),
                practitioner("p2", "2"),
                practitioner("p3", "3"),
                practitioner("p4", "4"),
            ]),
            ..Default::default()
        }
    }

    fn live_ids(d: &DesiredState, s: &Snapshot) -> Vec<&'static str> {
        live::run(d, &CareModel::default(), s)
            .iter()
            .map(|f| f.id)
            .collect()
    }

    #[test]
    fn a_live_target_that_matches_has_no_findings() {
        let d = DesiredState {
            teams: vec![team("all", 1, &RESPONSIBILITIES, &["1", "2"])],
            ..Default::default()
        };
        assert!(live::run(&d, &CareModel::default(), &snapshot()).is_empty());
    }

    #[test]
    fn cp201_inactive_staff_on_a_team_a_rule_and_care_teams() {
        let mut r = rule("to-2", 1, 20);
        r.owner = Some(Located {
            value: PractitionerRef::Npi("2".into()),
            source: src(22),
        });
        let d = DesiredState {
            teams: vec![team("all", 1, &RESPONSIBILITIES, &["1", "3"])],
            routing_rules: vec![r],
            care_team_assignments: vec![cta("pcp-2", "2", "pcp", "g", false, 30)],
            ..Default::default()
        };
        let mut s = snapshot();
        s.inactive = BTreeSet::from(["p2".to_owned()]);
        let f = live::run(&d, &CareModel::default(), &s);
        assert_eq!(ids_of(&f), ["CP201", "CP201"]);
        assert_eq!(f[0].source, src(22));
        assert_eq!(
            f[0].message,
            "npi 2 is the owner routing rule 'to-2' gives tasks, and is inactive on the target, so the work sent to them waits for nobody"
        );
        assert_eq!(f[1].source, src(30));
        s.inactive = BTreeSet::from(["p3".to_owned()]);
        let f = live::run(&d, &CareModel::default(), &s);
        assert_eq!(ids_of(&f), ["CP201"]);
        assert!(f[0].message.starts_with("npi 3 is a member of team 'all'"));
    }

    #[test]
    fn cp202_non_schedulable_staff_only_where_the_target_says() {
        let d = DesiredState {
            teams: vec![team("all", 1, &RESPONSIBILITIES, &["1", "3"])],
            ..Default::default()
        };
        let mut s = snapshot();
        assert!(live_ids(&d, &s).is_empty());
        s.non_schedulable = Some(BTreeSet::from(["p3".to_owned()]));
        assert_eq!(live_ids(&d, &s), ["CP202"]);
        // inactive says more: no second finding
        s.inactive = BTreeSet::from(["p3".to_owned()]);
        assert_eq!(live_ids(&d, &s), ["CP201"]);
    }

    #[test]
    fn cp203_live_roles_of_undeclared_members() {
        let mut d = front_desk_on_results();
        // npi 7 has no RoleAssignment now: only the target knows their roles
        d.assignments.retain(|a| a.name != "7");
        let mut s = Snapshot {
            staff: StaffIndex::from_practitioners(&[
                practitioner("p7", "7"),
                practitioner("p8", "8"),
                practitioner("p1", "1"),
            ]),
            ..Default::default()
        };
        assert!(!live_ids(&d, &s).contains(&"CP203"));
        s.roles = Some(BTreeMap::from([
            ("Practitioner/p7".to_owned(), vec!["FD".to_owned()]),
            ("Practitioner/p8".to_owned(), vec!["RN".to_owned()]),
        ]));
        let f: Vec<Finding> = live::run(&d, &CareModel::default(), &s)
            .into_iter()
            .filter(|f| f.id == "CP203")
            .collect();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].source, src(44));
        assert!(f[0].message.starts_with("npi 7 is on team 'results'"));
        assert!(f[0].message.ends_with("(roles on the target)"));
    }

    #[test]
    fn cp204_a_lead_changed_by_hand_is_counted() {
        let d = DesiredState {
            care_team_roles: vec![CareTeamRole {
                name: "pcp".into(),
                system: "s".into(),
                code: "c".into(),
                display: "PCP".into(),
                source: src(2),
            }],
            care_team_assignments: vec![cta("pcp-1", "1", "pcp", "g", true, 30)],
            ..Default::default()
        };
        let me = |lead| ("Practitioner/p1".to_owned(), "s|c".to_owned(), lead);
        let other = |lead| ("Practitioner/p2".to_owned(), "x|y".to_owned(), lead);
        let mut s = snapshot();
        s.care_teams = vec![vec![me(true), other(false)]];
        assert!(live_ids(&d, &s).is_empty());
        s.care_teams = vec![
            vec![me(true), other(false)],
            vec![me(false), other(true)],
            vec![me(false), other(true)],
            vec![me(false)],
            vec![other(true)],
        ];
        let f = live::run(&d, &CareModel::default(), &s);
        assert_eq!(ids_of(&f), ["CP204"]);
        assert_eq!(f[0].source, src(30));
        assert_eq!(
            f[0].message,
            "care-team assignment 'pcp-1' makes npi 1 the lead, and of the care teams where they are 'pcp', someone else is the lead on 2 and nobody is on 1 (changed outside careplane)"
        );
        // an assignment that is not the lead says nothing about leads
        let mut d = d;
        d.care_team_assignments[0].lead = false;
        assert!(live_ids(&d, &s).is_empty());
    }

    #[test]
    fn cp205_cp206_roles_on_the_target_against_the_declared_ones() {
        let d = DesiredState {
            roles: vec![
                role("rn", "RN", RoleDomain::Clinical, 5),
                role("md", "MD", RoleDomain::Clinical, 9),
            ],
            ..Default::default()
        };
        let mut s = snapshot();
        // the target keeps no roles on staff: nothing to compare
        assert!(live_ids(&d, &s).is_empty());
        s.roles = Some(BTreeMap::from([
            (
                "Practitioner/p1".to_owned(),
                vec!["RN".to_owned(), "MA".to_owned()],
            ),
            ("Practitioner/p2".to_owned(), vec!["MA".to_owned()]),
        ]));
        let f = live::run(&d, &CareModel::default(), &s);
        assert_eq!(ids_of(&f), ["CP205", "CP206"]);
        assert_eq!(f[0].source, src(5));
        assert_eq!(
            f[0].message,
            "role code MA is held by 2 staff member(s) on the target, and no Role declares it, so the care-model checks cannot tell what it may do"
        );
        assert_eq!(f[1].source, src(9));
        assert_eq!(f[1].severity, Severity::Info);
        assert_eq!(
            f[1].message,
            "role 'md' (code MD) is declared, and nobody on the target holds it"
        );
    }

    #[test]
    fn cp207_routing_owners_that_do_not_resolve() {
        let owned = |name: &str, who: PractitionerRef, line| {
            let mut r = rule(name, line as i64, line);
            r.owner = Some(Located {
                value: who,
                source: src(line + 1),
            });
            r
        };
        let d = DesiredState {
            routing_rules: vec![
                owned("ok", PractitionerRef::Npi("1".into()), 10),
                owned("typo", PractitionerRef::Npi("9".into()), 20),
            ],
            ..Default::default()
        };
        let f = live::run(&d, &CareModel::default(), &snapshot());
        assert_eq!(ids_of(&f), ["CP207"]);
        assert_eq!(f[0].severity, Severity::Error);
        assert_eq!(f[0].source, src(21));
        assert!(
            f[0].message
                .starts_with("routing rule 'typo' gives tasks to owner npi 9, and no staff member on the target has it")
        );
    }
}
