//! `careplane plugin build [DIR] [--target NAME] --out PLUGIN_DIR`: write the manifests'
//! routing and patient-group rules as a Canvas plugin package (see [`crate::dialect::plugin`]).
//! Exit 0 written, 1 on invalid manifests, refused rules or an unreachable target.

use std::path::{Path, PathBuf};

use super::{EXIT_ERROR, EXIT_OK, TargetArgs, default_dir, err, note, out, print_error};
use crate::dialect::plugin;
use crate::ops::OpsError;
use crate::plan::{Action, Change, Plan};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: PluginCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum PluginCommand {
    /// Write a Canvas plugin package from the routing and patient-group rules.
    #[command(after_long_help = super::help::plugin())]
    Build(BuildArgs),
    /// Compare the plugin installed on a Canvas target with the one the manifests build.
    /// Exit 0 in sync, 2 drift (missing, changed, disabled), 1 error.
    #[command(after_long_help = super::help::plugin_status())]
    Status(StatusArgs),
    /// Install or update the plugin on a Canvas target (enabled), through its plugin API.
    #[command(after_long_help = super::help::plugin_install())]
    Install(InstallArgs),
}

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    #[command(flatten)]
    pub status: StatusArgs,
    /// Do not ask for confirmation (needed without a terminal).
    #[arg(long)]
    pub auto_approve: bool,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Manifest directory (default: the current directory).
    pub dir: Option<PathBuf>,
    /// The Canvas target named in the project file.
    #[arg(long, short = 't')]
    pub target: String,
    /// Set a manifest variable, `NAME=VALUE` (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = super::parse_var)]
    pub vars: Vec<(String, String)>,
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Manifest directory (default: the current directory).
    pub dir: Option<PathBuf>,
    /// A Canvas target named in the project file: team and patient-group ids are read from
    /// it. Without it the package names teams only, and touches no patient group.
    #[arg(long, short = 't')]
    pub target: Option<String>,
    /// Set a manifest variable, `NAME=VALUE` (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = super::parse_var)]
    pub vars: Vec<(String, String)>,
    /// The plugin package directory to write (created; the files careplane writes are
    /// replaced). Name it after the plugin (`careplane_<project>`) for `canvas validate`.
    #[arg(long, value_name = "PLUGIN_DIR")]
    pub out: PathBuf,
}

pub async fn run(a: Args) -> u8 {
    match a.command {
        PluginCommand::Build(b) => build(b).await,
        PluginCommand::Status(s) => status(s).await,
        PluginCommand::Install(i) => install(i).await,
    }
}

/// The package the manifests build for `target` (ids resolved from it), or the exit code.
async fn package_for(
    dir: &Path,
    target: Option<&str>,
    vars: &[(String, String)],
) -> Result<
    (
        crate::manifest::Manifests,
        plugin::Package,
        plugin::Resolved,
    ),
    u8,
> {
    let targs = TargetArgs {
        target: target.map(str::to_owned),
        server: None,
        vars: vars.to_vec(),
    };
    let m = match crate::ops::validate(dir, &targs.load_options()) {
        Ok(m) => m,
        Err(e) => {
            print_error(&OpsError::Load(e), dir);
            return Err(EXIT_ERROR);
        }
    };
    super::print_skipped(&m);
    let resolved = match target {
        None => plugin::Resolved::default(),
        Some(name) => {
            let target = match crate::target::resolve(dir, &m.project, Some(name)) {
                Ok(t) => t,
                Err(e) => {
                    print_error(&OpsError::Target(e), dir);
                    return Err(EXIT_ERROR);
                }
            };
            if let Err(e) = crate::ops::plugin_target(&target) {
                print_error(&e, dir);
                return Err(EXIT_ERROR);
            }
            match crate::ops::plugin_ids(&m, &target).await {
                Ok(r) => r,
                Err(e) => {
                    print_error(&e, dir);
                    return Err(EXIT_ERROR);
                }
            }
        }
    };
    match plugin::build(&m, &resolved) {
        Ok(p) => Ok((m, p, resolved)),
        Err(e) => {
            print_error(&OpsError::Unplannable(e), dir);
            Err(EXIT_ERROR)
        }
    }
}

/// The plan's plugin change for `--target` (made by `ops::plan`, as `careplane plan`
/// makes it), with the plan; or the exit code.
async fn planned(s: &StatusArgs) -> Result<Planned, u8> {
    let dir = default_dir(s.dir.clone());
    let targs = TargetArgs {
        target: Some(s.target.clone()),
        server: None,
        vars: s.vars.clone(),
    };
    let (m, target) = match super::plan::prepare(&dir, &targs) {
        Ok(x) => x,
        Err(e) => {
            print_error(&e, &dir);
            return Err(EXIT_ERROR);
        }
    };
    if let Err(e) = crate::ops::plugin_target(&target) {
        print_error(&e, &dir);
        return Err(EXIT_ERROR);
    }
    let plan = match crate::ops::plan(&m, &target, false).await {
        Ok((plan, _)) => plan,
        Err(e) => {
            print_error(&e, &dir);
            return Err(EXIT_ERROR);
        }
    };
    let change = plan
        .changes
        .iter()
        .find(|c| crate::apply::is_plugin(c))
        .cloned();
    Ok(Planned {
        m,
        target,
        plan,
        change,
    })
}

/// The manifests, the target, the plan and its plugin change (if any).
struct Planned {
    m: crate::manifest::Manifests,
    target: crate::target::ResolvedTarget,
    plan: Plan,
    change: Option<Change>,
}

/// What a plugin change says, one line each (the rule-level diff indented).
fn describe(c: &Change, target: &str) -> String {
    let name = &c.target.name;
    let after = |f: &str| {
        c.fields
            .iter()
            .find(|x| x.field == f)
            .map(|x| (x.before.clone(), x.after.clone()))
    };
    let mut text = String::new();
    if c.action == Action::Create {
        text.push_str(&format!(
            "plugin {name}: not installed on target '{target}' (`careplane apply` or `careplane plugin install` installs it)\n"
        ));
    } else {
        if let Some((before, after)) = after("version") {
            let shown = |v: Option<serde_json::Value>| {
                v.and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "(none)".into())
            };
            text.push_str(&format!(
                "plugin {name}: changed: installed version {}, the manifests build {}\n",
                shown(before),
                shown(after)
            ));
        }
        if let Some((Some(serde_json::Value::Bool(false)), _)) = after("enabled") {
            text.push_str(&format!("plugin {name}: disabled on the instance\n"));
        }
    }
    for f in c.fields.iter().filter(|f| f.field.contains(" '")) {
        let what = f
            .after
            .as_ref()
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        text.push_str(&format!("  {}: {what}\n", f.field));
    }
    for n in &c.notes {
        text.push_str(&format!("  note: {n}\n"));
    }
    text
}

async fn status(a: StatusArgs) -> u8 {
    let Planned {
        m,
        target,
        plan,
        change,
    } = match planned(&a).await {
        Ok(x) => x,
        Err(code) => return code,
    };
    for w in &plan.warnings {
        out(&format!("warning: {w}\n"));
    }
    match change {
        None => {
            let why = crate::ops::plugin_unmanaged(&m, &target);
            out(&format!("{}\n", why.status(&a.target)));
            if plan.warnings.is_empty() {
                EXIT_OK
            } else {
                super::EXIT_CHANGES
            }
        }
        Some(c) if c.action == Action::NoOp => {
            let version = c.precondition.version_id.clone().unwrap_or_default();
            out(&format!(
                "plugin {}: in sync (version {version}, enabled)\n",
                c.target.name
            ));
            EXIT_OK
        }
        Some(c) => {
            out(&describe(&c, &a.target));
            super::EXIT_CHANGES
        }
    }
}

async fn build(b: BuildArgs) -> u8 {
    let dir = default_dir(b.dir);
    let (_, package, resolved) = match package_for(&dir, b.target.as_deref(), &b.vars).await {
        Ok(x) => x,
        Err(code) => return code,
    };
    let before = previous(&b.out);
    if let Err(e) = write_package(&b.out, &package) {
        err(&format!(
            "error: cannot write the plugin package to {}: {e}\n",
            b.out.display()
        ));
        return EXIT_ERROR;
    }
    if b.out.file_name().and_then(|n| n.to_str()) != Some(package.name.as_str()) {
        note(&format!(
            "note: the plugin is named {}; `canvas validate` wants the directory named the same\n",
            package.name
        ));
    }
    for u in &package.unresolved {
        note(&format!(
            "note: {u} has no id {}; the plugin {}\n",
            if resolved.target.is_some() {
                "on the target (apply first)"
            } else {
                "(no --target given)"
            },
            if u.starts_with("team") {
                "looks the team up by name inside Canvas"
            } else {
                "leaves that group alone"
            }
        ));
    }
    let change = match &before {
        None => "new package".to_owned(),
        Some((version, _)) if version.as_deref() == package.rules_version() => {
            "no change from the package that was there".to_owned()
        }
        Some(_) => "updated the package that was there".to_owned(),
    };
    out(&format!(
        "wrote plugin {} to {} ({change}): {} routing rule(s), {} patient group(s), content sha256 {}\n",
        package.name,
        b.out.display(),
        package.routing_rules,
        package.group_rules,
        package.hash
    ));
    if let Some((version, Some(old))) = &before
        && version.as_deref() != package.rules_version()
    {
        let diff = plugin::rule_diff(old, &package.rules);
        if diff.is_empty() {
            out("  rules unchanged (the handler or the manifest changed)\n");
        }
        for c in diff {
            out(&format!("  {c}\n"));
        }
    }
    EXIT_OK
}

/// The plugin version and rules of a package already in `dir`, if there is one.
fn previous(dir: &Path) -> Option<(Option<String>, Option<serde_json::Value>)> {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("CANVAS_MANIFEST.json")).ok()?)
            .ok()?;
    let version = manifest["plugin_version"].as_str().map(str::to_owned);
    let rules = std::fs::read_to_string(dir.join(plugin::DATA_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    Some((version, rules))
}

fn write_package(out_dir: &Path, p: &plugin::Package) -> std::io::Result<()> {
    for (rel, text) in &p.files {
        let path = out_dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        crate::output::write_file(&path, text)?;
    }
    Ok(())
}

async fn install(a: InstallArgs) -> u8 {
    let s = a.status;
    let Planned {
        m,
        target,
        plan,
        change,
    } = match planned(&s).await {
        Ok(x) => x,
        Err(code) => return code,
    };
    let c = match change {
        None => {
            let why = crate::ops::plugin_unmanaged(&m, &target);
            err(&format!("error: {}\n", why.install(&s.target)));
            return EXIT_ERROR;
        }
        Some(c) if c.action == Action::NoOp => {
            out(&format!(
                "plugin {}: in sync on target '{}'; nothing to do\n",
                c.target.name, s.target
            ));
            return EXIT_OK;
        }
        Some(c) => c,
    };
    let what = if c.action == Action::Create {
        "install"
    } else {
        "update"
    };
    let version = c
        .fields
        .iter()
        .find(|f| f.field == "version")
        .and_then(|f| f.after.as_ref())
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .or_else(|| c.precondition.version_id.clone())
        .unwrap_or_default();
    out(&format!(
        "plugin {}: will {what} version {version} on target '{}' (enabled)\n",
        c.target.name, s.target
    ));
    out(&describe(&c, &s.target));
    if !super::confirmed(
        a.auto_approve,
        "plugin install",
        &format!("{what} the plugin on '{}'?", s.target),
    ) {
        return EXIT_ERROR;
    }
    // the plan's plugin change alone, applied as `careplane apply` applies it
    let only = plan.with_changes(vec![c.clone()]);
    let applied =
        crate::ops::apply_recorded(&only, &target, crate::ops::agent(&m, &target), false).await;
    match applied.report.outcomes.first().map(|o| &o.result) {
        Some(Ok(_)) => {
            out(&format!("plugin {}: {what}ed\n", c.target.name));
            EXIT_OK
        }
        Some(Err(e)) => {
            err(&format!("error: {e}\n"));
            EXIT_ERROR
        }
        None => {
            err("error: nothing was written\n");
            EXIT_ERROR
        }
    }
}
