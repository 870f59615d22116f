//! The plan as Markdown, for pull-request comments: a summary per kind first, then the
//! manual checklist, then one collapsible section per change with its field diff and
//! manifest position, and a footer naming the target, the manifests' commit and the plan
//! file's checksum. Long lists are folded and the whole comment stays under a size cap
//! (GitHub refuses comments over 65,536 characters), ending with "N more" rather than a
//! cut-off table. Plans carry no patient data, so neither does the comment.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{inline, list_delta};
use crate::plan::{Action, Change, FieldChange, Plan};
use crate::vocab::ObjectKind;

/// Default size cap, in characters, well under GitHub's 65,536.
pub const DEFAULT_LIMIT: usize = 60_000;
/// List items shown per field before folding the rest into "… N more".
const LIST_ITEMS: usize = 10;

fn escape(s: &str) -> String {
    s.replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn summary(p: &Plan) -> String {
    let mut rows: BTreeMap<ObjectKind, [usize; 5]> = BTreeMap::new();
    for c in p.configuration() {
        let row = rows.entry(c.target.kind).or_default();
        let i = match c.action {
            Action::Create => 0,
            Action::Update => 1,
            Action::Delete => 2,
            Action::Adopt => 1,
            Action::Manual => 3,
            Action::NoOp => 4,
        };
        row[i] += 1;
    }
    let mut out = String::from(
        "| kind | create | update | delete | manual | unchanged |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for (kind, r) in &rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            kind.label(),
            r[0],
            r[1],
            r[2],
            r[3],
            r[4]
        );
    }
    let s = &p.summary;
    let _ = writeln!(
        out,
        "| **total** | **{}** | **{}** | **{}** | **{}** | **{}** |",
        s.create, s.update, s.delete, s.manual, s.no_op
    );
    out
}

fn field_row(f: &FieldChange) -> String {
    if let Some(m) = &f.membership {
        let sample = |s: &[String]| {
            if s.is_empty() {
                String::new()
            } else {
                format!("<br>e.g. {}", s.join(", "))
            }
        };
        return format!(
            "| `{}` | {} members | {} members: +{}{} −{}{} ={} ({}) | {} |\n",
            escape(&f.field),
            m.before,
            m.after,
            m.added,
            sample(&m.sample_added),
            m.removed,
            sample(&m.sample_removed),
            m.kept,
            m.mode,
            f.source
                .as_ref()
                .map(|s| format!("`{s}`"))
                .unwrap_or_default()
        );
    }
    let item = |sign: &str, v: &serde_json::Value| {
        let label = v
            .as_str()
            .and_then(|s| f.labels.get(s))
            .map(|l| format!(" ({l})"))
            .unwrap_or_default();
        escape(&format!("{sign}{}{label}", inline(v)))
    };
    let fold = |items: Vec<String>| {
        let n = items.len();
        let mut shown: Vec<String> = items.into_iter().take(LIST_ITEMS).collect();
        if n > LIST_ITEMS {
            shown.push(format!("… {} more", n - LIST_ITEMS));
        }
        shown.join("<br>")
    };
    let (before, after) = match list_delta(f.before.as_ref(), f.after.as_ref()) {
        Some((removed, added)) => (
            fold(removed.iter().map(|v| item("−", v)).collect()),
            fold(added.iter().map(|v| item("+", v)).collect()),
        ),
        None => (
            f.before.as_ref().map(|v| item("", v)).unwrap_or_default(),
            f.after.as_ref().map(|v| item("", v)).unwrap_or_default(),
        ),
    };
    format!(
        "| `{}` | {} | {} | {} |\n",
        escape(&f.field),
        before,
        after,
        f.source
            .as_ref()
            .map(|s| format!("`{s}`"))
            .unwrap_or_default()
    )
}

fn details(c: &Change) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<details><summary><code>{}</code> {} {}</summary>\n",
        c.action.symbol(),
        c.action.word(),
        escape(&c.target.to_string())
    );
    match &c.reason.source {
        Some(src) => {
            let _ = writeln!(out, "Because `{src}`: {}\n", escape(&c.reason.rule));
        }
        None => {
            let _ = writeln!(out, "Because {}\n", escape(&c.reason.rule));
        }
    }
    for n in &c.notes {
        let _ = writeln!(out, "> {}\n", escape(n));
    }
    if !c.fields.is_empty() {
        out.push_str("| field | before | after | manifest |\n|---|---|---|---|\n");
        for f in &c.fields {
            out.push_str(&field_row(f));
        }
    }
    out.push_str("\n</details>\n\n");
    out
}

pub fn plan(p: &Plan) -> String {
    plan_with_limit(p, DEFAULT_LIMIT)
}

/// The comment, at most about `limit` characters.
pub fn plan_with_limit(p: &Plan, limit: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### careplane plan · `{}` → `{}`\n",
        p.project, p.target.name
    );
    if p.has_changes() {
        let s = &p.summary;
        let _ = writeln!(
            out,
            "**{} to create, {} to update, {} to delete**, {} manual, {} unchanged.\n",
            s.create, s.update, s.delete, s.manual, s.no_op
        );
    } else {
        let _ = writeln!(
            out,
            "**No changes.** {} object(s) match the manifests.\n",
            p.summary.no_op
        );
    }
    for w in &p.warnings {
        let _ = writeln!(out, "> **Warning:** {}\n", escape(w));
    }
    out.push_str(&summary(p));
    out.push('\n');

    let checklist: Vec<_> = p.checklist().collect();
    if !checklist.is_empty() {
        let _ = writeln!(
            out,
            "**Manual checklist** (the target's API cannot make these changes):\n"
        );
        for c in &checklist {
            let line = crate::render::human::checklist_line(p, c);
            let line = line.replacen("[ ]", "- [ ]", 1).replacen("[x]", "- [x]", 1);
            let at = c
                .reason
                .source
                .as_ref()
                .map(|s| format!(" (`{s}`)"))
                .unwrap_or_default();
            let _ = writeln!(out, "{}{at}", escape(&line));
        }
        let _ = writeln!(out);
    }
    if !p.orphans.is_empty() {
        let _ = writeln!(
            out,
            "**Kept** (no longer declared; plan with `--prune` to remove):\n"
        );
        for o in p.orphans.iter().take(LIST_ITEMS) {
            let _ = writeln!(out, "- {}", escape(&o.target.to_string()));
        }
        if p.orphans.len() > LIST_ITEMS {
            let _ = writeln!(out, "- … {} more", p.orphans.len() - LIST_ITEMS);
        }
        let _ = writeln!(out);
    }

    let footer = format!(
        "<sub>target `{}` ({}, {}) · manifests {}`{}` · plan file `{}` · careplane {}</sub>\n",
        p.target.name,
        p.target.dialect,
        escape(&p.target.endpoint),
        p.manifests_commit
            .as_ref()
            .map(|c| format!("commit `{c}`, "))
            .unwrap_or_default(),
        p.manifests_checksum,
        crate::plan::file::checksum(p),
        p.careplane_version
    );
    if !p.effects.is_empty() {
        let _ = writeln!(
            out,
            "**Effects of rules** (a preview: counts per rule, recomputed from live data when the plan is applied; patients and tasks are never listed):\n\n| rule | adds | removes | counted | e.g. | declared at |\n|---|---:|---:|---|---|---|"
        );
        for e in &p.effects {
            let samples = e
                .sample_added
                .iter()
                .map(|s| format!("+{s}"))
                .chain(e.sample_removed.iter().map(|s| format!("−{s}")))
                .chain(e.sample_lead_handovers.iter().map(|s| format!("lead {s}")))
                .collect::<Vec<_>>()
                .join(", ");
            // samples, then the notes, one per line (no empty first line)
            let sample = std::iter::once(samples)
                .filter(|s| !s.is_empty())
                .chain(e.notes.iter().map(|n| format!("note: {}", escape(n))))
                .collect::<Vec<_>>()
                .join("<br>");
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                escape(&crate::render::human::rule_label(e.kind, &e.rule)),
                e.adds,
                e.removes,
                match crate::plan::lead_handovers_words(e.lead_handovers) {
                    Some(w) => format!("{}, {w}", e.unit()),
                    None => e.unit().to_owned(),
                },
                sample,
                e.declared_at
                    .as_ref()
                    .map(|s| format!("`{s}`"))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(out);
    }
    let writes: Vec<&Change> = p
        .configuration()
        .filter(|c| c.action.is_change() && c.action != Action::Manual)
        .collect();
    let budget = limit.saturating_sub(footer.len() + 200);
    for (i, c) in writes.iter().enumerate() {
        let d = details(c);
        if out.len() + d.len() > budget {
            let _ = writeln!(
                out,
                "**… {} more change(s) not shown** to keep this comment under the size limit: see the plan file.\n",
                writes.len() - i
            );
            break;
        }
        out.push_str(&d);
    }
    out.push_str(&footer);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Precondition, Reason, Target, TargetInfo};
    use serde_json::json;

    fn team_change(i: usize, members: usize) -> Change {
        let list: Vec<String> = (0..members)
            .map(|m| format!("Practitioner/{i}-{m}"))
            .collect();
        Change {
            action: Action::Create,
            target: Target {
                kind: ObjectKind::Team,
                name: format!("team-{i}"),
                resource_type: "Group".into(),
                id: None,
            },
            fields: vec![FieldChange {
                field: "members".into(),
                before: None,
                after: Some(json!(list)),
                source: None,
                labels: Default::default(),
                membership: None,
                sealed: None,
            }],
            reason: Reason {
                code: crate::plan::ReasonCode::Differs,
                source: None,
                rule: "declared".into(),
            },
            operation: Default::default(),
            precondition: Precondition::default(),
            notes: vec![],
        }
    }

    fn plan(changes: Vec<Change>) -> Plan {
        let target = TargetInfo {
            name: "t".into(),
            dialect: "fhir-r4".into(),
            endpoint: "x".into(),
        };
        Plan::new("p", target, vec![], "sha256:0", false, changes, vec![])
    }

    #[test]
    fn long_lists_are_folded() {
        let md = plan_with_limit(&plan(vec![team_change(0, 25)]), DEFAULT_LIMIT);
        assert!(md.contains("+\"Practitioner/0-9\"<br>… 15 more"), "{md}");
        assert!(!md.contains("Practitioner/0-10\""));
    }

    #[test]
    fn a_large_plan_stays_under_the_cap_and_says_how_much_is_left_out() {
        let p = plan((0..2000).map(|i| team_change(i, 8)).collect());
        let md = plan_with_limit(&p, DEFAULT_LIMIT);
        assert!(md.len() <= DEFAULT_LIMIT, "{}", md.len());
        assert!(md.contains("more change(s) not shown"));
        assert!(
            md.contains("| team | 2000 | 0 | 0 | 0 | 0 |"),
            "the summary counts everything"
        );
        assert!(md.trim_end().ends_with("</sub>"), "the footer survives");
        // details are whole: as many opened as closed
        assert_eq!(
            md.matches("<details>").count(),
            md.matches("</details>").count()
        );
    }
}
