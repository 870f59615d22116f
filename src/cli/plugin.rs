//! `careplane plugin build [DIR] [--target NAME] --out PLUGIN_DIR`: write the manifests'
//! routing and patient-group rules as a Canvas plugin package (see [`crate::dialect::plugin`]).
//! Exit 0 written, 1 on invalid manifests, refused rules or an unreachable target.

use std::path::{Path, PathBuf};

use super::{EXIT_ERROR, EXIT_OK, TargetArgs, default_dir, err, note, out, print_error};
use crate::dialect::plugin;
use crate::ops::OpsError;

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
            if !plugin::live::runs_plugins(&target) {
                err(&format!(
                    "error: target '{name}' is a {} target; plugins run inside Canvas only (on other targets `careplane watch` keeps the rules)\n",
                    target.info.dialect
                ));
                return Err(EXIT_ERROR);
            }
            match plugin::live::resolve(&m, &target).await {
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

/// The plugin API of `name`, as the target resolves it (printing why not, if not).
fn plugin_endpoint(
    dir: &Path,
    m: &crate::manifest::Manifests,
    name: &str,
) -> Option<plugin::live::Endpoint> {
    match crate::target::resolve(dir, &m.project, Some(name)) {
        Ok(t) => {
            let api = t.plugin_api;
            if api.is_none() {
                err(&format!(
                    "error: {}\n",
                    plugin::live::PluginApiError::NoPluginApi(name.into())
                ));
            }
            api
        }
        Err(e) => {
            print_error(&OpsError::Target(e), dir);
            None
        }
    }
}

async fn status(a: StatusArgs) -> u8 {
    let dir = default_dir(a.dir);
    let (m, package, _) = match package_for(&dir, Some(&a.target), &a.vars).await {
        Ok(x) => x,
        Err(code) => return code,
    };
    let Some(endpoint) = plugin_endpoint(&dir, &m, &a.target) else {
        return EXIT_ERROR;
    };
    let installed = match plugin::live::installed(&endpoint).await {
        Ok(i) => i,
        Err(e) => {
            err(&format!("error: {e}\n"));
            return EXIT_ERROR;
        }
    };
    let drift = plugin::live::compare(&package, &installed);
    let version = package.rules_version().unwrap_or_default();
    if drift.is_empty() {
        out(&format!(
            "plugin {}: in sync (version {version}, enabled)\n",
            package.name
        ));
        return EXIT_OK;
    }
    for d in &drift {
        out(&match d {
            plugin::live::PluginDrift::Missing => format!(
                "plugin {}: not installed on target '{}' (build it and `canvas install` it)\n",
                package.name, a.target
            ),
            plugin::live::PluginDrift::Changed { installed } => format!(
                "plugin {}: changed: installed version {}, the manifests build {version}\n",
                package.name,
                installed.as_deref().unwrap_or("(none)")
            ),
            plugin::live::PluginDrift::Disabled => {
                format!("plugin {}: disabled on the instance\n", package.name)
            }
        });
    }
    super::EXIT_CHANGES
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
    let dir = default_dir(s.dir);
    let (m, package, _) = match package_for(&dir, Some(&s.target), &s.vars).await {
        Ok(x) => x,
        Err(code) => return code,
    };
    let Some(endpoint) = plugin_endpoint(&dir, &m, &s.target) else {
        return EXIT_ERROR;
    };
    let api = match plugin::live::PluginApi::connect(&endpoint).await {
        Ok(api) => api,
        Err(e) => {
            err(&format!("error: {e}\n"));
            return EXIT_ERROR;
        }
    };
    let installed = match api.list().await {
        Ok(i) => i,
        Err(e) => {
            err(&format!("error: {e}\n"));
            return EXIT_ERROR;
        }
    };
    let drift = plugin::live::compare(&package, &installed);
    if drift.is_empty() {
        out(&format!(
            "plugin {}: in sync on target '{}'; nothing to do\n",
            package.name, s.target
        ));
        return EXIT_OK;
    }
    let fresh = drift.contains(&plugin::live::PluginDrift::Missing);
    let what = if fresh { "install" } else { "update" };
    out(&format!(
        "plugin {}: will {what} version {} on target '{}' (enabled)\n",
        package.name,
        package.rules_version().unwrap_or_default(),
        s.target
    ));
    if !super::confirmed(
        a.auto_approve,
        "plugin install",
        &format!("{what} the plugin on '{}'?", s.target),
    ) {
        return EXIT_ERROR;
    }
    match api.upload(&package, fresh).await {
        Ok(()) => {
            out(&format!("plugin {}: {what}ed\n", package.name));
            EXIT_OK
        }
        Err(e) => {
            err(&format!("error: {e}; the plugin was not changed\n"));
            EXIT_ERROR
        }
    }
}
