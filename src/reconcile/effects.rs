//! The effects of rules at `apply --plan`: the guard that decides, per rule, whether the
//! effects recomputed from live data may be applied or are held back. Pure: previews and
//! changes in, decisions out.
//!
//! A saved plan previews each rule's effects as counts ([`EffectPreview`]). After the
//! configuration is applied, ops recomputes the effects and calls [`guard`]: a rule whose
//! fresh counts differ from the reviewed ones by more than its `maxDeviation`
//! (`max(share × reviewed, atLeast)`, adds, removes and care-team lead handovers each) is
//! held back, and so is a rule whose fresh changes would remove more than its
//! `maxRemovalShare` (the blast-radius guard; a lead handover removes nobody). The other
//! rules' effects are applied.

use crate::plan::{Change, EffectCheck, EffectDecision, EffectPreview};
use crate::vocab::ObjectKind;

/// The rule an effect change belongs to: a routing rule for a routed task, else the
/// patient group or care-team assignment it changes.
pub fn rule_of(c: &Change) -> (ObjectKind, &str) {
    match &c.operation {
        crate::vocab::Operation::RouteTask { rule, .. }
        | crate::vocab::Operation::RouteTasks { rule, .. } => (ObjectKind::TaskRouting, rule),
        _ => (c.target.kind, &c.target.name),
    }
}

/// The rules among `changes` that would remove more than their `maxRemovalShare` (none
/// with `allow_mass_removal`).
pub fn over_removal_limit(
    changes: &[Change],
    allow_mass_removal: bool,
) -> Vec<(ObjectKind, String)> {
    if allow_mass_removal {
        return Vec::new();
    }
    let mut out: Vec<(ObjectKind, String)> = Vec::new();
    for c in changes
        .iter()
        .filter(|c| c.action.is_change() && c.action != crate::plan::Action::Delete)
    {
        let over = c
            .fields
            .iter()
            .filter_map(|f| f.membership.as_ref())
            .any(|m| m.before > 0 && (m.removed as f64) > m.max_removal_share * m.before as f64);
        let (kind, rule) = rule_of(c);
        if over && !out.iter().any(|(k, r)| *k == kind && r == rule) {
            out.push((kind, rule.to_owned()));
        }
    }
    out
}

/// Per rule (every rule in the reviewed preview or in the fresh one): reviewed against
/// now, and the decision. `over_limit`: rules the blast-radius guard stops.
pub fn guard(
    reviewed: &[EffectPreview],
    now: &[EffectPreview],
    over_limit: &[(ObjectKind, String)],
) -> Vec<EffectCheck> {
    let mut rules: Vec<(ObjectKind, &str)> = reviewed
        .iter()
        .chain(now)
        .map(|e| (e.kind, e.rule.as_str()))
        .collect();
    rules.sort();
    rules.dedup();
    rules
        .into_iter()
        .map(|(kind, rule)| {
            let find = |list: &'_ [EffectPreview]| {
                list.iter()
                    .find(|e| e.kind == kind && e.rule == rule)
                    .cloned()
            };
            let (r, n) = (find(reviewed), find(now));
            let limit = n
                .as_ref()
                .or(r.as_ref())
                .map(|e| e.max_deviation)
                .unwrap_or_default();
            let count = |e: &Option<EffectPreview>| {
                e.as_ref()
                    .map(|e| (e.adds, e.removes, e.lead_handovers))
                    .unwrap_or((0, 0, 0))
            };
            let ((ra, rr, rl), (na, nr, nl)) = (count(&r), count(&n));
            let (ta, tr, tl) = (
                limit.tolerance(ra),
                limit.tolerance(rr),
                limit.tolerance(rl),
            );
            let decision = if ra.abs_diff(na) > ta || rr.abs_diff(nr) > tr || rl.abs_diff(nl) > tl {
                EffectDecision::HeldDeviation
            } else if over_limit.iter().any(|(k, x)| *k == kind && x == rule) {
                EffectDecision::HeldBlastRadius
            } else {
                EffectDecision::Applied
            };
            EffectCheck {
                kind,
                rule: rule.to_owned(),
                declared_at: n.or(r).and_then(|e| e.declared_at),
                reviewed_adds: ra,
                reviewed_removes: rr,
                now_adds: na,
                now_removes: nr,
                tolerance_adds: ta,
                tolerance_removes: tr,
                reviewed_lead_handovers: rl,
                now_lead_handovers: nl,
                tolerance_lead_handovers: tl,
                decision,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rule::MaxDeviation;

    fn e(kind: ObjectKind, rule: &str, adds: u64, removes: u64, md: MaxDeviation) -> EffectPreview {
        EffectPreview {
            kind,
            rule: rule.into(),
            declared_at: None,
            adds,
            removes,
            sample_added: vec![],
            sample_removed: vec![],
            lead_handovers: 0,
            sample_lead_handovers: vec![],
            max_deviation: md,
            notes: vec![],
        }
    }

    const TIGHT: MaxDeviation = MaxDeviation {
        share: 0.1,
        at_least: 5,
    };

    fn decision(checks: &[EffectCheck], rule: &str) -> EffectDecision {
        checks
            .iter()
            .find(|c| c.rule == rule)
            .map(|c| c.decision.clone())
            .expect(rule)
    }

    #[test]
    fn within_tolerance_applies_beyond_it_holds_that_rule_only() {
        let g = ObjectKind::PatientGroup;
        let reviewed = [
            e(g, "steady", 100, 0, TIGHT),
            e(g, "moved", 100, 0, TIGHT),
            e(ObjectKind::TaskRouting, "labs", 3, 0, TIGHT),
        ];
        let now = [
            // 10 more: exactly max(0.1 × 100, 5) = 10 is tolerated
            e(g, "steady", 110, 0, TIGHT),
            // 11 more: held
            e(g, "moved", 111, 0, TIGHT),
            // 5 more tasks on 3 reviewed: within the floor of 5
            e(ObjectKind::TaskRouting, "labs", 8, 0, TIGHT),
        ];
        let checks = guard(&reviewed, &now, &[]);
        assert_eq!(decision(&checks, "steady"), EffectDecision::Applied);
        assert_eq!(decision(&checks, "moved"), EffectDecision::HeldDeviation);
        assert_eq!(decision(&checks, "labs"), EffectDecision::Applied);
        let moved = checks.iter().find(|c| c.rule == "moved").unwrap();
        assert_eq!(
            (moved.reviewed_adds, moved.now_adds, moved.tolerance_adds),
            (100, 111, 10)
        );
    }

    #[test]
    fn removals_and_rules_new_or_gone_since_review_are_compared_too() {
        let g = ObjectKind::PatientGroup;
        let reviewed = [e(g, "gone", 0, 20, TIGHT), e(g, "shrinks", 0, 2, TIGHT)];
        let now = [
            e(g, "shrinks", 0, 9, TIGHT),
            e(ObjectKind::CareTeamAssignment, "pcp", 6, 0, TIGHT),
        ];
        let checks = guard(&reviewed, &now, &[]);
        // reviewed 20 removals, none now: 20 > max(2, 5)
        assert_eq!(decision(&checks, "gone"), EffectDecision::HeldDeviation);
        // 7 more removals than reviewed: over the floor of 5
        assert_eq!(decision(&checks, "shrinks"), EffectDecision::HeldDeviation);
        // nothing reviewed, 6 now: over the floor of 5
        assert_eq!(decision(&checks, "pcp"), EffectDecision::HeldDeviation);
        assert_eq!(checks.len(), 3, "every rule is reported");
    }

    #[test]
    fn the_default_tolerates_an_ordinary_days_activity() {
        let g = ObjectKind::PatientGroup;
        let d = MaxDeviation::default();
        let checks = guard(&[e(g, "a", 40, 0, d)], &[e(g, "a", 65, 5, d)], &[]);
        assert_eq!(decision(&checks, "a"), EffectDecision::Applied);
        let checks = guard(&[e(g, "a", 40, 0, d)], &[e(g, "a", 66, 0, d)], &[]);
        assert_eq!(decision(&checks, "a"), EffectDecision::HeldDeviation);
    }

    #[test]
    fn lead_handovers_are_a_third_side_with_their_own_tolerance() {
        let c = ObjectKind::CareTeamAssignment;
        let led = |n: u64| {
            let mut x = e(c, "pcp", 0, 0, TIGHT);
            x.lead_handovers = n;
            x
        };
        // 5 more handovers than reviewed: within the floor of 5
        let checks = guard(&[led(2)], &[led(7)], &[]);
        assert_eq!(decision(&checks, "pcp"), EffectDecision::Applied);
        assert_eq!(
            (
                checks[0].reviewed_lead_handovers,
                checks[0].now_lead_handovers,
                checks[0].tolerance_lead_handovers
            ),
            (2, 7, 5)
        );
        // 6 more: held, although adds and removes did not move
        let checks = guard(&[led(2)], &[led(8)], &[]);
        assert_eq!(decision(&checks, "pcp"), EffectDecision::HeldDeviation);
    }

    #[test]
    fn the_blast_radius_guard_holds_a_rule_within_deviation() {
        let g = ObjectKind::PatientGroup;
        let checks = guard(
            &[e(g, "a", 0, 50, TIGHT)],
            &[e(g, "a", 0, 52, TIGHT)],
            &[(g, "a".into())],
        );
        assert_eq!(decision(&checks, "a"), EffectDecision::HeldBlastRadius);
    }
}
