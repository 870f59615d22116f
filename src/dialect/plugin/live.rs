//! The plugin API of a Canvas instance (`<host>/plugin-io/plugins/`, as canvas_cli calls
//! it): its endpoint and credentials as `target.rs` resolves them, the list (observe's read
//! of the plugin kind) and the upload (apply's write). Nothing here decides.

/// One plugin as the instance's plugin API lists it (canvas_cli `list`: name, version,
/// is_enabled).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    pub name: String,
    pub version: Option<String>,
    pub enabled: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PluginApiError {
    #[error("target '{0}' has no plugin API (plugins run inside Canvas only)")]
    NoPluginApi(String),
    #[error("the plugin API at {url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("the plugin API could not be reached: {0}")]
    Http(#[source] reqwest::Error),
    #[error("getting a token failed: {0}")]
    Token(#[source] crate::fhir::FhirError),
    #[error("the plugin list has more than {0} pages")]
    TooManyPages(usize),
    #[error(
        "the plugin list's next page is at {next}, not on the plugin API's origin {api}; careplane sends the target's credentials only there and did not follow it"
    )]
    ForeignNext { next: String, api: String },
}

/// Where a target's plugin API is and the credentials for it, as `target.rs` resolves
/// them from the project file (the same variables as the target's FHIR API).
#[derive(Debug)]
pub struct Endpoint {
    /// `<host>/plugin-io/plugins/` (canvas_cli `plugin_url`).
    pub base: String,
    pub auth: crate::fhir::auth::Auth,
    /// Where careplane records the plugin it installed on this target (its version and
    /// the rules' digests), for the next plan's rule-level diff: inside the manifest
    /// directory, `.careplane/plugins/<target>.json`.
    pub record: Option<std::path::PathBuf>,
    /// The manifest directory the record must stay inside (apply refuses to write it
    /// through a symbolic link or anywhere else).
    pub record_root: Option<std::path::PathBuf>,
}

impl Endpoint {
    /// The plugin API on `host` (an origin: scheme, host, port).
    pub fn new(host: &str, auth: crate::fhir::auth::Auth) -> Endpoint {
        auth.register_secrets();
        Endpoint {
            base: format!("{}/plugin-io/plugins/", host.trim_end_matches('/')),
            auth,
            record: None,
            record_root: None,
        }
    }

    /// The same endpoint, recording what apply installs at `relative` inside the manifest
    /// directory `root`.
    pub fn with_record(mut self, root: &std::path::Path, relative: &std::path::Path) -> Endpoint {
        self.record = Some(root.join(relative));
        self.record_root = Some(root.to_path_buf());
        self
    }
}

/// A connection to a Canvas target's plugin API.
pub struct PluginApi {
    base: String,
    client: reqwest::Client,
    token: Option<secrecy::SecretString>,
}

impl PluginApi {
    pub async fn connect(endpoint: &Endpoint) -> Result<PluginApi, PluginApiError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // the token goes to the plugin API's origin only, as to a FHIR target's
        let redirects = url::Url::parse(&endpoint.base)
            .map(|u| crate::fhir::http::same_origin_redirects(&u))
            .unwrap_or_else(|_| reqwest::redirect::Policy::none());
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .redirect(redirects)
            .build()
            .map_err(PluginApiError::Http)?;
        let token = endpoint
            .auth
            .token(&client, None)
            .await
            .map_err(PluginApiError::Token)?;
        Ok(PluginApi {
            base: endpoint.base.clone(),
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

    /// A `next` link (absolute, or relative to the page `from`), if it is http(s) on the
    /// plugin API's own origin: the token goes nowhere else.
    fn same_origin(&self, from: &str, link: &str) -> Result<String, PluginApiError> {
        let api = url::Url::parse(&self.base).ok();
        let next = url::Url::parse(from).and_then(|f| f.join(link)).ok();
        match (&api, &next) {
            (Some(a), Some(n))
                if matches!(n.scheme(), "http" | "https") && n.origin() == a.origin() =>
            {
                Ok(n.to_string())
            }
            _ => Err(PluginApiError::ForeignNext {
                next: next
                    .map(|n| n.origin().ascii_serialization())
                    .unwrap_or_else(|| "an unreadable address".into()),
                api: api
                    .map(|a| a.origin().ascii_serialization())
                    .unwrap_or_default(),
            }),
        }
    }

    /// The installed plugins (GET, following `next` on the same origin; canvas_cli `list`).
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
            next = match body["next"].as_str() {
                Some(link) => Some(self.same_origin(&url, link)?),
                None => None,
            };
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

/// The plugins installed on a target (its plugin API's list).
pub async fn installed(endpoint: &Endpoint) -> Result<Vec<Installed>, PluginApiError> {
    PluginApi::connect(endpoint).await?.list().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    #[test]
    fn the_plugin_list_follows_next_links_on_its_own_origin_only() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (api, elsewhere) = (MockServer::start().await, MockServer::start().await);
            let auth = crate::fhir::auth::Auth::Bearer(secrecy::SecretString::from("t0ken"));
            let page = |name: &str, next: Option<String>| {
                ResponseTemplate::new(200).set_body_json(serde_json::json!({
                    "results": [{"name": name, "version": "1", "is_enabled": true}],
                    "next": next,
                }))
            };
            // a relative next link on the same origin is followed
            Mock::given(method("GET"))
                .and(path("/plugin-io/plugins/"))
                .and(query_param("page", "2"))
                .respond_with(page("b", Some(format!("{}/steal/", elsewhere.uri()))))
                .mount(&api)
                .await;
            Mock::given(method("GET"))
                .and(path("/plugin-io/plugins/"))
                .respond_with(page("a", Some("?page=2".into())))
                .mount(&api)
                .await;
            Mock::given(method("GET"))
                .respond_with(page("c", None))
                .mount(&elsewhere)
                .await;
            let endpoint = Endpoint::new(&api.uri(), auth);
            let listed = installed(&endpoint).await;
            assert!(
                matches!(&listed, Err(PluginApiError::ForeignNext { next, .. }) if *next == elsewhere.uri()),
                "{listed:?}"
            );
            assert_eq!(api.received_requests().await.unwrap().len(), 2);
            assert!(
                elsewhere.received_requests().await.unwrap().is_empty(),
                "the token went to another origin"
            );
        });
    }
}
