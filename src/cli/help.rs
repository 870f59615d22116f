//! The long help (`careplane <command> --help`): examples, exit codes and the environment
//! variables each command reads. Short help (`-h`) stays one screen.

/// An environment variable and what careplane does with it.
const ENV: &[(&str, &str)] = &[
    (
        "CAREPLANE_SERVER",
        "an ad-hoc generic FHIR R4 server, like --server (refused when the project file declares targets)",
    ),
    (
        "CAREPLANE_TOKEN",
        "bearer token for --server / CAREPLANE_SERVER (never printed)",
    ),
    (
        "CANVAS_CLIENT_ID",
        "OAuth2 client id of a Canvas target whose auth names no other variable",
    ),
    (
        "CANVAS_CLIENT_SECRET",
        "OAuth2 client secret of a Canvas target whose auth names no other variable (never printed)",
    ),
    (
        "CAREPLANE_PSEUDONYM_KEY",
        "key of the patient pseudonyms in plans with patient groups; the same key must plan and apply a saved plan (never printed)",
    ),
    (
        "CAREPLANE_LOG",
        "comma-separated: `quiet` (like -q), `requests` (one stderr line per HTTP attempt, like -v)",
    ),
    (
        "CAREPLANE_MAX_MANIFEST_BYTES",
        "largest manifest file read (default 8MiB)",
    ),
    (
        "CAREPLANE_LOCK_TIMEOUT",
        "seconds a writer waits for a file store's lock (default 120)",
    ),
];

/// Variables every command that reads a target uses.
const TARGET_ENV: &[&str] = &[
    "CAREPLANE_SERVER",
    "CAREPLANE_TOKEN",
    "CANVAS_CLIENT_ID",
    "CANVAS_CLIENT_SECRET",
    "CAREPLANE_PSEUDONYM_KEY",
    "CAREPLANE_LOG",
    "CAREPLANE_MAX_MANIFEST_BYTES",
];

fn page(examples: &[(&str, &str)], exits: &[(&str, &str)], env: &[&str], extra: &str) -> String {
    let mut s = String::from("Examples:\n");
    for (cmd, what) in examples {
        s.push_str(&format!("  # {what}\n  {cmd}\n\n"));
    }
    s.push_str("Exit codes:\n");
    for (code, what) in exits {
        s.push_str(&format!("  {code:<3} {what}\n"));
    }
    s.push_str("  64  usage error (unknown flag, missing or invalid argument)\n");
    if !env.is_empty() {
        s.push_str("\nEnvironment:\n");
        for name in env {
            let what = ENV
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, w)| *w)
                .unwrap_or_default();
            s.push_str(&format!("  {name}\n      {what}\n"));
        }
    }
    if !extra.is_empty() {
        s.push('\n');
        s.push_str(extra);
    }
    s
}

fn target_env_and(more: &[&'static str]) -> Vec<&'static str> {
    let mut v = TARGET_ENV.to_vec();
    v.extend_from_slice(more);
    v
}

const MANIFEST_VARS: &str = "Manifests may also read `${NAME}` from the environment (see --var).\n";

pub fn root() -> String {
    page(
        &[
            (
                "careplane init clinic",
                "start a project (file store, a first team, a CI workflow)",
            ),
            ("careplane validate clinic", "check manifests offline"),
            (
                "careplane plan clinic --out plan.json",
                "see what would change, and keep the plan",
            ),
            (
                "careplane apply clinic --plan plan.json",
                "apply exactly the reviewed plan",
            ),
        ],
        &[
            (
                "0",
                "success; `plan --detailed-exitcode`: no changes; `drift`: in sync",
            ),
            (
                "1",
                "error (invalid manifests, unreachable server, failed write, stale plan)",
            ),
            (
                "2",
                "`plan --detailed-exitcode`: changes; `drift`: the target drifted",
            ),
        ],
        &[
            "CAREPLANE_SERVER",
            "CAREPLANE_TOKEN",
            "CANVAS_CLIENT_ID",
            "CANVAS_CLIENT_SECRET",
            "CAREPLANE_PSEUDONYM_KEY",
            "CAREPLANE_LOG",
            "CAREPLANE_MAX_MANIFEST_BYTES",
            "CAREPLANE_LOCK_TIMEOUT",
        ],
        "`careplane <command> --help` shows each command's examples and variables.\n",
    )
}

pub fn check() -> String {
    page(
        &[
            (
                "careplane check clinic",
                "the care-model findings, with advice",
            ),
            (
                "careplane check clinic --format github",
                "annotations in GitHub Actions",
            ),
            (
                "careplane check clinic --skip CP103",
                "leave out one check (by id or name)",
            ),
            (
                "careplane check clinic --target staging",
                "also the live checks (reads staging, writes nothing)",
            ),
        ],
        &[
            (
                "0",
                "no error-level finding (warnings and notes may be listed)",
            ),
            (
                "1",
                "an error-level finding, the manifests are invalid, or the target cannot be read",
            ),
        ],
        &["CAREPLANE_LOG", "CAREPLANE_MAX_MANIFEST_BYTES"],
        MANIFEST_VARS,
    )
}

pub fn validate() -> String {
    page(
        &[
            ("careplane validate clinic", "check a manifest directory"),
            (
                "careplane validate clinic --format github",
                "annotations in GitHub Actions",
            ),
            (
                "careplane validate clinic --format json",
                "a machine-readable result",
            ),
            (
                "careplane validate clinic --target staging",
                "check with staging's Values",
            ),
        ],
        &[
            (
                "0",
                "the manifests are valid (care-model warnings may be listed)",
            ),
            (
                "1",
                "they are not (every problem is listed), or a care-model check found an error",
            ),
        ],
        &["CAREPLANE_LOG", "CAREPLANE_MAX_MANIFEST_BYTES"],
        MANIFEST_VARS,
    )
}

pub fn schema() -> String {
    page(
        &[
            (
                "careplane schema > careplane.schema.json",
                "the manifest JSON Schema, for editors",
            ),
            ("careplane schema --plan", "the schema of plan files"),
        ],
        &[("0", "printed")],
        &[],
        "",
    )
}

pub fn plan() -> String {
    page(
        &[
            (
                "careplane plan clinic",
                "plan against the project's default target",
            ),
            (
                "careplane plan clinic --target staging --out plan.json",
                "save the plan for `apply --plan`",
            ),
            (
                "careplane plan clinic --format markdown --detailed-exitcode > plan.md",
                "a pull-request comment; exit 2 when something would change",
            ),
            (
                "CAREPLANE_TOKEN=… careplane plan teams --server https://fhir.example.org/r4",
                "an ad-hoc server, no project file",
            ),
        ],
        &[
            ("0", "planned (with --detailed-exitcode: no changes)"),
            ("1", "error: nothing was planned"),
            ("2", "with --detailed-exitcode: the plan has changes"),
        ],
        TARGET_ENV,
        MANIFEST_VARS,
    )
}

pub fn apply() -> String {
    page(
        &[
            ("careplane apply clinic", "plan, confirm with 'yes', apply"),
            (
                "careplane apply clinic --plan plan.json --report apply-report.json",
                "apply a reviewed plan in CI, keep the record",
            ),
            (
                "careplane apply clinic --auto-approve --format json",
                "no prompt; the apply record as JSON on stdout",
            ),
        ],
        &[
            (
                "0",
                "everything planned was written (or there was nothing to do)",
            ),
            (
                "1",
                "error: a write failed, the saved plan is stale or refused, or no confirmation",
            ),
            (
                "3",
                "--plan: configuration applied; the effects of some rules held back (they moved beyond maxDeviation from the reviewed preview, or over maxRemovalShare)",
            ),
        ],
        &target_env_and(&["CAREPLANE_LOCK_TIMEOUT"]),
        MANIFEST_VARS,
    )
}

pub fn drift() -> String {
    page(
        &[
            (
                "careplane drift clinic --target prod",
                "is prod still what the manifests say?",
            ),
            (
                "careplane drift clinic --format markdown > drift.md",
                "the body of a drift issue",
            ),
        ],
        &[
            ("0", "in sync"),
            ("1", "error"),
            ("2", "the target has drifted"),
        ],
        TARGET_ENV,
        MANIFEST_VARS,
    )
}

pub fn export() -> String {
    page(
        &[
            (
                "careplane export clinic --target prod --out exported",
                "write manifests for what prod holds",
            ),
            (
                "careplane export --server https://fhir.example.org/r4 --project clinic --out exported",
                "no project file yet",
            ),
            (
                "careplane export clinic --out exported --format json",
                "the list of files written, as JSON",
            ),
        ],
        &[
            ("0", "written"),
            (
                "1",
                "error (OUT already holds manifests, unreachable server)",
            ),
        ],
        TARGET_ENV,
        "",
    )
}

pub fn import() -> String {
    page(
        &[(
            "careplane import clinic --target prod",
            "take over same-named teams careplane does not own yet",
        )],
        &[
            ("0", "imported (or nothing to import)"),
            ("1", "error, or no confirmation"),
        ],
        &target_env_and(&["CAREPLANE_LOCK_TIMEOUT"]),
        MANIFEST_VARS,
    )
}

pub fn watch() -> String {
    page(
        &[
            (
                "careplane watch clinic --target prod --interval 60",
                "keep routing, memberships and care teams current, a pass every minute",
            ),
            (
                "careplane watch clinic --full-every 20 --health 0.0.0.0:8080",
                "a full recompute every 20 passes; a health check for probes",
            ),
            ("careplane watch clinic --once", "one pass and a summary"),
        ],
        &[
            ("0", "--once finished"),
            ("1", "error before the first pass, or --once's pass failed"),
            (
                "130",
                "stopped by SIGINT (Ctrl-C): the writes in flight finished, a summary was printed",
            ),
            ("143", "stopped by SIGTERM: likewise"),
        ],
        &target_env_and(&["CAREPLANE_LOCK_TIMEOUT"]),
        MANIFEST_VARS,
    )
}

pub fn reconcile() -> String {
    page(
        &[
            (
                "careplane reconcile --effects clinic --target prod",
                "route new tasks, bring memberships and care teams in line (never configuration)",
            ),
            (
                "careplane reconcile --effects clinic --report effects.json",
                "keep the record of the writes",
            ),
        ],
        &[
            (
                "0",
                "the effects are current (configuration drift is only counted: use plan / apply)",
            ),
            ("1", "error, or a write failed"),
            (
                "3",
                "the other effects were applied, and some were held back by the removal guard (maxRemovalShare; --allow-mass-removal lets them through)",
            ),
            (
                "130",
                "interrupted by SIGINT: the writes in flight finished, a summary was printed",
            ),
            ("143", "interrupted by SIGTERM: likewise"),
        ],
        &target_env_and(&["CAREPLANE_LOCK_TIMEOUT"]),
        MANIFEST_VARS,
    )
}

pub fn test() -> String {
    page(
        &[
            ("careplane test clinic", "run the rule tests"),
            ("careplane test clinic --format json", "the results as JSON"),
        ],
        &[
            (
                "0",
                "every rule test passed (or there are none: a note says so)",
            ),
            ("1", "a rule test failed, or the manifests are invalid"),
        ],
        &["CAREPLANE_LOG", "CAREPLANE_MAX_MANIFEST_BYTES"],
        "",
    )
}

pub fn show() -> String {
    page(
        &[
            ("careplane show plan.json", "read a saved plan"),
            (
                "careplane show plan.json --format markdown",
                "as a pull-request comment",
            ),
        ],
        &[("0", "shown"), ("1", "the file is not a readable plan")],
        &[],
        "Patient ids never appear: a saved plan holds counts and pseudonyms only.\n",
    )
}

pub fn init() -> String {
    page(
        &[
            ("careplane init clinic", "a new project in ./clinic"),
            ("careplane init", "a new project in the current directory"),
        ],
        &[
            ("0", "written"),
            ("1", "DIR already holds manifests (nothing is overwritten)"),
        ],
        &[],
        "Writes careplane.yaml (a file-store target), teams.yaml, values.yaml, the schema file\n\
         careplane.schema.json (the manifests' editor modeline points at it) and\n\
         .github/workflows/careplane.yml. Then: careplane validate DIR && careplane plan DIR\n",
    )
}

pub fn completions() -> String {
    page(
        &[
            (
                "careplane completions bash > /etc/bash_completion.d/careplane",
                "bash",
            ),
            (
                "careplane completions zsh > \"${fpath[1]}/_careplane\"",
                "zsh",
            ),
            (
                "careplane completions fish > ~/.config/fish/completions/careplane.fish",
                "fish",
            ),
        ],
        &[("0", "printed")],
        &[],
        "",
    )
}

pub fn man() -> String {
    page(
        &[
            ("careplane man | man -l -", "read the manual page"),
            (
                "careplane man --out /usr/local/share/man/man1",
                "install a page per command",
            ),
        ],
        &[("0", "written"), ("1", "cannot write a page")],
        &[],
        "",
    )
}

pub fn plugin_group() -> String {
    page(
        &[
            (
                "careplane plugin build clinic --out careplane_clinic",
                "write the rules as a Canvas plugin package",
            ),
            (
                "careplane plugin build clinic --target canvas --out careplane_clinic",
                "with team and patient-group ids read from a Canvas target",
            ),
        ],
        &[("0", "done"), ("1", "see the subcommand's --help")],
        &[],
        "Subcommands: build, status, install. See `careplane plugin build --help`.\n",
    )
}

pub fn plugin() -> String {
    page(
        &[
            (
                "careplane plugin build clinic --out careplane_clinic",
                "write the package; teams are looked up by name inside Canvas, patient groups are left alone",
            ),
            (
                "careplane plugin build clinic --target canvas --out careplane_clinic",
                "resolve team and patient-group ids from the target's live state",
            ),
            (
                "canvas validate careplane_clinic && canvas install careplane_clinic",
                "check and install it with the Canvas SDK's own CLI (PyPI package `canvas`)",
            ),
        ],
        &[
            ("0", "the package was written"),
            (
                "1",
                "invalid manifests, a rule the plugin cannot run inside Canvas (file:line:col), or the target could not be read",
            ),
        ],
        &[
            "CANVAS_CLIENT_ID",
            "CANVAS_CLIENT_SECRET",
            "CAREPLANE_LOG",
            "CAREPLANE_MAX_MANIFEST_BYTES",
        ],
        "The package: CANVAS_MANIFEST.json, careplane's fixed handler (handlers/careplane_rules.py,\nthe same in every build) and the rules as data (careplane_rules.json). Routing runs on\nTASK_CREATED only; patient groups on patient, consent, identifier and address events.\n",
    )
}

pub fn plugin_status() -> String {
    page(
        &[(
            "careplane plugin status clinic --target canvas",
            "is the plugin the manifests build installed, enabled and current?",
        )],
        &[
            (
                "0",
                "installed, enabled, the same version (content) the manifests build",
            ),
            (
                "1",
                "invalid manifests, or the target or its plugin API could not be read",
            ),
            (
                "2",
                "drift: not installed (or removed), changed, or disabled",
            ),
        ],
        &[
            "CANVAS_CLIENT_ID",
            "CANVAS_CLIENT_SECRET",
            "CAREPLANE_LOG",
            "CAREPLANE_MAX_MANIFEST_BYTES",
        ],
        "The plan's plugin change, in words (`careplane plan` shows the same change; `drift`\nreports it). The plugin API is the instance's /plugin-io/plugins/ (as the SDK's `canvas\nlist` reads it), on the host of the target's token URL. The plugin_version follows the\npackage's content; the rule-level diff is against the rules careplane last installed there\n(.careplane/plugins/<target>.json).\n",
    )
}

pub fn plugin_install() -> String {
    page(
        &[(
            "careplane plugin install clinic --target canvas",
            "install (or update) the plugin the manifests build, after a yes on the terminal",
        )],
        &[
            ("0", "installed, updated, or already in sync"),
            (
                "1",
                "invalid manifests, refused rules, no confirmation, or the plugin API refused",
            ),
        ],
        &[
            "CANVAS_CLIENT_ID",
            "CANVAS_CLIENT_SECRET",
            "CAREPLANE_LOG",
            "CAREPLANE_MAX_MANIFEST_BYTES",
        ],
        "The plan's plugin change, applied alone (`careplane apply` installs it with everything\nelse). As `canvas install` does: POST /plugin-io/plugins/ with the package (tar.gz), or\nPATCH /plugin-io/plugins/<name>/ when it is installed; always enabled.\n",
    )
}
