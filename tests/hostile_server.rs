//! A hostile FHIR server: careplane against servers that lie, trickle, never stop, point
//! elsewhere or echo credentials (issue: security and reliability hardening). Each test
//! starts its own small raw-HTTP listener on 127.0.0.1 (bounded: it serves a fixed number
//! of connections, each for at most a few seconds) and checks that careplane stops
//! quickly, says which limit fired and for what, sends credentials nowhere else, and
//! prints no secret.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use careplane::fhir::auth::Auth;
use careplane::fhir::http::{HttpStore, Limits};
use careplane::fhir::{FhirError, Query, TimeoutKind};
use secrecy::SecretString;
use serde_json::{Value, json};

/// One request as the hostile server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How to answer one request.
enum Reply {
    /// Status, content type and body (sent with Content-Length, then the connection closes).
    Full(u16, &'static str, Vec<u8>),
    /// A head, then one byte every `every`, for at most `max` bytes.
    Trickle { every: Duration, max: usize },
    /// A head without a length, then body bytes as fast as they go, up to `max` bytes.
    Endless { max: usize },
    /// A head claiming `length` bytes, then (almost) nothing.
    Claims { length: u64 },
    /// Read the request, answer nothing for this long, close.
    Silence(Duration),
}

type Handler = dyn Fn(&Seen, usize) -> Reply + Send + Sync;

struct Hostile {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Hostile {
    /// A listener answering each request with `handler(request, n)` (n counts from 0).
    fn start(handler: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let handler: Arc<Handler> = Arc::new(handler);
        std::thread::spawn(move || {
            for (n, conn) in listener.incoming().take(400).enumerate() {
                let Ok(conn) = conn else { continue };
                let (log, handler) = (log.clone(), handler.clone());
                std::thread::spawn(move || serve(conn, n, &log, &*handler));
            }
        });
        Hostile { addr, seen }
    }

    fn base(&self) -> String {
        format!("http://{}/fhir", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn read_request(conn: &mut TcpStream) -> Option<Seen> {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).ok()? == 0 || buf.len() > 64 * 1024 {
            return None;
        }
        buf.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len.min(1 << 20)];
    conn.read_exact(&mut body).ok()?;
    Some(Seen {
        method,
        target,
        headers,
    })
}

fn serve(mut conn: TcpStream, n: usize, log: &Mutex<Vec<Seen>>, handler: &Handler) {
    let Some(req) = read_request(&mut conn) else {
        return;
    };
    log.lock().unwrap().push(req.clone());
    let head = |status: u16, extra: &str| {
        format!("HTTP/1.1 {status} X\r\nConnection: close\r\n{extra}\r\n").into_bytes()
    };
    let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
    match handler(&req, n) {
        Reply::Full(status, ctype, body) => {
            let mut out = head(
                status,
                &format!(
                    "Content-Type: {ctype}\r\nContent-Length: {}\r\n",
                    body.len()
                ),
            );
            out.extend_from_slice(&body);
            let _ = conn.write_all(&out);
        }
        Reply::Trickle { every, max } => {
            let _ = conn.write_all(&head(200, "Content-Type: application/fhir+json\r\n"));
            for _ in 0..max {
                if conn.write_all(b" ").is_err() {
                    return;
                }
                std::thread::sleep(every);
            }
        }
        Reply::Endless { max } => {
            let _ = conn.write_all(&head(200, "Content-Type: application/fhir+json\r\n"));
            let chunk = vec![b' '; 64 * 1024];
            let mut sent = 0;
            while sent < max && conn.write_all(&chunk).is_ok() {
                sent += chunk.len();
            }
        }
        Reply::Claims { length } => {
            let _ = conn.write_all(&head(
                200,
                &format!("Content-Type: application/fhir+json\r\nContent-Length: {length}\r\n"),
            ));
            let _ = conn.write_all(b"{");
            std::thread::sleep(Duration::from_secs(3));
        }
        Reply::Silence(d) => std::thread::sleep(d),
    }
}

fn json_reply(v: Value) -> Reply {
    Reply::Full(
        200,
        "application/fhir+json",
        serde_json::to_vec(&v).unwrap(),
    )
}

fn bundle(entries: Vec<Value>, total: Option<u64>, next: Option<String>) -> Value {
    let mut b = json!({"resourceType": "Bundle", "type": "searchset",
        "entry": entries.into_iter().map(|r| json!({"resource": r, "search": {"mode": "match"}})).collect::<Vec<_>>()});
    if let Some(t) = total {
        b["total"] = json!(t);
    }
    if let Some(n) = next {
        b["link"] = json!([{"relation": "next", "url": n}]);
    }
    b
}

/// An OperationOutcome with one error issue saying `diagnostics`.
fn outcome(status: u16, code: &str, diagnostics: String) -> Reply {
    let body = json!({"resourceType": "OperationOutcome", "issue": [{
        "severity": "error", "code": code, "diagnostics": diagnostics}]});
    Reply::Full(
        status,
        "application/fhir+json",
        serde_json::to_vec(&body).unwrap(),
    )
}

/// Run `careplane plan DIR` with `env`: exit code and stdout + stderr.
fn plan(dir: &std::path::Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut c = careplane();
    c.arg("plan").arg(dir);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), all)
}

fn group(id: &str) -> Value {
    json!({"resourceType": "Group", "id": id, "type": "practitioner", "actual": true})
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn store(base: &str, auth: Auth, limits: Limits) -> HttpStore {
    HttpStore::with_limits(base, auth, limits).unwrap()
}

fn bearer(t: &str) -> Auth {
    Auth::Bearer(SecretString::from(t.to_owned()))
}

// ---- 1. credentials stay on the target's origin ----

#[test]
fn a_next_link_to_another_origin_is_refused_and_never_sees_the_token() {
    let other = Hostile::start(|_, _| json_reply(bundle(vec![], None, None)));
    let next = format!("http://{}/fhir/Group?page=2", other.addr);
    let target =
        Hostile::start(move |_, _| json_reply(bundle(vec![group("g1")], None, Some(next.clone()))));
    let s = store(&target.base(), bearer("tok-ORIGIN-1234"), Limits::default());
    let err = rt().block_on(s.search(&Query::new("Group"))).unwrap_err();
    assert!(matches!(err, FhirError::Refused { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("http://{}", other.addr)) && text.contains("own origin"),
        "{text}"
    );
    assert_eq!(
        target.seen()[0].header("authorization"),
        Some("Bearer tok-ORIGIN-1234"),
        "the target itself gets the token"
    );
    assert!(
        other.seen().is_empty(),
        "the other listener was contacted: {:?}",
        other.seen()
    );
}

#[test]
fn a_redirect_to_another_origin_is_not_followed() {
    let other = Hostile::start(|_, _| json_reply(bundle(vec![], None, None)));
    let location = format!("http://{}/fhir/Group", other.addr);
    let target = Hostile::start(move |_, _| {
        Reply::Full(302, "text/plain", Vec::new()).with_location(&location)
    });
    let s = store(
        &target.base(),
        bearer("tok-REDIRECT-1234"),
        Limits::default(),
    );
    let err = rt().block_on(s.search(&Query::new("Group"))).unwrap_err();
    assert!(matches!(err, FhirError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("redirect"), "{err}");
    assert!(other.seen().is_empty(), "followed the redirect");
}

impl Reply {
    /// A `Full` reply with a Location header (by prefixing it to the content type line).
    fn with_location(self, location: &str) -> Reply {
        match self {
            Reply::Full(status, _, body) => Reply::Full(
                status,
                Box::leak(format!("text/plain\r\nLocation: {location}").into_boxed_str()),
                body,
            ),
            other => other,
        }
    }
}

#[test]
fn a_file_next_link_is_refused_once_and_not_retried() {
    let target = Hostile::start(|_, _| {
        json_reply(bundle(
            vec![group("g1")],
            None,
            Some("file:///etc/passwd".into()),
        ))
    });
    let s = store(&target.base(), Auth::None, Limits::default()).with_max_retries(3);
    let err = rt().block_on(s.search(&Query::new("Group"))).unwrap_err();
    assert!(matches!(err, FhirError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("'file:'"), "{err}");
    assert_eq!(s.request_count(), 1, "refusals are not retried");
}

// ---- 5, 6. bounded answers and searches ----

#[test]
fn an_endless_body_stops_at_the_size_limit() {
    let target = Hostile::start(|_, _| Reply::Endless { max: 64 << 20 });
    let limits = Limits {
        max_response_bytes: 1 << 20,
        ..Limits::default()
    };
    let s = store(&target.base(), Auth::None, limits).with_max_retries(0);
    let started = Instant::now();
    let err = rt().block_on(s.search(&Query::new("Group"))).unwrap_err();
    assert!(matches!(err, FhirError::Refused { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("1048576 bytes") && text.contains("maxResponseBytes"),
        "{text}"
    );
    assert!(
        text.contains(&format!("http://{}/fhir/Group", target.addr)),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_declared_200_mb_body_is_refused_before_it_is_read() {
    let target = Hostile::start(|_, _| Reply::Claims {
        length: 200 * 1024 * 1024,
    });
    let s = store(&target.base(), Auth::None, Limits::default()).with_max_retries(0);
    let started = Instant::now();
    let err = rt().block_on(s.search(&Query::new("Group"))).unwrap_err();
    assert!(err.to_string().contains("67108864 bytes"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "it waited for the body"
    );
}

#[test]
fn a_next_chain_that_never_ends_stops_at_what_the_total_can_need() {
    let base = Arc::new(Mutex::new(String::new()));
    let b = base.clone();
    let target = Hostile::start(move |_, n| {
        let next = format!("{}/Group?page={}", b.lock().unwrap(), n + 2);
        json_reply(bundle(vec![group(&format!("g{n}"))], Some(3), Some(next)))
    });
    *base.lock().unwrap() = target.base();
    let s = store(&target.base(), Auth::None, Limits::default());
    let err = rt().block_on(s.search(&Query::new("Group"))).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, FhirError::Refused { .. }), "{text}");
    assert!(text.contains("total of 3"), "{text}");
    assert!(
        s.request_count() <= 5,
        "followed {} pages for 3 results",
        s.request_count()
    );
}

#[test]
fn a_next_chain_without_a_total_stops_at_max_pages() {
    let base = Arc::new(Mutex::new(String::new()));
    let b = base.clone();
    let target = Hostile::start(move |_, n| {
        let next = format!("{}/Group?page={}", b.lock().unwrap(), n + 2);
        json_reply(bundle(vec![group(&format!("g{n}"))], None, Some(next)))
    });
    *base.lock().unwrap() = target.base();
    let limits = Limits {
        max_pages: 25,
        ..Limits::default()
    };
    let s = store(&target.base(), Auth::None, limits);
    let err = rt().block_on(s.search(&Query::new("Group"))).unwrap_err();
    assert!(err.to_string().contains("limits.maxPages"), "{err}");
    assert_eq!(s.request_count(), 25);
}

// ---- 7. timeouts and root causes ----

#[test]
fn a_trickling_server_fails_at_the_request_timeout_and_is_not_retried() {
    let target = Hostile::start(|_, _| Reply::Trickle {
        every: Duration::from_millis(100),
        max: 300,
    });
    let limits = Limits {
        read_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let s = store(&target.base(), Auth::None, limits).with_max_retries(3);
    let started = Instant::now();
    let q = Query::new("Group").param("identifier", "urn:mrn|SECRET-MRN-77");
    let err = rt().block_on(s.search(&q)).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            FhirError::Timeout {
                which: TimeoutKind::Total,
                ..
            }
        ),
        "{text}"
    );
    assert!(
        text.contains("2-second request timeout")
            && text.contains(&format!("http://{}/fhir/Group", target.addr)),
        "{text}"
    );
    assert!(
        !text.contains("SECRET-MRN") && !text.contains('?'),
        "{text}"
    );
    assert_eq!(s.request_count(), 1, "a total timeout is not retried");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_silent_server_fails_at_the_read_timeout_and_is_retried() {
    let target = Hostile::start(|_, _| Reply::Silence(Duration::from_secs(5)));
    let limits = Limits {
        read_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let s = store(&target.base(), Auth::None, limits).with_max_retries(1);
    let err = rt().block_on(s.search(&Query::new("Group"))).unwrap_err();
    assert!(
        matches!(
            err,
            FhirError::Timeout {
                which: TimeoutKind::Read,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("read timeout"), "{err}");
    assert_eq!(s.request_count(), 2, "a read timeout is retried");
}

#[test]
fn a_refused_connection_is_named_as_such() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let s = store(
        &format!("http://{addr}/fhir"),
        Auth::None,
        Limits::default(),
    )
    .with_max_retries(0);
    let err = rt().block_on(s.search(&Query::new("Group"))).unwrap_err();
    assert!(matches!(err, FhirError::Transport { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("{addr} refused the connection")),
        "{err}"
    );
}

const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBnDCCAUGgAwIBAgIUX5rHdAVOfkw9w5wBZ/6/YK75Az0wCgYIKoZIzj0EAwIw\nFDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTIwMjA2MDEwNFoYDzIxMjYxMTA4\nMDYwMTA0WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO\nPQMBBwNCAATkA5junwG7p1oJ4cRhL72PsE+g+K5VsgyxWqhVWdXGVVyXgshCIGtX\nGKeANoQMAxNJ+w1JpypzIsRUaTzLlwUTo28wbTAdBgNVHQ4EFgQUFCz6/fdu1/rI\nZDnWSAeIyWDY9+IwHwYDVR0jBBgwFoAUFCz6/fdu1/rIZDnWSAeIyWDY9+IwDwYD\nVR0TAQH/BAUwAwEB/zAaBgNVHREEEzARgglsb2NhbGhvc3SHBH8AAAEwCgYIKoZI\nzj0EAwIDSQAwRgIhAPAn6AmqbetX1PtqyogfaGDzoV4UBLihi5RbmmnbOHWpAiEA\nvFGehrjhtACseACYhWmhijzHwuUMI7fDkS9D4b9gJag=\n-----END CERTIFICATE-----";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgEolvgk+aZmNaCpaM\nVdskkZGH9Ue5pAkvk8Z5wJrplF2hRANCAATkA5junwG7p1oJ4cRhL72PsE+g+K5V\nsgyxWqhVWdXGVVyXgshCIGtXGKeANoQMAxNJ+w1JpypzIsRUaTzLlwUT\n-----END PRIVATE KEY-----";

/// A TLS listener with a self-signed certificate (not trusted by careplane).
fn untrusted_tls() -> (SocketAddr, Arc<Mutex<usize>>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = CertificateDer::from_pem_slice(CERT.as_bytes()).unwrap();
    let key = PrivateKeyDer::from_pem_slice(KEY.as_bytes()).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(Mutex::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(20) {
            let Ok(mut conn) = conn else { continue };
            *count.lock().unwrap() += 1;
            let mut tls = rustls::ServerConnection::new(config.clone()).unwrap();
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = tls.complete_io(&mut conn);
        }
    });
    (addr, accepted)
}

#[test]
fn an_untrusted_certificate_is_a_tls_error_and_is_not_retried() {
    let (addr, accepted) = untrusted_tls();
    let s = store(
        &format!("https://localhost:{}/fhir", addr.port()),
        bearer("tok-TLS-123456"),
        Limits::default(),
    )
    .with_max_retries(3);
    let err = rt().block_on(s.search(&Query::new("Group"))).unwrap_err();
    assert!(matches!(err, FhirError::Tls { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("certificate") && text.contains(&format!("localhost:{}", addr.port())),
        "{text}"
    );
    assert_eq!(*accepted.lock().unwrap(), 1, "TLS failures are not retried");
}

// ---- 8. answers that are not what they claim ----

#[test]
fn a_non_json_200_is_described_not_called_empty() {
    let target = Hostile::start(|_, _| {
        Reply::Full(
            200,
            "text/html; charset=utf-8",
            b"<html>maintenance</html>".to_vec(),
        )
    });
    let s = store(&target.base(), Auth::None, Limits::default());
    let err = rt().block_on(s.search(&Query::new("Group"))).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("not JSON (text/html, 24 bytes)") && !text.contains("empty"),
        "{text}"
    );
    assert!(
        !text.contains("maintenance"),
        "bodies are not quoted: {text}"
    );
}

#[test]
fn a_200_operation_outcome_keeps_the_servers_words() {
    let target = Hostile::start(|_, _| {
        json_reply(
            json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error",
            "code": "too-costly", "diagnostics": "search too broad, add a filter"}]}),
        )
    });
    let s = store(&target.base(), Auth::None, Limits::default());
    let err = rt().block_on(s.search(&Query::new("Group"))).unwrap_err();
    assert!(
        err.to_string().contains("search too broad, add a filter"),
        "{err}"
    );
}

#[test]
fn resources_of_another_type_in_a_search_are_refused() {
    let target = Hostile::start(|_, _| {
        json_reply(bundle(
            vec![json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Doe"}]})],
            None,
            None,
        ))
    });
    let s = store(&target.base(), Auth::None, Limits::default());
    let err = rt()
        .block_on(s.search(&Query::new("Practitioner")))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("returned a Patient as a match of a Practitioner search"),
        "{text}"
    );
    assert!(!text.contains("Doe") && !text.contains("p1"), "{text}");
}

#[test]
fn a_read_answered_with_another_type_is_refused() {
    let target = Hostile::start(|_, _| json_reply(group("g1")));
    let s = store(&target.base(), Auth::None, Limits::default());
    let err = rt().block_on(s.read("Practitioner", "x")).unwrap_err();
    assert!(
        err.to_string()
            .contains("expected a Practitioner, but the body is a Group"),
        "{err}"
    );
}

// ---- 2, 13. the binary: redaction at the output edge, the request log ----

fn project(dir: &std::path::Path, target_yaml: &str) {
    std::fs::write(
        dir.join("careplane.yaml"),
        format!(
            "apiVersion: careplane.dev/v1\nkind: Project\nmetadata:\n  name: hostile\nspec:\n  defaultTarget: t\n  targets:\n    t:\n{target_yaml}"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("team.yaml"),
        "apiVersion: careplane.dev/v1\nkind: Team\nmetadata:\n  name: front-desk\nspec:\n  responsibilities: []\n",
    )
    .unwrap();
}

fn careplane() -> Command {
    let mut c = Command::cargo_bin("careplane").unwrap();
    c.env_remove("CAREPLANE_LOG")
        .env_remove("CAREPLANE_TOKEN")
        .env_remove("CAREPLANE_SERVER")
        .env("NO_COLOR", "1")
        .timeout(Duration::from_secs(60));
    c
}

#[test]
fn a_server_echoing_the_bearer_token_gets_it_redacted_everywhere() {
    let token = "tok-ECHO-9f8e7d6c5b4a";
    let target = Hostile::start(move |req, _| {
        let echoed = req.header("authorization").unwrap_or_default();
        outcome(401, "login", format!("rejected credentials: {echoed}"))
    });
    let dir = tempfile::tempdir().unwrap();
    project(
        dir.path(),
        &format!(
            "      type: fhir\n      url: {}\n      auth:\n        bearerTokenEnv: HOSTILE_TOKEN\n",
            target.base()
        ),
    );
    let (code, all) = plan(
        dir.path(),
        &[("HOSTILE_TOKEN", token), ("CAREPLANE_LOG", "requests")],
    );
    assert_eq!(code, Some(1), "{all}");
    assert!(
        all.contains("rejected credentials: Bearer [redacted]"),
        "the server's words are kept, the token is not: {all}"
    );
    assert!(!all.contains("ECHO-9f8e"), "{all}");
}

#[test]
fn oauth_secrets_and_access_tokens_are_redacted_from_every_message() {
    let secret = "client-SECRET-5e4d3c2b1a";
    let access = "at-ACCESS-0a1b2c3d4e5f";
    let server = Hostile::start(move |req, _| {
        if req.method == "POST" {
            // a token endpoint that echoes the form, and hands out a token
            return json_reply(json!({"access_token": access, "expires_in": 3600,
                "token_type": "Bearer", "debug": format!("client_secret={secret}")}));
        }
        outcome(
            403,
            "forbidden",
            format!("token {access} lacks scope; client secret {secret} is wrong"),
        )
    });
    let dir = tempfile::tempdir().unwrap();
    project(
        dir.path(),
        &format!(
            "      type: fhir\n      url: {}\n      auth:\n        oauth2:\n          tokenUrl: http://{}/token\n          clientIdEnv: HOSTILE_ID\n          clientSecretEnv: HOSTILE_SECRET\n",
            server.base(),
            server.addr
        ),
    );
    let (code, all) = plan(
        dir.path(),
        &[("HOSTILE_ID", "client-id"), ("HOSTILE_SECRET", secret)],
    );
    assert_eq!(code, Some(1), "{all}");
    assert!(all.contains("lacks scope"), "{all}");
    assert!(
        !all.contains("SECRET-5e4d") && !all.contains("ACCESS-0a1b"),
        "{all}"
    );
    assert!(all.contains("[redacted]"), "{all}");
}

#[test]
fn the_request_log_shows_every_attempt_its_outcome_and_the_delay() {
    // Only the Group search misbehaves (the other searches run beside it).
    let groups = std::sync::atomic::AtomicUsize::new(0);
    let target = Hostile::start(move |req, _| {
        if !req.target.starts_with("/fhir/Group") {
            return json_reply(bundle(vec![], Some(0), None));
        }
        match groups.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => Reply::Full(503, "text/plain", b"busy".to_vec()),
            1 => Reply::Silence(Duration::from_secs(3)),
            _ => json_reply(bundle(vec![], Some(0), None)),
        }
    });
    let dir = tempfile::tempdir().unwrap();
    project(
        dir.path(),
        &format!(
            "      type: fhir\n      url: {}\n      limits:\n        readTimeoutSeconds: 1\n",
            target.base()
        ),
    );
    let (code, err) = plan(dir.path(), &[("CAREPLANE_LOG", "requests")]);
    for line in [
        "Group search by type (GET Group) attempt 1 → HTTP 503",
        "Group search by type (GET Group): attempt 1 failed (HTTP 503); next attempt in",
        "Group search by type (GET Group) attempt 2 → read timeout after 1 s",
        "Group search by type (GET Group): attempt 2 failed (read timeout after 1 s); next attempt in",
        "Group search by type (GET Group) attempt 3 → HTTP 200",
    ] {
        assert!(err.contains(line), "missing '{line}' in:\n{err}");
    }
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains('?'), "no query strings in the log: {err}");
}

#[test]
fn every_page_a_search_reads_is_reported_with_what_the_total_needs() {
    let base = Arc::new(Mutex::new(String::new()));
    let b = base.clone();
    let target = Hostile::start(move |req, _| {
        let page: usize = req
            .target
            .split("page=")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(1);
        let next = (page < 3).then(|| format!("{}/Group?page={}", b.lock().unwrap(), page + 1));
        json_reply(bundle(vec![group(&format!("g{page}"))], Some(3), next))
    });
    *base.lock().unwrap() = target.base();
    let mut s = store(&target.base(), Auth::None, Limits::default());
    type Calls = Vec<(String, u32, Option<u64>)>;
    let calls: Arc<Mutex<Calls>> = Arc::default();
    let c = calls.clone();
    s.set_page_hook(Arc::new(move |rt: &str, page: u32, need: Option<u64>| {
        c.lock().unwrap().push((rt.to_owned(), page, need));
    }));
    let found = rt().block_on(s.search(&Query::new("Group"))).unwrap();
    assert_eq!(found.len(), 3);
    assert_eq!(
        *calls.lock().unwrap(),
        vec![
            ("Group".to_owned(), 1, Some(3)),
            ("Group".to_owned(), 2, Some(3)),
            ("Group".to_owned(), 3, Some(3))
        ]
    );
}
