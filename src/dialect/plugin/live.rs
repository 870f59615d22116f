//! The one I/O step of `plugin build --target`: read the target's live state once and
//! resolve the FHIR ids of the teams and patient groups the manifests declare, matched
//! exactly as plan matches them (the dialect's identity: the manifest name careplane
//! recorded, or, on Canvas, which cannot hold a mark, the name the server shows). These are
//! the objects `careplane apply` writes; the plugin touches no other group.

use crate::manifest::Manifests;
use crate::observe;
use crate::ops::OpsError;
use crate::target::ResolvedTarget;
use crate::vocab::ObjectKind;
use crate::vocab::capability::Identity;

use super::Resolved;

/// Whether a target's dialect runs Canvas plugins.
pub fn runs_plugins(target: &ResolvedTarget) -> bool {
    target.dialect.capabilities().1.runs_plugins
}

pub async fn resolve(m: &Manifests, target: &ResolvedTarget) -> Result<Resolved, OpsError> {
    let observed = observe::observe(
        &target.store,
        target.dialect.as_ref(),
        &m.desired.project,
        observe::RuleReads::default(),
    )
    .await
    .map_err(OpsError::Observe)?;
    let caps = target.dialect.capabilities();
    let find = |kind: ObjectKind, name: &str, shown: &str| {
        let identity = caps.of(kind).map(|c| c.identity);
        observed
            .objects
            .iter()
            .find(|o| {
                o.kind == kind
                    && match identity {
                        Some(Identity::ManifestName) => o.name.as_deref() == Some(name),
                        _ => o.natural_key.as_deref() == Some(shown),
                    }
            })
            .map(|o| o.id.clone())
    };
    let mut r = Resolved {
        target: Some(target.info.name.clone()),
        ..Resolved::default()
    };
    for t in &m.desired.teams {
        if let Some(id) = find(ObjectKind::Team, &t.name, &t.display_name) {
            r.teams.insert(t.name.clone(), id);
        }
    }
    for g in &m.desired.patient_groups {
        if let Some(id) = find(ObjectKind::PatientGroup, &g.name, &g.display_name) {
            r.groups.insert(g.name.clone(), id);
        }
    }
    Ok(r)
}

/// One plugin as the instance's plugin API lists it (canvas_cli `list`: name, version,
/// is_enabled).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    pub name: String,
    pub version: Option<String>,
    pub enabled: bool,
}

/// How the installed plugin differs from the package the manifests build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PluginDrift {
    /// Not installed (never, or removed on the instance).
    Missing,
    /// Installed with other content (its `plugin_version` follows the content hash).
    Changed { installed: Option<String> },
    /// Installed and disabled.
    Disabled,
}

/// Pure: the drift of `built` against what the instance lists.
pub fn compare(built: &super::Package, installed: &[Installed]) -> Vec<PluginDrift> {
    let Some(live) = installed.iter().find(|p| p.name == built.name) else {
        return vec![PluginDrift::Missing];
    };
    let mut out = Vec::new();
    if live.version.as_deref() != built.rules_version() {
        out.push(PluginDrift::Changed {
            installed: live.version.clone(),
        });
    }
    if !live.enabled {
        out.push(PluginDrift::Disabled);
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum PluginApiError {
    #[error("target '{0}' is not a Canvas target in the project file")]
    NotCanvas(String),
    #[error("environment variable {0} (the target's {1}) is not set")]
    MissingEnv(String, &'static str),
    #[error("the plugin API at {url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("the plugin API could not be reached: {0}")]
    Http(#[source] reqwest::Error),
    #[error("getting a token failed: {0}")]
    Token(#[source] crate::fhir::FhirError),
    #[error("the plugin list has more than {0} pages")]
    TooManyPages(usize),
}

/// The instance's plugin API base and credentials, from the target's spec. canvas_cli
/// (`plugin_url`) calls `<host>/plugin-io/plugins/` on the EMR host, whose `/auth/token/`
/// issues the token: careplane uses the origin of the target's token URL (by default
/// `https://<instance>.canvasmedical.com`).
fn plugin_api(
    spec: &crate::manifest::types::TargetSpec,
    name: &str,
) -> Result<(String, crate::fhir::auth::Auth), PluginApiError> {
    use crate::fhir::auth::{Auth, OAuth2};
    use secrecy::SecretString;
    if spec.target_type != crate::manifest::types::TargetType::Canvas {
        return Err(PluginApiError::NotCanvas(name.into()));
    }
    let env = |var: &str, what: &'static str| {
        std::env::var(var).map_err(|_| PluginApiError::MissingEnv(var.into(), what))
    };
    let instance = spec.instance.as_deref().unwrap_or_default();
    let emr = format!("https://{instance}.canvasmedical.com");
    let oauth = spec.auth.as_ref().and_then(|a| a.oauth2.as_ref());
    if let Some(var) = spec
        .auth
        .as_ref()
        .and_then(|a| a.bearer_token_env.as_deref())
    {
        let host = spec.url.clone().unwrap_or(emr);
        return Ok((
            host,
            Auth::Bearer(SecretString::from(env(var, "bearer token")?)),
        ));
    }
    let token_url = oauth
        .and_then(|o| o.token_url.clone())
        .unwrap_or_else(|| format!("{emr}/auth/token/"));
    let host = url::Url::parse(&token_url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or(emr);
    let (id_env, secret_env, scope) = match oauth {
        Some(o) => (
            o.client_id_env.clone(),
            o.client_secret_env.clone(),
            o.scope.clone(),
        ),
        None => (
            "CANVAS_CLIENT_ID".into(),
            "CANVAS_CLIENT_SECRET".into(),
            None,
        ),
    };
    let auth = Auth::oauth2(OAuth2 {
        token_url,
        client_id: env(&id_env, "OAuth2 client id")?,
        client_secret: SecretString::from(env(&secret_env, "OAuth2 client secret")?),
        scope,
    });
    auth.register_secrets();
    Ok((host, auth))
}

/// A connection to a Canvas target's plugin API.
pub struct PluginApi {
    base: String,
    client: reqwest::Client,
    token: Option<secrecy::SecretString>,
}

impl PluginApi {
    pub async fn connect(m: &Manifests, target: &str) -> Result<PluginApi, PluginApiError> {
        let spec = m
            .project
            .targets
            .get(target)
            .ok_or_else(|| PluginApiError::NotCanvas(target.into()))?;
        let (host, auth) = plugin_api(spec, target)?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        // the token goes to the plugin API's origin only, as to a FHIR target's
        let redirects = url::Url::parse(&host)
            .map(|u| crate::fhir::http::same_origin_redirects(&u))
            .unwrap_or_else(|_| reqwest::redirect::Policy::none());
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .redirect(redirects)
            .build()
            .map_err(PluginApiError::Http)?;
        let token = auth
            .token(&client, None)
            .await
            .map_err(PluginApiError::Token)?;
        Ok(PluginApi {
            base: format!("{}/plugin-io/plugins/", host.trim_end_matches('/')),
            client,
            token,
        })
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        use secrecy::ExposeSecret;
        let req = self.client.request(method, url);
        match &self.token {
            Some(t) => req.bearer_auth(t.expose_secret()),
            None => req,
        }
    }

    async fn check(r: reqwest::Response) -> Result<reqwest::Response, PluginApiError> {
        if r.status().is_success() {
            return Ok(r);
        }
        let url = url::Url::parse(r.url().as_str())
            .map(|u| crate::target::public_url(&u))
            .unwrap_or_default();
        Err(PluginApiError::Status {
            url,
            status: r.status().as_u16(),
        })
    }

    /// The installed plugins (GET, following `next`; canvas_cli `list`).
    pub async fn list(&self) -> Result<Vec<Installed>, PluginApiError> {
        let mut next = Some(self.base.clone());
        let mut out = Vec::new();
        const MAX_PAGES: usize = 100;
        for _ in 0..MAX_PAGES {
            let Some(url) = next.take() else {
                return Ok(out);
            };
            let r = self
                .request(reqwest::Method::GET, &url)
                .send()
                .await
                .map_err(PluginApiError::Http)?;
            let body: serde_json::Value = Self::check(r)
                .await?
                .json()
                .await
                .map_err(PluginApiError::Http)?;
            for p in body["results"].as_array().into_iter().flatten() {
                out.push(Installed {
                    name: p["name"].as_str().unwrap_or_default().to_owned(),
                    version: p["version"].as_str().map(str::to_owned),
                    enabled: p["is_enabled"].as_bool().unwrap_or(false),
                });
            }
            next = body["next"].as_str().map(str::to_owned);
        }
        Err(PluginApiError::TooManyPages(MAX_PAGES))
    }

    /// Uploads the package, enabled: POST when `fresh` (canvas_cli `install`), else PATCH
    /// `<name>/` with the package (canvas_cli `update`, what `install` falls back to on 409).
    pub async fn upload(&self, p: &super::Package, fresh: bool) -> Result<(), PluginApiError> {
        let boundary = format!("careplane-{}", &p.hash[..24]);
        let mut body = Vec::new();
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"is_enabled\"\r\n\r\nTrue\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"package\"; filename=\"{}.tar.gz\"\r\nContent-Type: application/gzip\r\n\r\n",
                p.name
            )
            .as_bytes(),
        );
        body.extend_from_slice(&super::archive::tar_gz(&p.files));
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let (method, url) = if fresh {
            (reqwest::Method::POST, self.base.clone())
        } else {
            (reqwest::Method::PATCH, format!("{}{}/", self.base, p.name))
        };
        let r = self
            .request(method, &url)
            .header(
                "Content-Type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .map_err(PluginApiError::Http)?;
        Self::check(r).await.map(|_| ())
    }
}

/// The plugins installed on a Canvas target.
pub async fn installed(m: &Manifests, target: &str) -> Result<Vec<Installed>, PluginApiError> {
    PluginApi::connect(m, target).await?.list().await
}
