//! The command line: one file per subcommand, each mapping flags onto an operation in
//! [`crate::ops`] and its result onto a renderer and an exit code. Nothing here decides
//! what changes; nothing in `ops` prints.

pub mod apply;
pub mod check;
pub mod drift;
pub mod export;
pub mod help;
pub mod import;
pub mod init;
pub mod meta;
pub mod plan;
pub mod plugin;
pub mod reconcile;
pub mod schema;
pub mod show;
pub mod test;
pub mod validate;
pub mod watch;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use clap::{Parser, Subcommand, ValueEnum};

use crate::manifest::{LoadError, ManifestErrors};
use crate::ops::OpsError;
use crate::render;

pub const EXIT_OK: u8 = 0;
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_CHANGES: u8 = 2;
/// `apply --plan`: the configuration was applied, and the effects of one or more rules
/// were held back by a guard (deviation from the reviewed preview, or blast radius).
pub const EXIT_HELD: u8 = 3;
/// A usage error (unknown flag, missing or invalid argument): `EX_USAGE` of sysexits.h,
/// so that it is never mistaken for the 2 ("changes", "drift") CI jobs act on.
pub const EXIT_USAGE: u8 = 64;

/// `careplane --version`: the crate version and the git commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CAREPLANE_GIT_COMMIT"),
    ")"
);

/// Team-based-care configuration as code: plan and apply roles, teams and staff role
/// assignments from YAML manifests to a FHIR server.
#[derive(Debug, Parser)]
#[command(
    name = "careplane",
    version = VERSION,
    about,
    long_about = None,
    after_long_help = help::root(),
    propagate_version = true,
)]
pub struct Cli {
    /// Print only results and errors, no notes (like CAREPLANE_LOG=quiet).
    #[arg(
        long,
        short = 'q',
        global = true,
        conflicts_with = "verbose",
        display_order = 900
    )]
    pub quiet: bool,
    /// Also log every HTTP attempt to stderr (like CAREPLANE_LOG=requests).
    #[arg(long, short = 'v', global = true, display_order = 901)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check manifests offline: schema, duplicates, references. Exit 0 clean, 1 on errors.
    #[command(after_long_help = help::validate())]
    Validate(validate::Args),
    /// Check the care model (unowned responsibilities, empty teams, shadowed rules, ...); live with --target.
    #[command(after_long_help = help::check())]
    Check(check::Args),
    /// Print the JSON Schema of manifests (or, with --plan, of plan files).
    #[command(after_long_help = help::schema())]
    Schema(schema::Args),
    /// Read live state and show what apply would change, and why.
    #[command(after_long_help = help::plan())]
    Plan(plan::Args),
    /// Make the live state match the manifests (or apply a saved plan).
    #[command(after_long_help = help::apply())]
    Apply(apply::Args),
    /// Print a saved plan (from `plan --out`) as text, JSON or Markdown.
    #[command(after_long_help = help::show())]
    Show(show::Args),
    /// Report where the target differs from the manifests. Exit 0 in sync, 2 drift, 1 error.
    #[command(after_long_help = help::drift())]
    Drift(drift::Args),
    /// Write manifests for what is live now (to start managing an existing organisation).
    #[command(after_long_help = help::export())]
    Export(export::Args),
    /// Take ownership of existing objects the manifests describe, without recreating them.
    #[command(after_long_help = help::import())]
    Import(import::Args),
    /// Apply the effects of the rules once (routing, memberships, care teams), for a scheduler.
    #[command(after_long_help = help::reconcile())]
    Reconcile(reconcile::Args),
    /// Keep the effects of the rules current (new tasks routed, memberships, care teams).
    #[command(after_long_help = help::watch())]
    Watch(watch::Args),
    /// Run the rule tests (kind: RuleTest) offline against their fixtures.
    #[command(after_long_help = help::test())]
    Test(test::Args),
    /// Start a project: a project file, a first team, Values, the schema and a CI workflow.
    #[command(after_long_help = help::init())]
    Init(init::Args),
    /// Build the rules into a Canvas plugin (routing and patient groups run inside Canvas).
    #[command(after_long_help = help::plugin_group(), subcommand_required = true)]
    Plugin(plugin::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_long_help = help::completions())]
    Completions(meta::CompletionsArgs),
    /// Print the manual page (roff), or write one page per command into a directory.
    #[command(after_long_help = help::man())]
    Man(meta::ManArgs),
}

/// How much careplane says on stderr besides results and errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// `-q` / `CAREPLANE_LOG=quiet`: results and errors only.
    Quiet = 0,
    /// Notes and summaries too (the default).
    Normal = 1,
    /// `-v` / `CAREPLANE_LOG=requests`: the request log too.
    Verbose = 2,
}

static VERBOSITY: AtomicU8 = AtomicU8::new(Verbosity::Normal as u8);

/// The verbosity the command line and `CAREPLANE_LOG` ask for (flags win).
pub fn verbosity_from(quiet: bool, verbose: bool, log: Option<&str>) -> Verbosity {
    let has = |w: &str| log.is_some_and(|l| l.split(',').any(|x| x.trim() == w));
    if quiet {
        Verbosity::Quiet
    } else if verbose || has("requests") {
        Verbosity::Verbose
    } else if has("quiet") {
        Verbosity::Quiet
    } else {
        Verbosity::Normal
    }
}

pub fn set_verbosity(v: Verbosity) {
    VERBOSITY.store(v as u8, Ordering::Relaxed);
}

pub fn verbosity() -> Verbosity {
    match VERBOSITY.load(Ordering::Relaxed) {
        0 => Verbosity::Quiet,
        1 => Verbosity::Normal,
        _ => Verbosity::Verbose,
    }
}

/// The `clap::Command` careplane parses with (completions and man pages are made from it).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Parse the command line. `--help` and `--version` print and give `Err(0)`; a usage
/// error prints clap's message (to stderr, through the output edge) and gives
/// `Err(EXIT_USAGE)`, never 2, which `--detailed-exitcode` and `drift` mean as "changes".
pub fn parse<I, T>(args: I) -> Result<Cli, u8>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    use clap::error::ErrorKind;
    match Cli::try_parse_from(args) {
        Ok(cli) => {
            let log = std::env::var("CAREPLANE_LOG").ok();
            set_verbosity(verbosity_from(cli.quiet, cli.verbose, log.as_deref()));
            Ok(cli)
        }
        Err(e) => {
            let text = e.render().to_string();
            match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    out(&text);
                    Err(EXIT_OK)
                }
                _ => {
                    err(&text);
                    Err(EXIT_USAGE)
                }
            }
        }
    }
}

/// A note for people on stderr (a summary, a hint); `-q` silences it.
pub fn note(text: &str) {
    if verbosity() >= Verbosity::Normal {
        err(text)
    }
}

/// Where to plan/apply: shared by plan and apply.
#[derive(Debug, clap::Args)]
pub struct TargetArgs {
    /// A target named in the project file (careplane.yaml).
    #[arg(long, short = 't')]
    pub target: Option<String>,
    /// An ad-hoc generic FHIR R4 server (bearer token from CAREPLANE_TOKEN, if set).
    // the value is never shown in --help (a URL may carry a password)
    #[arg(
        long,
        env = "CAREPLANE_SERVER",
        hide_env_values = true,
        conflicts_with = "target"
    )]
    pub server: Option<String>,
    /// Set a manifest variable, `NAME=VALUE` (repeatable; wins over the environment and
    /// the target's Values).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
}

pub(crate) fn parse_var(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not NAME=VALUE"))?;
    if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("'{k}' is not a variable name"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

impl TargetArgs {
    /// How manifests read for this target.
    pub fn load_options(&self) -> crate::manifest::LoadOptions {
        crate::manifest::LoadOptions {
            target: self.target.clone(),
            vars: self.vars.clone(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DiagnosticFormat {
    /// With the offending YAML lines.
    Human,
    /// One `file:line:col: error: …` line per problem.
    Plain,
    /// GitHub Actions annotations.
    Github,
    /// One JSON document on stdout (`validate` only).
    Json,
}

pub async fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Validate(a) => validate::run(a),
        Command::Check(a) => check::run(a).await,
        Command::Schema(a) => schema::run(a),
        Command::Plan(a) => plan::run(a).await,
        Command::Apply(a) => apply::run(a).await,
        Command::Drift(a) => drift::run(a).await,
        Command::Export(a) => export::run(a).await,
        Command::Import(a) => import::run(a).await,
        Command::Reconcile(a) => reconcile::run(a).await,
        Command::Watch(a) => watch::run(a).await,
        Command::Test(a) => test::run(a),
        Command::Plugin(a) => plugin::run(a).await,
        Command::Show(a) => show::run(a),
        Command::Init(a) => init::run(a),
        Command::Completions(a) => meta::completions(a),
        Command::Man(a) => meta::man(a),
    }
}

/// The width of the progress line open on the terminal (stderr), 0 for none: the next
/// output blanks it first. Spaces, not ANSI codes, so it works with NO_COLOR too.
static PROGRESS_LINE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn close_progress_line() {
    let width = PROGRESS_LINE.swap(0, std::sync::atomic::Ordering::SeqCst);
    if width > 0 {
        crate::output::stderr(&format!("\r{}\r", " ".repeat(width)));
    }
}

/// Show `text` as the one updating progress line on a terminal (stderr).
pub fn progress_line(text: &str) {
    let width = text.chars().count();
    let before = PROGRESS_LINE.swap(width, std::sync::atomic::Ordering::SeqCst);
    let pad = " ".repeat(before.saturating_sub(width));
    crate::output::stderr(&format!("\r{text}{pad}"));
}

/// Write to stdout (through [`crate::output`], which redacts credentials).
pub fn out(text: &str) {
    close_progress_line();
    crate::output::stdout(text)
}

/// Write to stderr (through [`crate::output`], which redacts credentials).
pub fn err(text: &str) {
    close_progress_line();
    crate::output::stderr(text)
}

fn base(dir: &Path) -> String {
    let d = dir.display().to_string();
    if d == "." || d.is_empty() {
        String::new()
    } else {
        format!("{}/", d.trim_end_matches('/'))
    }
}

/// Print manifest diagnostics to stderr in the chosen format.
pub fn print_diagnostics(errors: &ManifestErrors, dir: &Path, format: DiagnosticFormat) {
    let b = base(dir);
    match format {
        DiagnosticFormat::Github => out(&render::diagnostics::github(errors, &b)),
        DiagnosticFormat::Plain => err(&render::diagnostics::plain(errors, &b)),
        DiagnosticFormat::Json => {
            out(&render::diagnostics::json(errors, &b));
            return;
        }
        DiagnosticFormat::Human => {
            let tty = std::io::stderr().is_terminal();
            if tty {
                let color = std::env::var_os("NO_COLOR").is_none();
                err(&render::diagnostics::fancy(errors, &b, color));
            } else {
                err(&render::diagnostics::plain(errors, &b));
            }
        }
    }
    // what was skipped as another tool's is often why a document seems missing
    for s in &errors.skipped {
        note(&format!("note: skipped {s}\n"));
    }
    err(&format!(
        "{} error(s); nothing was sent to any server.\n",
        errors.diagnostics.len()
    ));
}

/// Print an operation error as sentences, with its causes.
pub fn print_error(e: &OpsError, dir: &Path) {
    match e {
        OpsError::Load(LoadError::Invalid(m)) | OpsError::Unplannable(m) => {
            print_diagnostics(m, dir, DiagnosticFormat::Human)
        }
        other => {
            let mut msg = format!("error: {other}\n");
            let mut src = std::error::Error::source(other);
            while let Some(s) = src {
                let text = s.to_string();
                if !msg.contains(&text) {
                    msg.push_str(&format!("  caused by: {text}\n"));
                }
                src = s.source();
            }
            err(&msg);
        }
    }
}

/// Ask on the terminal before writing, unless `auto_approve`. Without a terminal (CI),
/// refuse and say how to proceed. Returns whether to go ahead.
pub fn confirmed(auto_approve: bool, command: &str, question: &str) -> bool {
    use std::io::BufRead;
    if auto_approve {
        return true;
    }
    if !std::io::stdin().is_terminal() {
        err(&format!(
            "error: {command} asks for confirmation, and there is no terminal to ask on; review the plan and pass --auto-approve\n"
        ));
        return false;
    }
    err(&format!("{question} Only 'yes' is accepted: "));
    let mut line = String::new();
    let yes = std::io::stdin().lock().read_line(&mut line).is_ok() && line.trim() == "yes";
    if !yes {
        err(&format!("{command} cancelled; nothing was changed.\n"));
    }
    yes
}

/// Write a report file (`apply --report FILE`). Every report file careplane writes goes
/// through here, so that one place decides what may reach a file.
pub fn write_report(path: &Path, text: &str) -> std::io::Result<()> {
    crate::output::write_file(path, text)
}

pub fn default_dir(dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(|| PathBuf::from("."))
}

/// One note per file whose documents were skipped because they are not careplane's
/// (another `apiVersion`, or none and no careplane kind).
pub fn print_skipped(m: &crate::manifest::Manifests) {
    for s in &m.skipped {
        note(&format!("note: skipped {s}\n"));
    }
}

/// Which signal asked a run (apply, reconcile, watch) to stop: 130 for SIGINT (Ctrl-C), 143 for SIGTERM.
pub(crate) async fn interrupted() -> u8 {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return 130;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => 130,
            _ = term.recv() => 143,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        130
    }
}
