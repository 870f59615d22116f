//! Which target a command talks to: a named target from the project file, an ad-hoc
//! `--server URL`, or the embedded default (a file store inside the manifest directory).
//! Credentials are read from the environment variables the project file names.

use std::path::Path;
use std::time::Duration;

use secrecy::SecretString;

use crate::dialect::{Dialect, canvas::Canvas, r4::R4};
use crate::fhir::auth::{Auth, OAuth2};
use crate::fhir::file::FileStore;
use crate::fhir::http::{HttpStore, Limits};
use crate::fhir::{FhirError, Store};
use crate::manifest::types::{LimitsSpec, OAuth2Spec, ProjectSpec, TargetSpec, TargetType};
use crate::plan::TargetInfo;

/// Where the embedded default file store lives, relative to the manifest directory.
pub const DEFAULT_STORE: &str = ".careplane/store";
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Where, relative to the manifest directory, apply records the plugin it installed on each
/// target (`<target>.json`: version and rule digests, no patient data).
pub const PLUGIN_RECORDS: &str = ".careplane/plugins";
/// Writes per FHIR `batch` Bundle (`batchSize`).
pub const DEFAULT_BATCH_SIZE: usize = 100;

/// The file, relative to the manifest directory, where apply records the plugin it
/// installed on target `name`: `.careplane/plugins/<name>.json` where the name is a plain
/// file name, else `target-<digest of the name>.json` (a target's name is any key of the
/// project file, and must not lead the write out of the directory: `../../x`, `a/b`).
pub fn plugin_record_file(name: &str) -> std::path::PathBuf {
    use sha2::{Digest, Sha256};
    let plain = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let file = if plain {
        format!("{name}.json")
    } else {
        let h = Sha256::digest(name.as_bytes());
        let hex: String = h.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("target-{hex}.json")
    };
    Path::new(PLUGIN_RECORDS).join(file)
}

/// A URL as it may be printed: without user name, password, query or fragment.
pub fn public_url(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

pub struct ResolvedTarget {
    pub info: TargetInfo,
    pub store: Store,
    pub dialect: Box<dyn Dialect>,
    pub concurrency: usize,
    /// The target's plugin API (Canvas: `<host>/plugin-io/plugins/` on the host of its
    /// token URL, with the same credentials as its FHIR API); `None` elsewhere.
    pub plugin_api: Option<crate::dialect::plugin::live::Endpoint>,
    /// Writes per `batch` Bundle (where the dialect and the server allow batches).
    pub batch_size: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("there is no target named '{name}'{}", if known.is_empty() { " (the project file declares none)".to_owned() } else { format!("; declared targets: {}", known.join(", ")) })]
    Unknown { name: String, known: Vec<String> },
    #[error("the project declares several targets ({}) and no defaultTarget: choose one with --target", .0.join(", "))]
    Ambiguous(Vec<String>),
    #[error("environment variable {var} ({what} for target '{target}') is not set")]
    MissingEnv {
        var: String,
        what: String,
        target: String,
    },
    #[error("environment variable {var} must be a number of seconds, not '{value}'")]
    InvalidEnv { var: String, value: String },
    #[error(
        "target '{target}': the file store '{path}' leads outside the manifest directory (through a symbolic link); keep the store inside it"
    )]
    StoreOutside { target: String, path: String },
    #[error(
        "target '{target}': pluginUrl must be an http(s) address with a host and no path (only the origin is used), e.g. https://<instance>.canvasmedical.com"
    )]
    PluginUrl { target: String },
    #[error(transparent)]
    Fhir(#[from] FhirError),
}

impl ResolvedTarget {
    /// Before an apply reads: hold a file store's writer lock until [`Self::end_writes`]
    /// (or drop), so another careplane process cannot write between this plan and its
    /// writes; `on_wait` is told once if another process holds it. Servers: nothing.
    pub async fn begin_writes(&self, on_wait: &dyn Fn(&str)) -> Result<(), TargetError> {
        match &self.store {
            Store::File(s) => Ok(s.begin_session(on_wait).await?),
            Store::Http(_) => Ok(()),
        }
    }

    /// Release what [`Self::begin_writes`] took; a file store writes the session's
    /// changes here (each file once), so its error is the apply's error.
    pub async fn end_writes(&self) -> Result<(), TargetError> {
        match &self.store {
            Store::File(s) => Ok(s.end_session().await?),
            Store::Http(_) => Ok(()),
        }
    }
}

/// `CAREPLANE_LOCK_TIMEOUT`: seconds a writer waits for a file store's lock.
fn lock_timeout() -> Result<std::time::Duration, TargetError> {
    const VAR: &str = "CAREPLANE_LOCK_TIMEOUT";
    match std::env::var(VAR) {
        Err(_) => Ok(crate::fhir::file::DEFAULT_LOCK_TIMEOUT),
        Ok(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
            .ok_or(TargetError::InvalidEnv {
                var: VAR.into(),
                value: v,
            }),
    }
}

fn env(var: &str, what: &str, target: &str) -> Result<String, TargetError> {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| TargetError::MissingEnv {
            var: var.into(),
            what: what.into(),
            target: target.into(),
        })
}

/// An ad-hoc generic FHIR R4 target; bearer token from `CAREPLANE_TOKEN` if set.
pub fn server(url: &str) -> Result<ResolvedTarget, TargetError> {
    let auth = match std::env::var("CAREPLANE_TOKEN") {
        Ok(t) if !t.is_empty() => Auth::Bearer(SecretString::from(t)),
        _ => Auth::None,
    };
    let store = HttpStore::new(url, auth)?;
    Ok(ResolvedTarget {
        info: TargetInfo {
            name: "server".into(),
            dialect: R4::default().name().into(),
            endpoint: public_url(store.base()),
        },
        store: Store::Http(store),
        dialect: Box::new(R4::default()),
        concurrency: DEFAULT_CONCURRENCY,
        plugin_api: None,
        batch_size: DEFAULT_BATCH_SIZE,
    })
}

pub fn resolve(
    dir: &Path,
    project: &ProjectSpec,
    name: Option<&str>,
) -> Result<ResolvedTarget, TargetError> {
    let known: Vec<String> = project.targets.keys().cloned().collect();
    let chosen = match name.or(project.default_target.as_deref()) {
        Some(n) => Some((
            n.to_owned(),
            project.targets.get(n).ok_or_else(|| TargetError::Unknown {
                name: n.into(),
                known: known.clone(),
            })?,
        )),
        None if project.targets.len() == 1 => {
            project.targets.iter().next().map(|(k, v)| (k.clone(), v))
        }
        None if project.targets.is_empty() => None,
        None => return Err(TargetError::Ambiguous(known)),
    };
    match chosen {
        None => file_target(dir, "default", DEFAULT_STORE, DEFAULT_CONCURRENCY),
        Some((n, spec)) => from_spec(dir, &n, spec),
    }
}

/// The file store at `rel` inside the manifest directory `dir`.
fn file_target(
    dir: &Path,
    name: &str,
    rel: &str,
    concurrency: usize,
) -> Result<ResolvedTarget, TargetError> {
    let path = &dir.join(rel);
    // validate refuses a path that leaves DIR by its words; a symbolic link on the way
    // must not lead out either (the nearest existing ancestor is where it would go).
    let existing = path.ancestors().find(|p| p.exists());
    if let (Some(Ok(store)), Ok(root)) = (existing.map(Path::canonicalize), dir.canonicalize())
        && !store.starts_with(&root)
    {
        return Err(TargetError::StoreOutside {
            target: name.into(),
            path: rel.into(),
        });
    }
    Ok(ResolvedTarget {
        info: TargetInfo {
            name: name.into(),
            dialect: R4::default().name().into(),
            endpoint: path.display().to_string(),
        },
        store: Store::File(FileStore::new(path).with_lock_timeout(lock_timeout()?)),
        dialect: Box::new(R4::default()),
        concurrency,
        plugin_api: None,
        batch_size: DEFAULT_BATCH_SIZE,
    })
}

fn oauth2(name: &str, o: &OAuth2Spec, token_url: String) -> Result<Auth, TargetError> {
    Ok(Auth::oauth2(OAuth2 {
        token_url,
        client_id: env(&o.client_id_env, "OAuth2 client id", name)?,
        client_secret: SecretString::from(env(&o.client_secret_env, "OAuth2 client secret", name)?),
        scope: o.scope.clone(),
    }))
}

/// The project file's `limits`, over the defaults.
fn limits(spec: Option<&LimitsSpec>) -> Limits {
    let d = Limits::default();
    let Some(l) = spec else { return d };
    let secs = |v: Option<u64>, d: Duration| v.map(Duration::from_secs).unwrap_or(d);
    Limits {
        connect_timeout: secs(l.connect_timeout_seconds, d.connect_timeout),
        read_timeout: secs(l.read_timeout_seconds, d.read_timeout),
        request_timeout: secs(l.request_timeout_seconds, d.request_timeout),
        max_response_bytes: l.max_response_bytes.unwrap_or(d.max_response_bytes),
        max_pages: l.max_pages.unwrap_or(d.max_pages),
    }
}

fn from_spec(dir: &Path, name: &str, spec: &TargetSpec) -> Result<ResolvedTarget, TargetError> {
    let concurrency = spec
        .concurrency
        .map(|c| c as usize)
        .unwrap_or(DEFAULT_CONCURRENCY);
    let batch_size = spec
        .batch_size
        .map(|c| c as usize)
        .unwrap_or(DEFAULT_BATCH_SIZE);
    let http = |url: &str,
                auth: Auth,
                dialect: Box<dyn Dialect>,
                page: u32|
     -> Result<ResolvedTarget, TargetError> {
        let store =
            HttpStore::with_limits(url, auth, limits(spec.limits.as_ref()))?.with_page_size(page);
        Ok(ResolvedTarget {
            info: TargetInfo {
                name: name.into(),
                dialect: dialect.name().into(),
                endpoint: public_url(store.base()),
            },
            store: Store::Http(store),
            dialect,
            concurrency,
            plugin_api: None,
            batch_size,
        })
    };
    match spec.target_type {
        TargetType::File => file_target(
            dir,
            name,
            spec.path.as_deref().unwrap_or(DEFAULT_STORE),
            concurrency,
        ),
        TargetType::Fhir => {
            let url = spec.url.as_deref().unwrap_or_default();
            let auth = match &spec.auth {
                None => Auth::None,
                Some(a) => match (&a.bearer_token_env, &a.oauth2) {
                    (Some(var), _) => {
                        Auth::Bearer(SecretString::from(env(var, "bearer token", name)?))
                    }
                    (None, Some(o)) => oauth2(name, o, o.token_url.clone().unwrap_or_default())?,
                    (None, None) => Auth::None,
                },
            };
            http(
                url,
                auth,
                Box::<R4>::default(),
                spec.page_size.unwrap_or(100),
            )
        }
        TargetType::Canvas => {
            // canvas-api.md §1: the FHIR API is on fumage-<instance>, the token endpoint on
            // the EMR host <instance>.
            let instance = spec.instance.as_deref().unwrap_or_default();
            let url = spec
                .url
                .clone()
                .unwrap_or_else(|| format!("https://fumage-{instance}.canvasmedical.com"));
            let default_oauth = OAuth2Spec {
                token_url: None,
                client_id_env: "CANVAS_CLIENT_ID".into(),
                client_secret_env: "CANVAS_CLIENT_SECRET".into(),
                scope: None,
            };
            let emr = format!("https://{instance}.canvasmedical.com");
            let (auth, token_url) = match &spec.auth {
                Some(a) if a.bearer_token_env.is_some() => (
                    Auth::Bearer(SecretString::from(env(
                        a.bearer_token_env.as_deref().unwrap_or_default(),
                        "bearer token",
                        name,
                    )?)),
                    None,
                ),
                other => {
                    let o = other
                        .as_ref()
                        .and_then(|a| a.oauth2.as_ref())
                        .unwrap_or(&default_oauth);
                    let token_url = o
                        .token_url
                        .clone()
                        .unwrap_or_else(|| format!("{emr}/auth/token/"));
                    (oauth2(name, o, token_url.clone())?, Some(token_url))
                }
            };
            let plugin_host = plugin_host(name, spec, &url, token_url.as_deref())?;
            let plugin_api =
                crate::dialect::plugin::live::Endpoint::new(&plugin_host, auth.same_credentials())
                    .with_record(dir, &plugin_record_file(name));
            let dialect = Canvas::new(
                spec.retire_prefix
                    .as_deref()
                    .unwrap_or(crate::dialect::canvas::DEFAULT_RETIRE_PREFIX),
                spec.manage_all_teams.unwrap_or(false),
            );
            // canvas-api.md §1: at most 100 entries per page
            let mut target = http(&url, auth, Box::new(dialect), 100)?;
            target.plugin_api = Some(plugin_api);
            Ok(target)
        }
    }
}

/// The origin of a Canvas target's plugin API (canvas_cli `plugin_url`:
/// `<EMR host>/plugin-io/plugins/`), where the target's credentials are also sent:
/// `pluginUrl` if set; else the EMR host `https://<instance>.canvasmedical.com`; without
/// an instance (a simulator, a proxy), the host of the OAuth2 `token_url`, or with a bearer
/// token (`token_url` none) the host of the FHIR `url`.
fn plugin_host(
    name: &str,
    spec: &TargetSpec,
    url: &str,
    token_url: Option<&str>,
) -> Result<String, TargetError> {
    let origin = |u: &str| {
        url::Url::parse(u)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .map(|u| (u.origin().ascii_serialization(), u.path().to_owned()))
    };
    if let Some(p) = &spec.plugin_url {
        return match origin(p) {
            Some((o, path)) if path == "/" || path.is_empty() => Ok(o),
            _ => Err(TargetError::PluginUrl {
                target: name.into(),
            }),
        };
    }
    if let Some(instance) = spec.instance.as_deref().filter(|i| !i.is_empty()) {
        return Ok(format!("https://{instance}.canvasmedical.com"));
    }
    let fallback = token_url.unwrap_or(url);
    Ok(origin(fallback)
        .map(|(o, _)| o)
        .unwrap_or_else(|| fallback.trim_end_matches('/').to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_urls_carry_no_credentials() {
        let u = url::Url::parse("https://svc:s3cret@fhir.example.org/r4/?token=abc#x").unwrap();
        assert_eq!(public_url(&u), "https://fhir.example.org/r4/");
        let t = server("https://svc:s3cret@fhir.example.org/r4").unwrap();
        assert!(!t.info.endpoint.contains("s3cret"));
    }

    fn canvas(extra: serde_json::Value) -> TargetSpec {
        let mut v = serde_json::json!({"type": "canvas"});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    /// canvas_cli puts the plugin API on the EMR host `<instance>.canvasmedical.com`, not
    /// on the FHIR host (fumage-<instance>) nor on a custom token URL's host.
    #[test]
    fn the_plugin_api_is_on_the_emr_host_of_the_instance() {
        let fhir = "https://fumage-acme.canvasmedical.com";
        let spec = canvas(serde_json::json!({"instance": "acme"}));
        // bearer token: not the FHIR URL's origin
        assert_eq!(
            plugin_host("t", &spec, fhir, None).unwrap(),
            "https://acme.canvasmedical.com"
        );
        // OAuth2 with a login server's token URL: not the login server
        assert_eq!(
            plugin_host(
                "t",
                &spec,
                fhir,
                Some("https://login.example.org/oauth/token")
            )
            .unwrap(),
            "https://acme.canvasmedical.com"
        );
    }

    #[test]
    fn plugin_url_sets_the_plugin_api_origin() {
        let spec = canvas(serde_json::json!({
            "instance": "acme",
            "pluginUrl": "https://emr.acme.example:8443/"
        }));
        assert_eq!(
            plugin_host(
                "t",
                &spec,
                "https://fhir.acme.example",
                Some("https://login.x/t")
            )
            .unwrap(),
            "https://emr.acme.example:8443"
        );
        // credentials in the address never become part of the origin
        let spec = canvas(serde_json::json!({"pluginUrl": "https://u:pw@emr.acme.example"}));
        assert_eq!(
            plugin_host("t", &spec, "https://fhir.acme.example", None).unwrap(),
            "https://emr.acme.example"
        );
        for bad in [
            "emr.acme.example",
            "ftp://emr.acme.example",
            "https://emr.acme.example/plugin-io/plugins/",
            "not a url",
        ] {
            let spec = canvas(serde_json::json!({"pluginUrl": bad}));
            let e = plugin_host("t", &spec, "https://fhir.acme.example", None).unwrap_err();
            assert!(matches!(e, TargetError::PluginUrl { .. }), "{bad}: {e}");
            assert!(!e.to_string().contains("pw"));
        }
    }

    /// Without an instance (a simulator, a proxy) the rule is as before: the token URL's
    /// host with OAuth2, the FHIR URL's host with a bearer token.
    #[test]
    fn without_an_instance_the_plugin_api_follows_the_token_or_fhir_host() {
        let spec = canvas(serde_json::json!({"url": "http://127.0.0.1:9/fhir"}));
        assert_eq!(
            plugin_host("t", &spec, "http://127.0.0.1:9/fhir", None).unwrap(),
            "http://127.0.0.1:9"
        );
        assert_eq!(
            plugin_host(
                "t",
                &spec,
                "http://127.0.0.1:9/fhir",
                Some("http://127.0.0.1:10/auth/token/")
            )
            .unwrap(),
            "http://127.0.0.1:10"
        );
    }

    #[test]
    fn a_target_name_never_leads_the_plugin_record_out_of_its_directory() {
        let records = Path::new(PLUGIN_RECORDS);
        assert_eq!(
            plugin_record_file("canvas-prod"),
            records.join("canvas-prod.json")
        );
        for hostile in [
            "../../../etc/cron.d/x",
            "a/b",
            "..",
            ".hidden",
            "/abs",
            "a\\b",
            "",
        ] {
            let f = plugin_record_file(hostile);
            assert_eq!(f.parent(), Some(records), "{hostile:?}: {f:?}");
            let name = f.file_name().unwrap().to_str().unwrap();
            assert!(
                name.starts_with("target-") && name.ends_with(".json"),
                "{name}"
            );
        }
        assert_ne!(plugin_record_file("a/b"), plugin_record_file("a/c"));
    }
}
