use super::*;
use crate::model::{
    CareTeamAssignment, CareTeamRole, Located, Role, RoleAssignment, RoleType, Team,
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
    assert!(f[0].message.contains("(front-desk) are all administrative"));
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
