//! The plan as Markdown (for pull-request comments): summary table first, then one
//! collapsible section per change with its field diff and manifest position.

use std::fmt::Write;

use super::{inline, list_delta};
use crate::plan::{Action, Plan};

fn escape(s: &str) -> String {
    s.replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn plan(p: &Plan) -> String {
    let mut out = String::new();
    let s = &p.summary;
    let _ = writeln!(
        out,
        "### careplane plan · `{}` → `{}`\n",
        p.project, p.target.name
    );
    if !p.has_changes() {
        let _ = writeln!(
            out,
            "**No changes.** {} object(s) match the manifests.\n",
            s.no_op
        );
    }
    let _ = writeln!(
        out,
        "| create | update | delete | manual | unchanged | orphaned |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {} | {} |\n",
        s.create, s.update, s.delete, s.manual, s.no_op, s.orphaned
    );
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
    for c in p
        .changes
        .iter()
        .filter(|c| c.action.is_change() && c.action != Action::Manual)
    {
        let _ = writeln!(
            out,
            "<details><summary><code>{}</code> {} {}</summary>\n",
            c.action.symbol(),
            match c.action {
                Action::Create => "create",
                Action::Update => "update",
                Action::Delete => "delete",
                Action::Manual => "manual",
                Action::NoOp => "no-op",
            },
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
        let _ = writeln!(out, "| field | before | after | manifest |");
        let _ = writeln!(out, "|---|---|---|---|");
        for f in &c.fields {
            let item = |sign: &str, v: &serde_json::Value| {
                let label = v
                    .as_str()
                    .and_then(|s| f.labels.get(s))
                    .map(|l| format!(" ({l})"))
                    .unwrap_or_default();
                escape(&format!("{sign}{}{label}", inline(v)))
            };
            let (before, after) = match list_delta(f.before.as_ref(), f.after.as_ref()) {
                Some((removed, added)) => (
                    removed
                        .iter()
                        .map(|v| item("−", v))
                        .collect::<Vec<_>>()
                        .join("<br>"),
                    added
                        .iter()
                        .map(|v| item("+", v))
                        .collect::<Vec<_>>()
                        .join("<br>"),
                ),
                None => (
                    f.before.as_ref().map(|v| item("", v)).unwrap_or_default(),
                    f.after.as_ref().map(|v| item("", v)).unwrap_or_default(),
                ),
            };
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} |",
                escape(&f.field),
                before,
                after,
                f.source
                    .as_ref()
                    .map(|s| format!("`{s}`"))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(out, "\n</details>\n");
    }
    if !p.orphans.is_empty() {
        let _ = writeln!(
            out,
            "**Kept (no longer declared; plan with `--prune` to delete):**\n"
        );
        for o in &p.orphans {
            let _ = writeln!(out, "- {}", escape(&o.target.to_string()));
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(
        out,
        "<sub>target `{}` ({}) · manifests `{}` · careplane {}</sub>",
        p.target.name, p.target.dialect, p.manifests_checksum, p.careplane_version
    );
    out
}
