//! Manifest diagnostics: as miette reports with the offending YAML line (terminal), as
//! plain `file:line:col: error: …` lines, or as GitHub Actions annotations.

use std::fmt::Write;

use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteDiagnostic, NamedSource, Report,
};

use crate::manifest::{Diagnostic, ManifestErrors};

fn offset(text: &str, line: u64, col: u64) -> usize {
    let mut off = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i as u64 + 1 == line {
            let chars: usize = l
                .chars()
                .take(col.saturating_sub(1) as usize)
                .map(char::len_utf8)
                .sum();
            return off + chars.min(l.len());
        }
        off += l.len();
    }
    text.len()
}

/// `file:line:col: error: message` + `help:` lines, one diagnostic after another.
pub fn plain(errors: &ManifestErrors, base: &str) -> String {
    let mut out = String::new();
    for d in &errors.diagnostics {
        let _ = writeln!(out, "{}{}: error: {}", base, d.source, d.message);
        if let Some(h) = &d.help {
            let _ = writeln!(out, "    help: {h}");
        }
    }
    out
}

/// miette reports with a snippet of the manifest, for terminals.
pub fn fancy(errors: &ManifestErrors, base: &str, color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme).with_context_lines(1);
    let mut out = String::new();
    for d in &errors.diagnostics {
        let report = report(d, errors, base);
        let _ = handler.render_report(&mut out, report.as_ref());
    }
    out
}

fn report(d: &Diagnostic, errors: &ManifestErrors, base: &str) -> Report {
    let mut diag = MietteDiagnostic::new(format!("{}{}: {}", base, d.source, d.message));
    if let Some(h) = &d.help {
        diag = diag.with_help(h.clone());
    }
    match errors.files.get(&d.source.file) {
        Some(text) => {
            let at = offset(text, d.source.line, d.source.col);
            let len = text[at..].find(['\n', ':']).filter(|n| *n > 0).unwrap_or(1);
            diag = diag.with_label(LabeledSpan::at(at..at + len, "here"));
            Report::new(diag).with_source_code(NamedSource::new(
                format!("{base}{}", d.source.file),
                text.clone(),
            ))
        }
        None => Report::new(diag),
    }
}

/// GitHub Actions workflow commands: errors show inline on the pull request.
pub fn github(errors: &ManifestErrors, base: &str) -> String {
    let esc = |s: &str| {
        s.replace('%', "%25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
    };
    let mut out = String::new();
    for d in &errors.diagnostics {
        let msg = match &d.help {
            Some(h) => format!("{} (help: {h})", d.message),
            None => d.message.clone(),
        };
        let _ = writeln!(
            out,
            "::error file={}{},line={},col={}::{}",
            base,
            d.source.file,
            d.source.line,
            d.source.col,
            esc(&msg)
        );
    }
    out
}

/// One JSON document (`validate --format json` when the manifests are invalid):
/// `{"valid": false, "errors": [{"file", "line", "col", "message", "help"}]}`.
pub fn json(errors: &ManifestErrors, base: &str) -> String {
    let list: Vec<serde_json::Value> = errors
        .diagnostics
        .iter()
        .map(|d| {
            serde_json::json!({
                "file": format!("{base}{}", d.source.file),
                "line": d.source.line,
                "col": d.source.col,
                "message": d.message,
                "help": d.help,
            })
        })
        .collect();
    let mut s = serde_json::to_string_pretty(&serde_json::json!({
        "valid": false,
        "errors": list,
    }))
    .expect("diagnostics serialize");
    s.push('\n');
    s
}
