//! The human plan and apply report: coloured when the terminal wants colour (the CLI
//! writes through anstream, which strips styling for pipes, files and `NO_COLOR`).

use std::fmt::Write;

use owo_colors::OwoColorize;
use serde_json::Value;
use similar::{ChangeTag, TextDiff};

use super::{inline, list_delta};
use crate::apply::{ApplyRecord, ProvenanceStatus, Report};
use crate::plan::Stats;
use crate::plan::{Action, Change, FieldChange, Plan};

fn styled_symbol(a: Action) -> String {
    let s = format!("{} {}", a.symbol(), a.word());
    match a {
        Action::Create => s.green().to_string(),
        Action::Update => s.yellow().to_string(),
        Action::Delete => s.red().to_string(),
        Action::Adopt => s.cyan().to_string(),
        Action::Manual => s.magenta().to_string(),
        Action::NoOp => s.dimmed().to_string(),
    }
}

/// A patient list: counts, pseudonymous samples, and (only with `--show-members`, only
/// on this terminal) the ids themselves.
fn membership(out: &mut String, f: &FieldChange, show_members: bool) -> bool {
    let Some(m) = &f.membership else { return false };
    let at = f
        .source
        .as_ref()
        .map(|s| format!("  ({s})").dimmed().to_string())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "      {} {} → {} members ({}: {} {} {}){at}",
        format!("{}:", f.field).bold(),
        m.before,
        m.after,
        m.mode,
        format!("+{}", m.added).green(),
        format!("-{}", m.removed).red(),
        format!("={}", m.kept).dimmed()
    );
    if !m.sample_added.is_empty() {
        let _ = writeln!(
            out,
            "        added, e.g.: {}",
            m.sample_added.join(", ").green()
        );
    }
    if !m.sample_removed.is_empty() {
        let _ = writeln!(
            out,
            "        removed, e.g.: {}",
            m.sample_removed.join(", ").red()
        );
    }
    if show_members && let Some((before, after)) = f.sealed.as_deref() {
        let set = |v: &Option<Value>| crate::vocab::json::str_list(v.as_ref());
        let (b, a) = (set(before), set(after));
        for x in a.iter().filter(|x| !b.contains(x)) {
            let _ = writeln!(out, "        {}", format!("+ {x}").green());
        }
        for x in b.iter().filter(|x| !a.contains(x)) {
            let _ = writeln!(out, "        {}", format!("- {x}").red());
        }
    }
    true
}

fn field(out: &mut String, f: &FieldChange) {
    field_with(out, f, false)
}

fn field_with(out: &mut String, f: &FieldChange, show_members: bool) {
    if membership(out, f, show_members) {
        return;
    }
    let at = f
        .source
        .as_ref()
        .map(|s| format!("  ({s})").dimmed().to_string())
        .unwrap_or_default();
    let name = format!("{}:", f.field);
    if let Some((removed, added)) = list_delta(f.before.as_ref(), f.after.as_ref()) {
        let _ = writeln!(out, "      {}{at}", name.bold());
        let label = |v: &Value| {
            v.as_str()
                .and_then(|s| f.labels.get(s))
                .map(|l| format!("  {}", l.dimmed()))
                .unwrap_or_default()
        };
        for r in removed {
            let _ = writeln!(
                out,
                "        {}{}",
                format!("- {}", inline(&r)).red(),
                label(&r)
            );
        }
        for a in added {
            let _ = writeln!(
                out,
                "        {}{}",
                format!("+ {}", inline(&a)).green(),
                label(&a)
            );
        }
        if f.before.is_none()
            && f.after
                .as_ref()
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty)
        {
            let _ = writeln!(out, "        (empty)");
        }
        return;
    }
    match (&f.before, &f.after) {
        (Some(b @ Value::Object(_)), Some(a @ Value::Object(_))) => {
            let _ = writeln!(out, "      {}{at}", name.bold());
            let bt = serde_json::to_string_pretty(b).unwrap_or_default();
            let att = serde_json::to_string_pretty(a).unwrap_or_default();
            for change in TextDiff::from_lines(&bt, &att).iter_all_changes() {
                let line = change.value().trim_end_matches('\n');
                let _ = match change.tag() {
                    ChangeTag::Delete => writeln!(out, "        {}", format!("- {line}").red()),
                    ChangeTag::Insert => writeln!(out, "        {}", format!("+ {line}").green()),
                    ChangeTag::Equal => writeln!(out, "          {}", line.dimmed()),
                };
            }
        }
        (None, Some(a)) => {
            let _ = writeln!(out, "      {} {}{at}", name.bold(), inline(a).green());
        }
        (Some(b), None) => {
            let _ = writeln!(
                out,
                "      {} {}{at}",
                name.bold(),
                inline(b).red().strikethrough()
            );
        }
        (Some(b), Some(a)) => {
            let _ = writeln!(
                out,
                "      {} {} → {}{at}",
                name.bold(),
                inline(b).red(),
                inline(a).green()
            );
        }
        (None, None) => {}
    }
}

fn change_with(out: &mut String, c: &Change, show_members: bool) {
    let _ = writeln!(
        out,
        "  {} {}",
        styled_symbol(c.action),
        c.target.to_string().bold()
    );
    let because = match &c.reason.source {
        Some(s) => format!("because {s}: {}", c.reason.rule),
        None => format!("because {}", c.reason.rule),
    };
    let _ = writeln!(out, "      {}", because.dimmed());
    for n in &c.notes {
        let _ = writeln!(out, "      {}", format!("note: {n}").cyan());
    }
    for f in &c.fields {
        field_with(out, f, show_members);
    }
}

/// One checklist line: `[ ] create role MD 'Physician' in Settings → Roles`, or
/// `[x] role 'physician': seen on the target (…)` for what live data confirms.
pub fn checklist_line(p: &Plan, c: &Change) -> String {
    let hint = p
        .capability(c.target.kind)
        .and_then(|k| k.manual_hint.clone())
        .map(|h| format!(" in {h}"))
        .unwrap_or_default();
    let after = |f: &str| {
        c.fields
            .iter()
            .find(|x| x.field == f)
            .and_then(|x| x.after.as_ref())
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string())
            })
    };
    let what = match (after("code"), after("display")) {
        (Some(code), Some(display)) => format!("{} {code} '{display}'", c.target.kind.label()),
        _ => format!("{} '{}'", c.target.kind.label(), c.target.name),
    };
    match c.action {
        Action::Manual if c.precondition.absent => format!("[ ] create {what}{hint}"),
        Action::Manual => format!("[ ] change {what}{hint}"),
        _ => format!(
            "[x] {} '{}': {}",
            c.target.kind.label(),
            c.target.name,
            c.reason.rule
        ),
    }
}

/// The whole plan for a terminal.
pub fn plan(p: &Plan, stats: Option<&Stats>) -> String {
    plan_with_members(p, stats, false)
}

/// The plan for a terminal; `show_members` also lists patient ids (local use only).
pub fn plan_with_members(p: &Plan, stats: Option<&Stats>, show_members: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} project {} · target {} ({}, {})",
        "careplane plan".bold(),
        p.project.bold(),
        p.target.name.bold(),
        p.target.dialect,
        p.target.endpoint
    );
    let _ = writeln!(out);
    for w in &p.warnings {
        let _ = writeln!(out, "{}", format!("warning: {w}").yellow());
        let _ = writeln!(out);
    }
    for c in p
        .configuration()
        .filter(|c| c.action.is_change() && c.action != Action::Manual)
    {
        change_with(&mut out, c, show_members);
        let _ = writeln!(out);
    }
    if !p.effects.is_empty() {
        let _ = writeln!(
            out,
            "{}",
            "Effects of rules (a preview: counts per rule, recomputed from live data when applied):"
                .bold()
        );
        for e in &p.effects {
            effect_line(&mut out, e);
            if show_members {
                // ids, on this terminal only
                for c in p.changes.iter().filter(|c| {
                    c.layer() == crate::plan::Layer::Effects
                        && crate::reconcile::effects::rule_of(c) == (e.kind, e.rule.as_str())
                }) {
                    for f in &c.fields {
                        if let Some((before, after)) = f.sealed.as_deref() {
                            let set = |v: &Option<Value>| crate::vocab::json::str_list(v.as_ref());
                            let (b, a) = (set(before), set(after));
                            let lead = if f.field == crate::plan::LEAD_FIELD {
                                " (lead handover)"
                            } else {
                                ""
                            };
                            for x in a.iter().filter(|x| !b.contains(x)) {
                                let _ = writeln!(out, "        {}", format!("+ {x}{lead}").green());
                            }
                            for x in b.iter().filter(|x| !a.contains(x)) {
                                let _ = writeln!(out, "        {}", format!("- {x}").red());
                            }
                        }
                    }
                }
            }
        }
        let _ = writeln!(out);
    }
    let checklist: Vec<&Change> = p.checklist().collect();
    if !checklist.is_empty() {
        let _ = writeln!(
            out,
            "{}",
            "Manual checklist (the target's API cannot make these changes; careplane never calls it for them):".bold()
        );
        for c in &checklist {
            let _ = writeln!(out, "  {}", checklist_line(p, c));
            if c.action == Action::Manual {
                let because = match &c.reason.source {
                    Some(s) => format!("because {s}: {}", c.reason.rule),
                    None => format!("because {}", c.reason.rule),
                };
                let _ = writeln!(out, "      {}", because.dimmed());
                for f in &c.fields {
                    field(&mut out, f);
                }
            }
        }
        let _ = writeln!(out);
    }
    if !p.orphans.is_empty() {
        let _ = writeln!(
            out,
            "{}",
            format!(
                "{} object(s) owned by careplane are no longer declared and are kept (plan with --prune to delete them):",
                p.orphans.len()
            )
            .yellow()
        );
        for o in &p.orphans {
            let _ = writeln!(out, "    {}", o.target);
        }
        let _ = writeln!(out);
    }
    let s = &p.summary;
    if !p.has_changes() {
        let _ = writeln!(
            out,
            "{} {} object(s) match the manifests.",
            "No changes.".green().bold(),
            s.no_op
        );
    } else {
        let _ = writeln!(
            out,
            "{} {} to create, {} to update, {} to delete, {} manual, {} unchanged.",
            "Plan:".bold(),
            s.create,
            s.update,
            s.delete,
            s.manual,
            s.no_op
        );
    }
    if !p.effects.is_empty() {
        let _ = writeln!(
            out,
            "Effects: {} rule(s) change memberships, care teams or task routing (recomputed from live data when applied).",
            p.effects.len()
        );
    }
    if p.effects_by == crate::manifest::types::EffectsBy::Plugin
        && p.changes
            .iter()
            .any(|c| matches!(c.operation, crate::plan::Operation::Plugin { .. }))
    {
        let _ = writeln!(
            out,
            "Between applies, routing and patient groups are kept by the plugin inside the target (effects: plugin); `watch` is not used for them."
        );
    }
    if let Some(st) = stats {
        let _ = writeln!(
            out,
            "{}",
            format!(
                "Read live state with {} searches ({} requests) in {} ms.",
                st.searches,
                st.requests,
                st.elapsed.as_millis()
            )
            .dimmed()
        );
    }
    out
}

/// A rule's name as people read it: `patient group 'x'`, `routing rule 'y'`.
pub fn rule_label(kind: crate::vocab::ObjectKind, rule: &str) -> String {
    match kind {
        crate::vocab::ObjectKind::TaskRouting => format!("routing rule '{rule}'"),
        k => format!("{} '{rule}'", k.label()),
    }
}

/// One rule's counts: `+3 -1 patient(s)`, or `201 open task(s) to route`.
fn counts(kind: crate::vocab::ObjectKind, adds: u64, removes: u64) -> String {
    match kind {
        crate::vocab::ObjectKind::TaskRouting => format!("{adds}"),
        _ => format!("+{adds} -{removes}"),
    }
}

fn effect_line(out: &mut String, e: &crate::plan::EffectPreview) {
    let at = e
        .declared_at
        .as_ref()
        .map(|s| format!("  ({s})").dimmed().to_string())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  {} {}: {} {}{}{at}",
        styled_symbol(Action::Update),
        rule_label(e.kind, &e.rule).bold(),
        counts(e.kind, e.adds, e.removes),
        e.unit(),
        crate::plan::lead_handovers_words(e.lead_handovers)
            .map(|w| format!(", {w}"))
            .unwrap_or_default()
    );
    if !e.sample_added.is_empty() {
        let _ = writeln!(
            out,
            "        added, e.g.: {}",
            e.sample_added.join(", ").green()
        );
    }
    if !e.sample_removed.is_empty() {
        let _ = writeln!(
            out,
            "        removed, e.g.: {}",
            e.sample_removed.join(", ").red()
        );
    }
    if !e.sample_lead_handovers.is_empty() {
        let _ = writeln!(
            out,
            "        lead handed over, e.g.: {}",
            e.sample_lead_handovers.join(", ").yellow()
        );
    }
    for n in &e.notes {
        let _ = writeln!(out, "      {}", format!("note: {n}").cyan());
    }
}

/// `apply --plan`: per rule, the effects reviewed in the saved plan against the ones
/// recomputed now, and what was done with them.
pub fn effect_checks(checks: &[crate::plan::EffectCheck]) -> String {
    use crate::plan::EffectDecision as D;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        "Effects of rules, reviewed in the plan → recomputed now:".bold()
    );
    for c in checks {
        let unit = crate::plan::EffectPreview {
            kind: c.kind,
            rule: String::new(),
            declared_at: None,
            adds: 0,
            removes: 0,
            sample_added: vec![],
            sample_removed: vec![],
            lead_handovers: 0,
            sample_lead_handovers: Vec::new(),
            max_deviation: Default::default(),
            notes: vec![],
        }
        .unit();
        let leads = if c.reviewed_lead_handovers + c.now_lead_handovers > 0 {
            format!(
                "; lead handovers reviewed {}, now {}",
                c.reviewed_lead_handovers, c.now_lead_handovers
            )
        } else {
            String::new()
        };
        let what = format!(
            "{}: reviewed {}, now {} {unit}{leads}",
            rule_label(c.kind, &c.rule),
            counts(c.kind, c.reviewed_adds, c.reviewed_removes),
            counts(c.kind, c.now_adds, c.now_removes),
        );
        let at = c
            .declared_at
            .as_ref()
            .map(|s| format!("  ({s})").dimmed().to_string())
            .unwrap_or_default();
        let (mark, how) = match &c.decision {
            D::Applied => ("✓".green().to_string(), "applied".to_owned()),
            D::HeldDeviation => (
                "✗ held back".red().bold().to_string(),
                format!(
                    "held back: they moved more than the rule's maxDeviation allows (±{} added, ±{} removed{}); nothing of this rule was written: check the rule and the data, then plan again",
                    c.tolerance_adds,
                    c.tolerance_removes,
                    if c.reviewed_lead_handovers + c.now_lead_handovers > 0 {
                        format!(", ±{} lead handovers", c.tolerance_lead_handovers)
                    } else {
                        String::new()
                    }
                ),
            ),
            D::HeldBlastRadius => (
                "✗ held back".red().bold().to_string(),
                "held back: they would remove more than the rule's maxRemovalShare; check the rule, or apply with --allow-mass-removal".to_owned(),
            ),
            D::NotRecomputed { reason } => (
                "✗ held back".red().bold().to_string(),
                format!("held back: they could not be recomputed ({reason})"),
            ),
            D::NotStarted => (
                "✗ not started".red().to_string(),
                "not started: the apply was interrupted".to_owned(),
            ),
        };
        let _ = writeln!(out, "  {mark} {what}: {how}{at}");
    }
    out
}

/// What apply did, one line per write.
pub fn report(p: &Plan, r: &Report) -> String {
    let mut out = String::new();
    if r.is_refused() {
        let _ = writeln!(
            out,
            "{} The saved plan no longer holds for {} object(s) (below). Nothing was written.",
            "Apply refused.".red().bold(),
            r.refused.len()
        );
        for e in &r.refused {
            let _ = writeln!(out, "  {} {}", "✗ stale".red().bold(), e);
        }
        let _ = writeln!(
            out,
            "\nMake a new plan (careplane plan --out) and review it."
        );
        return out;
    }
    // routed tasks are counted per rule, as plans show them
    let mut routed: Vec<(&str, usize)> = Vec::new();
    for o in &r.outcomes {
        if let (
            Ok(_),
            Some(
                crate::plan::Operation::RouteTask { rule, .. }
                | crate::plan::Operation::RouteTasks { rule, .. },
            ),
        ) = (&o.result, p.changes.get(o.change).map(|c| &c.operation))
        {
            match routed.iter_mut().find(|(r, _)| r == rule) {
                Some((_, n)) => *n += 1,
                None => routed.push((rule, 1)),
            }
            continue;
        }
        match &o.result {
            Ok(w) => {
                let id = w
                    .as_ref()
                    .map(|w| crate::fhir::shown(&o.target.resource_type, &w.id))
                    .or_else(|| {
                        o.target
                            .id
                            .as_ref()
                            .map(|id| crate::fhir::shown(&o.target.resource_type, id))
                    })
                    .unwrap_or_default();
                // a change over many resources (a care-team assignment's patients) has no
                // one id: its counts say what was written
                let id = match p.changes.get(o.change) {
                    Some(c) if id.is_empty() => c
                        .fields
                        .iter()
                        .find_map(|f| f.membership.as_ref())
                        .map(|m| format!("+{} -{} patient(s)", m.added, m.removed))
                        .unwrap_or_default(),
                    _ => id,
                };
                let _ = writeln!(
                    out,
                    "  {} {} '{}' {}{}",
                    styled_symbol(o.action),
                    o.target.kind.label(),
                    o.target.name,
                    id.dimmed(),
                    o.note
                        .as_ref()
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default()
                );
            }
            Err(e) => {
                let _ = writeln!(out, "  {} {}", "✗ failed".red().bold(), e);
            }
        }
    }
    for (rule, n) in routed {
        let _ = writeln!(
            out,
            "  {} routing rule '{rule}': {n} open task(s) routed",
            styled_symbol(Action::Update)
        );
    }
    let manual = p.summary.manual;
    let _ = writeln!(out);
    if r.failed() == 0 {
        let _ = writeln!(
            out,
            "{} {} change(s) applied{}.",
            "Apply complete.".green().bold(),
            r.succeeded(),
            if manual > 0 {
                format!("; {manual} manual item(s) left on the checklist")
            } else {
                String::new()
            }
        );
    } else {
        let _ = writeln!(
            out,
            "{} {} applied, {} failed. Nothing is rolled back: plan again to see what remains.",
            "Apply incomplete.".red().bold(),
            r.succeeded(),
            r.failed()
        );
    }
    out
}

/// Where the record of an apply went: the Provenance on the target, the report file.
pub fn record(r: &ApplyRecord, report_file: Option<&str>) -> String {
    let mut out = String::new();
    match &r.provenance {
        ProvenanceStatus::Written { reference } => {
            let _ = writeln!(out, "Recorded as {reference} on the target.");
        }
        ProvenanceStatus::Failed { error } => {
            let _ = writeln!(
                out,
                "{} the record of this apply could not be stored on the target as a Provenance: {error}",
                "error:".red().bold()
            );
        }
        ProvenanceStatus::Unsupported => {
            let _ = writeln!(
                out,
                "The target cannot store Provenance: {}",
                if report_file.is_some() {
                    "the report file is the record of this apply."
                } else {
                    "pass --report FILE to keep a record of this apply."
                }
            );
        }
        ProvenanceStatus::NothingWritten => {}
    }
    if let Some(f) = report_file {
        let _ = writeln!(out, "Apply report written to {f}.");
    }
    out
}

/// Rule test results: one line per test, the failures under it, and a total.
pub fn rule_tests(results: &[crate::ruletest::TestResult]) -> String {
    let mut out = String::new();
    for r in results {
        if r.failures.is_empty() {
            let _ = writeln!(
                out,
                "  {} {}  {}",
                "ok".green(),
                r.name,
                r.source.to_string().dimmed()
            );
        } else {
            let _ = writeln!(
                out,
                "  {} {}  {}",
                "FAILED".red().bold(),
                r.name,
                r.source.to_string().dimmed()
            );
            for f in &r.failures {
                let _ = writeln!(out, "      {f}");
            }
        }
    }
    let failed = results.iter().filter(|r| !r.failures.is_empty()).count();
    let _ = writeln!(
        out,
        "\nrule tests: {} passed, {} failed",
        results.len() - failed,
        failed
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{FieldChange, MembershipDelta, Precondition, Reason, Target, TargetInfo};
    use serde_json::json;

    #[test]
    fn show_members_lists_ids_only_when_asked() {
        let f = FieldChange {
            field: "members".into(),
            before: Some(json!({"count": 1})),
            after: Some(json!({"count": 1})),
            source: None,
            labels: Default::default(),
            membership: Some(Box::new(MembershipDelta {
                mode: "authoritative".into(),
                before: 1,
                after: 1,
                added: 1,
                removed: 1,
                kept: 0,
                sample_added: vec![],
                sample_removed: vec![],
                digest_before: String::new(),
                digest_after: String::new(),
                max_removal_share: 1.0,
            })),
            sealed: Some(Box::new((
                Some(json!(["Patient/old"])),
                Some(json!(["Patient/new"])),
            ))),
        };
        let c = Change {
            action: Action::Update,
            target: Target {
                kind: crate::vocab::ObjectKind::PatientGroup,
                name: "g".into(),
                resource_type: "Group".into(),
                id: Some("1".into()),
            },
            fields: vec![f],
            reason: Reason {
                code: crate::plan::ReasonCode::Differs,
                source: None,
                rule: "r".into(),
            },
            operation: Default::default(),
            precondition: Precondition::default(),
            notes: vec![],
        };
        let p = Plan::new(
            "p",
            TargetInfo {
                name: "t".into(),
                dialect: "fhir-r4".into(),
                endpoint: "e".into(),
            },
            vec![],
            "c",
            false,
            vec![c],
            vec![],
        );
        let plain = plan(&p, None);
        assert!(!plain.contains("Patient/"), "{plain}");
        let shown = plan_with_members(&p, None, true);
        assert!(
            shown.contains("+ Patient/new") && shown.contains("- Patient/old"),
            "{shown}"
        );
    }
}
