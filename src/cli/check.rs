//! `careplane check [DIR] [--target NAME]`: the care-model checks of [`crate::check`],
//! offline, and with `--target` the live ones. Exit 0 without an error-level finding, 1
//! with one (or when the manifests do not load or the target cannot be read).

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use super::{
    DiagnosticFormat, EXIT_ERROR, EXIT_OK, default_dir, err, note, out, print_diagnostics,
    print_error, print_skipped,
};
use crate::check::{self, Finding, Severity};
use crate::manifest::LoadError;
use crate::ops;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manifest directory (default: the current directory).
    pub dir: Option<PathBuf>,
    /// How to print findings: text with advice, `file:line:col` lines, GitHub
    /// annotations, one JSON document on stdout (schema/check.schema.json), or a SARIF
    /// 2.1.0 log on stdout (for GitHub code scanning).
    #[arg(long, value_enum, default_value_t = CheckFormat::Human)]
    pub format: CheckFormat,
    /// Leave out a check, by id or name (`CP103`, `care-team-role-unused`; repeatable).
    #[arg(long, value_name = "CHECK")]
    pub skip: Vec<String>,
    /// Also run the live checks against this target (read only, as `plan` reads it), and
    /// read variables from its Values.
    #[arg(long, short = 't')]
    pub target: Option<String>,
    /// Set a manifest variable, `NAME=VALUE` (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = super::parse_var)]
    pub vars: Vec<(String, String)>,
}

/// `check --format`: the diagnostic formats, and SARIF.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckFormat {
    /// With advice under each finding.
    Human,
    /// One `file:line:col: severity: ID name: message` line per finding.
    Plain,
    /// GitHub Actions annotations.
    Github,
    /// One JSON document on stdout (schema/check.schema.json).
    Json,
    /// A SARIF 2.1.0 log on stdout, for code scanning.
    Sarif,
}

impl CheckFormat {
    /// The format for manifest load errors (SARIF carries findings only: those print as
    /// human diagnostics on stderr).
    fn diagnostics(self) -> DiagnosticFormat {
        match self {
            CheckFormat::Human | CheckFormat::Sarif => DiagnosticFormat::Human,
            CheckFormat::Plain => DiagnosticFormat::Plain,
            CheckFormat::Github => DiagnosticFormat::Github,
            CheckFormat::Json => DiagnosticFormat::Json,
        }
    }

    /// Whether stdout carries one document (notes stay off stderr noise-free either way).
    fn machine(self) -> bool {
        matches!(self, CheckFormat::Json | CheckFormat::Sarif)
    }
}

pub async fn run(a: Args) -> u8 {
    if let Some(bad) = a.skip.iter().find(|s| !check::is_check(s)) {
        err(&format!(
            "error: '{bad}' is not a check; the checks are {}\n",
            check::CHECKS
                .iter()
                .map(|c| format!("{} {}", c.0, c.1))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        return super::EXIT_USAGE;
    }
    let dir = default_dir(a.dir);
    let live = a.target.is_some();
    let opts = crate::manifest::LoadOptions {
        target: a.target.clone(),
        vars: a.vars,
    };
    let m = match ops::validate(&dir, &opts) {
        Ok(m) => m,
        Err(LoadError::Invalid(e)) => {
            print_diagnostics(&e, &dir, a.format.diagnostics());
            return EXIT_ERROR;
        }
        Err(e) => {
            err(&format!("error: {e}\n"));
            return EXIT_ERROR;
        }
    };
    if !a.format.machine() {
        print_skipped(&m);
    }
    let mut findings = offline(&m);
    if live {
        let target = match crate::target::resolve(&dir, &m.project, a.target.as_deref()) {
            Ok(t) => t,
            Err(e) => {
                print_error(&crate::ops::OpsError::from(e), &dir);
                return EXIT_ERROR;
            }
        };
        match ops::check_live(&m, &target).await {
            Ok(more) => findings.extend(more),
            Err(e) => {
                print_error(&e, &dir);
                return EXIT_ERROR;
            }
        }
        check::sort(&mut findings);
    }
    let findings = check::without(findings, &a.skip);
    match a.format {
        CheckFormat::Sarif => out(&sarif(&findings, &base(&dir))),
        f => print(&findings, &dir, f.diagnostics(), false),
    }
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    if !a.format.machine() {
        let sent = if live {
            "the target was read, nothing was written"
        } else {
            "nothing was sent to any server"
        };
        note(&format!(
            "{} finding(s): {errors} error(s), {} warning(s), {} note(s); {sent}.\n",
            findings.len(),
            findings
                .iter()
                .filter(|f| f.severity == Severity::Warning)
                .count(),
            findings
                .iter()
                .filter(|f| f.severity == Severity::Info)
                .count(),
        ));
    }
    if errors > 0 { EXIT_ERROR } else { EXIT_OK }
}

/// The offline findings for loaded manifests, with the project's levels and markers.
pub fn offline(m: &crate::manifest::Manifests) -> Vec<Finding> {
    check::configure(check::run_with(&m.desired, &check::inputs(m)), m)
}

/// Print findings in `format` (`as_warnings`: every one as a warning, as `validate`
/// shows them). Human and plain go to stderr, GitHub annotations and JSON to stdout.
pub fn print(findings: &[Finding], dir: &Path, format: DiagnosticFormat, as_warnings: bool) {
    let b = base(dir);
    let sev = |f: &Finding| {
        if as_warnings {
            Severity::Warning
        } else {
            f.severity
        }
    };
    match format {
        DiagnosticFormat::Json => out(&json(findings, &b)),
        DiagnosticFormat::Github => out(&github(findings, &b, sev)),
        DiagnosticFormat::Plain => err(&plain(findings, &b, sev)),
        DiagnosticFormat::Human => {
            let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            err(&human(findings, &b, sev, color))
        }
    }
}

pub(crate) fn base(dir: &Path) -> String {
    let d = dir.display().to_string();
    if d == "." || d.is_empty() {
        String::new()
    } else {
        format!("{}/", d.trim_end_matches('/'))
    }
}

/// One `file:line:col: severity: ID slug: message (help: ...)` line per finding.
pub fn plain(findings: &[Finding], base: &str, sev: impl Fn(&Finding) -> Severity) -> String {
    let mut s = String::new();
    for f in findings {
        let _ = writeln!(
            s,
            "{base}{}: {}: {} {}: {} (help: {})",
            f.source,
            sev(f),
            f.id,
            f.slug,
            f.message,
            f.help
        );
    }
    s
}

/// Two lines per finding: where and what, then what to do.
pub fn human(
    findings: &[Finding],
    base: &str,
    sev: impl Fn(&Finding) -> Severity,
    color: bool,
) -> String {
    let mut s = String::new();
    for f in findings {
        let level = sev(f);
        let tag = if color {
            let c = match level {
                Severity::Error => "31",
                Severity::Warning => "33",
                Severity::Info => "36",
            };
            format!("\x1b[1;{c}m{level}\x1b[0m")
        } else {
            level.to_string()
        };
        let _ = writeln!(
            s,
            "{tag}[{} {}]: {}\n  --> {base}{}\n  help: {}",
            f.id, f.slug, f.message, f.source, f.help
        );
    }
    s
}

/// GitHub Actions annotations (`::error`, `::warning`, `::notice`).
pub fn github(findings: &[Finding], base: &str, sev: impl Fn(&Finding) -> Severity) -> String {
    let data = |s: &str| {
        s.replace('%', "%25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
    };
    let prop = |s: &str| data(s).replace(':', "%3A").replace(',', "%2C");
    let mut s = String::new();
    for f in findings {
        let level = match sev(f) {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "notice",
        };
        let _ = writeln!(
            s,
            "::{level} file={},line={},col={},title={}::{}",
            prop(&format!("{base}{}", f.source.file)),
            f.source.line,
            f.source.col,
            prop(&format!("{} {}", f.id, f.slug)),
            data(&format!("{} (help: {})", f.message, f.help))
        );
    }
    s
}

/// `{"findings": [{id, slug, severity, file, line, col, message, help}], "errors",
/// "warnings", "infos"}` ([`check::report::CheckReport`], `schema/check.schema.json`).
pub fn json(findings: &[Finding], base: &str) -> String {
    let mut s = serde_json::to_string_pretty(&check::report::report(findings, base)).expect("json");
    s.push('\n');
    s
}

/// A SARIF 2.1.0 log of the findings ([`check::report::sarif`]).
pub fn sarif(findings: &[Finding], base: &str) -> String {
    let log = check::report::sarif(findings, base, env!("CARGO_PKG_VERSION"));
    let mut s = serde_json::to_string_pretty(&log).expect("json");
    s.push('\n');
    s
}
