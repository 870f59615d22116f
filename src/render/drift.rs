//! Drift reports for terminals and for issue bodies (Markdown).

use std::fmt::Write;

use owo_colors::OwoColorize;

use super::{inline, list_delta};
use crate::drift::DriftField;
use crate::drift::{DriftCause, DriftReport, DriftState, Drifted, PendingEffect};

/// What a rule's pending effects amount to, in words (counts only).
fn effect_words(p: &PendingEffect) -> String {
    let mut parts = Vec::new();
    if p.tasks > 0 {
        parts.push(format!("{} open task(s) to route", p.tasks));
    }
    if p.patients_added > 0 {
        parts.push(format!("{} patient(s) to add", p.patients_added));
    }
    if p.patients_removed > 0 {
        parts.push(format!("{} patient(s) to remove", p.patients_removed));
    }
    parts.extend(crate::plan::lead_handovers_words(p.lead_handovers as u64));
    if parts.is_empty() {
        parts.push("pending".into());
    }
    parts.join(", ")
}

fn rule_of(p: &PendingEffect) -> String {
    let what = match p.kind {
        crate::vocab::ObjectKind::TaskRouting => "routing rule",
        other => other.label(),
    };
    format!("{what} '{}'", p.rule)
}

fn when(d: &Drifted) -> String {
    let cause = match d.cause {
        DriftCause::ServerEdit => "changed on the server",
        DriftCause::ManifestChange => "manifests changed, not applied yet",
        DriftCause::Unknown => "changed",
    };
    match (&d.since, &d.last_updated) {
        (Some(s), _) => format!("{cause} since {s}"),
        (None, Some(t)) => format!("{cause}; last updated {t}"),
        (None, None) => cause.to_owned(),
    }
}

/// `expected X, live Y`, or for lists what is missing and what is extra.
fn describe(f: &DriftField) -> String {
    let label = |v: &serde_json::Value| {
        let l = v
            .as_str()
            .and_then(|s| f.labels.get(s))
            .map(|l| format!(" ({l})"))
            .unwrap_or_default();
        format!("{}{l}", inline(v))
    };
    match list_delta(f.actual.as_ref(), f.expected.as_ref()) {
        Some((extra, missing)) => {
            let mut parts = Vec::new();
            if !missing.is_empty() {
                parts.push(format!(
                    "missing {}",
                    missing.iter().map(label).collect::<Vec<_>>().join(", ")
                ));
            }
            if !extra.is_empty() {
                parts.push(format!(
                    "extra {}",
                    extra.iter().map(label).collect::<Vec<_>>().join(", ")
                ));
            }
            parts.join("; ")
        }
        None => format!(
            "expected {}, live {}",
            f.expected
                .as_ref()
                .map(inline)
                .unwrap_or_else(|| "nothing".into()),
            f.actual
                .as_ref()
                .map(inline)
                .unwrap_or_else(|| "nothing".into())
        ),
    }
}

fn state_word(s: DriftState) -> &'static str {
    match s {
        DriftState::Changed => "changed",
        DriftState::Missing => "missing",
        DriftState::Undeclared => "undeclared",
    }
}

fn target_of(d: &Drifted) -> String {
    match &d.id {
        Some(id) => format!("{} '{}' ({}/{id})", d.kind.label(), d.name, d.resource_type),
        None => format!("{} '{}' ({})", d.kind.label(), d.name, d.resource_type),
    }
}

pub fn human(r: &DriftReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} project {} · target {} ({}, {})\n",
        "careplane drift".bold(),
        r.project.bold(),
        r.target.name.bold(),
        r.target.dialect,
        r.target.endpoint
    );
    for d in &r.drifted {
        let head = format!("{:<10}", state_word(d.state).to_uppercase());
        let head = match d.state {
            DriftState::Changed => head.yellow().to_string(),
            DriftState::Missing => head.red().to_string(),
            DriftState::Undeclared => head.dimmed().to_string(),
        };
        let detail = match d.state {
            DriftState::Changed => when(d),
            DriftState::Missing => "declared but not on the target".into(),
            DriftState::Undeclared => {
                "no longer declared; kept (plan with --prune to remove)".into()
            }
        };
        let _ = writeln!(out, "  {head} {}  {}", target_of(d).bold(), detail.dimmed());
        if d.state == DriftState::Changed {
            for f in &d.fields {
                let at = f
                    .source
                    .as_ref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default();
                let _ = writeln!(out, "      {}: {}{}", f.field, describe(f), at.dimmed());
            }
        }
    }
    if !r.pending_effects.is_empty() {
        let _ = writeln!(
            out,
            "\n{} (ordinary activity the rules catch up with on the next apply or watch pass; not configuration drift)",
            "Pending effects".bold()
        );
        for p in &r.pending_effects {
            let at = p
                .declared_at
                .as_ref()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default();
            let _ = writeln!(out, "  {}: {}{}", rule_of(p), effect_words(p), at.dimmed());
        }
        out.push('\n');
    }
    let s = &r.summary;
    if r.in_sync {
        let _ = writeln!(
            out,
            "{} {} object(s) match the manifests.",
            "In sync.".green().bold(),
            s.in_sync
        );
    } else {
        let _ = writeln!(
            out,
            "\n{} {} changed, {} missing, {} in sync.",
            "Drift:".red().bold(),
            s.changed,
            s.missing,
            s.in_sync
        );
    }
    out
}

/// Markdown for an issue or a report; starts with a marker line a workflow can search for.
pub fn markdown(r: &DriftReport) -> String {
    let esc = |s: &str| {
        s.replace('|', "\\|")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!-- careplane-drift project={} target={} -->",
        r.project, r.target.name
    );
    let s = &r.summary;
    let effects = |out: &mut String| {
        if r.pending_effects.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "\n#### Pending effects\n\nOrdinary activity the rules catch up with on the next apply or watch pass (not configuration drift).\n\n| rule | pending | declared at |\n|---|---|---|"
        );
        for p in &r.pending_effects {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                esc(&rule_of(p)),
                effect_words(p),
                p.declared_at
                    .as_ref()
                    .map(|s| format!("`{s}`"))
                    .unwrap_or_default()
            );
        }
    };
    if r.in_sync {
        let _ = writeln!(
            out,
            "### careplane drift · `{}` → `{}`: in sync\n\n{} object(s) match the manifests.",
            r.project, r.target.name, s.in_sync
        );
        effects(&mut out);
        return out;
    }
    let _ = writeln!(
        out,
        "### careplane drift · `{}` → `{}`: {} changed, {} missing\n",
        r.project, r.target.name, s.changed, s.missing
    );
    let _ = writeln!(out, "| object | state | fields | when | declared at |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    for d in r
        .drifted
        .iter()
        .filter(|d| d.state != DriftState::Undeclared)
    {
        let fields: Vec<String> = d
            .fields
            .iter()
            .map(|f| format!("`{}`: {}", f.field, describe(f)))
            .collect();
        let fields = if d.state == DriftState::Missing {
            "(whole object)".to_owned()
        } else {
            fields.join("<br>")
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            esc(&target_of(d)),
            state_word(d.state),
            esc(&fields).replace("&lt;br&gt;", "<br>"),
            esc(&if d.state == DriftState::Changed {
                when(d)
            } else {
                String::new()
            }),
            d.declared_at
                .as_ref()
                .map(|s| format!("`{s}`"))
                .unwrap_or_default()
        );
    }
    let undeclared = r
        .drifted
        .iter()
        .filter(|d| d.state == DriftState::Undeclared)
        .count();
    if undeclared > 0 {
        let _ = writeln!(
            out,
            "\n{undeclared} object(s) are no longer declared and are kept (not counted as drift)."
        );
    }
    effects(&mut out);
    let _ = writeln!(
        out,
        "\n<sub>target `{}` ({}) · manifests `{}` · careplane {}</sub>",
        r.target.name, r.target.dialect, r.manifests_checksum, r.careplane_version
    );
    out
}
