//! A change's reason in words, made in one place from typed facts.
//!
//! The planner (`reconcile`) states *why* a change is planned as a [`Why`]: the facts, typed
//! (which kind, which fields, which rule, what live data shows). [`Reason::new`] turns them
//! into the reason's code and its words (`rule`), which every renderer prints and the plan
//! file carries for tools. Nothing else writes reason text.

use super::{Reason, ReasonCode};
use crate::model::Source;
use crate::vocab::ObjectKind;

/// The routing rule that routes a task: its name and order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route<'a> {
    pub rule: &'a str,
    pub order: i64,
}

/// Why a change is planned, as facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why<'a> {
    /// Declared and not on the target; `manual`: the target's API cannot create it.
    Missing {
        kind: ObjectKind,
        name: &'a str,
        manual: bool,
    },
    /// A live object careplane does not own yet has the declared object's name.
    Adopt {
        resource_type: &'a str,
        id: &'a str,
        natural_key: &'a str,
    },
    /// Declared and live, and nothing differs. `evidence`: what on the target shows it
    /// exists (where it cannot be read directly); `route`: the rule that routed the task.
    Matches {
        evidence: Option<&'a str>,
        route: Option<Route<'a>>,
    },
    /// Declared and live, and these fields differ (or a routing rule sets them);
    /// `manual`: the target's API cannot change it.
    Differs {
        kind: ObjectKind,
        fields: Vec<&'a str>,
        route: Option<Route<'a>>,
        manual: bool,
    },
    /// Owned, no longer declared, `--prune` given.
    Prune,
    /// Likewise, on a target without DELETE.
    Retire,
    /// A care-team assignment: `practitioner` as the manifest names them, in `role`
    /// (its display); `lead`: the assignment makes them the lead; `done`: every selected
    /// patient already has it; `handovers`: care teams where the lead passes to them.
    CareTeam {
        assignment: &'a str,
        practitioner: &'a str,
        role: &'a str,
        lead: bool,
        done: bool,
        handovers: usize,
    },
    /// A `lead: true` care-team assignment whose participant joins and leaves no care team,
    /// but does not lead `handovers` of those it is on (someone else does, or nobody).
    CareTeamLead {
        assignment: &'a str,
        practitioner: &'a str,
        role: &'a str,
        handovers: usize,
    },
}

impl Why<'_> {
    /// The reason code these facts make.
    pub fn code(&self) -> ReasonCode {
        match self {
            Why::Missing { .. } => ReasonCode::Missing,
            Why::Adopt { .. } => ReasonCode::Adopt,
            Why::Matches { route: Some(_), .. } | Why::Differs { route: Some(_), .. } => {
                ReasonCode::RoutingRule
            }
            Why::Matches { .. } => ReasonCode::Matches,
            Why::Differs { .. } => ReasonCode::Differs,
            Why::Prune => ReasonCode::Prune,
            Why::Retire => ReasonCode::Retire,
            Why::CareTeam { .. } => ReasonCode::CareTeamAssignment,
            Why::CareTeamLead { .. } => ReasonCode::CareTeamLead,
        }
    }

    /// The facts in words: the one place reason text is written.
    pub fn sentence(&self) -> String {
        let routed = |r: &Route<'_>| {
            format!(
                "routing rule '{}' (order {}) is the first to match this open task",
                r.rule, r.order
            )
        };
        match self {
            Why::Missing {
                kind,
                name,
                manual: false,
            } => format!("{} '{name}' is declared but not on the target", kind.label()),
            Why::Missing {
                kind,
                name,
                manual: true,
            } => format!(
                "{} '{name}' is declared but not seen on the target, and the target's API cannot create it: create it by hand",
                kind.label()
            ),
            Why::Adopt {
                resource_type,
                id,
                natural_key,
            } => format!(
                "{resource_type}/{id} is named '{natural_key}' and not managed by careplane yet: adopt it (tag it as this project's) instead of creating another"
            ),
            Why::Matches {
                evidence: Some(e), ..
            } => format!("seen on the target: {e}"),
            Why::Matches {
                evidence: None,
                route: Some(r),
            } => format!("{}; already done", routed(r)),
            Why::Matches {
                evidence: None,
                route: None,
            } => "matches its manifest".to_owned(),
            Why::Differs {
                kind,
                fields,
                route,
                manual,
            } => {
                let differs = match route {
                    Some(r) => format!("{}; it sets {}", routed(r), fields.join(", ")),
                    None => format!(
                        "live {} differs from its manifest in {}",
                        kind.label(),
                        fields.join(", ")
                    ),
                };
                if *manual {
                    format!("{differs}; the target's API cannot change it: change it by hand")
                } else {
                    differs
                }
            }
            Why::Prune => {
                "managed by careplane but no longer declared, and --prune was given".to_owned()
            }
            Why::Retire => "retire: no longer declared, --prune was given, and the target has no DELETE (emptied and renamed instead)".to_owned(),
            Why::CareTeam {
                practitioner,
                role,
                lead,
                done: true,
                ..
            } => format!(
                "every selected patient has {practitioner} as {role}{}",
                if *lead { ", and as the lead" } else { "" }
            ),
            Why::CareTeam {
                assignment,
                practitioner,
                role,
                done: false,
                handovers,
                ..
            } => {
                let mut s = format!(
                    "care-team assignment '{assignment}': {practitioner} as {role} for the selected patients"
                );
                if *handovers > 0 {
                    s.push_str(&format!(
                        ", and as the lead: {handovers} lead handover(s), where someone else leads or they are on the team but not the lead"
                    ));
                }
                s
            }
            Why::CareTeamLead {
                assignment,
                practitioner,
                role,
                handovers,
            } => format!(
                "care-team assignment '{assignment}' makes {practitioner} the lead: {handovers} lead handover(s) on care teams where they are {role} already, but someone else leads or nobody does"
            ),
        }
    }
}

impl Reason {
    /// The reason for `why`, declared at `source` (none for deletes): its code and words.
    pub fn new(source: Option<Source>, why: Why<'_>) -> Reason {
        Reason {
            code: why.code(),
            source,
            rule: why.sentence(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_facts() {
        let route = Some(Route {
            rule: "refills",
            order: 10,
        });
        let cases = [
            (
                Why::Matches {
                    evidence: None,
                    route,
                },
                ReasonCode::RoutingRule,
                "routing rule 'refills' (order 10) is the first to match this open task; already done",
            ),
            (
                Why::Differs {
                    kind: ObjectKind::TaskRouting,
                    fields: vec!["owner", "team"],
                    route,
                    manual: false,
                },
                ReasonCode::RoutingRule,
                "routing rule 'refills' (order 10) is the first to match this open task; it sets owner, team",
            ),
            (
                Why::Differs {
                    kind: ObjectKind::Team,
                    fields: vec!["name"],
                    route: None,
                    manual: true,
                },
                ReasonCode::Differs,
                "live team differs from its manifest in name; the target's API cannot change it: change it by hand",
            ),
            (
                Why::Matches {
                    evidence: None,
                    route: None,
                },
                ReasonCode::Matches,
                "matches its manifest",
            ),
            (
                Why::CareTeamLead {
                    assignment: "pcp",
                    practitioner: "npi 1",
                    role: "PCP",
                    handovers: 3,
                },
                ReasonCode::CareTeamLead,
                "care-team assignment 'pcp' makes npi 1 the lead: 3 lead handover(s) on care teams where they are PCP already, but someone else leads or nobody does",
            ),
            (
                Why::CareTeam {
                    assignment: "pcp",
                    practitioner: "npi 1",
                    role: "PCP",
                    lead: true,
                    done: true,
                    handovers: 0,
                },
                ReasonCode::CareTeamAssignment,
                "every selected patient has npi 1 as PCP, and as the lead",
            ),
        ];
        for (why, code, words) in cases {
            let r = Reason::new(None, why);
            assert_eq!((r.code, r.rule.as_str()), (code, words));
        }
    }
}
