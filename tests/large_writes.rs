//! Large writes on a slow server (issue 13): a group of thousands of members whose write
//! gets HTTP 408 (or no answer in time) is reported with its size and not sent again
//! whole, since the server may still be storing it; apply's read-back decides whether it
//! landed. Small writes keep their retries. Each test starts its own raw-HTTP listener
//! on 127.0.0.1 serving a bounded number of connections.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use careplane::fhir::auth::Auth;
use careplane::fhir::http::{HttpStore, LARGE_WRITE_BYTES, Limits};
use careplane::fhir::{FhirError, Precondition};
use serde_json::{Value, json};

/// How to answer one request: a status and a JSON body, or silence for a while.
enum Reply {
    Full(u16, Value),
    Silence(Duration),
}

type Handler = dyn Fn(&str, usize) -> Reply + Send + Sync;

struct Slow {
    addr: SocketAddr,
    /// Method of each request seen, in order.
    seen: Arc<Mutex<Vec<String>>>,
}

impl Slow {
    fn start(handler: impl Fn(&str, usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let handler: Arc<Handler> = Arc::new(handler);
        std::thread::spawn(move || {
            for (n, conn) in listener.incoming().take(50).enumerate() {
                let Ok(conn) = conn else { continue };
                let (log, handler) = (log.clone(), handler.clone());
                std::thread::spawn(move || serve(conn, n, &log, &*handler));
            }
        });
        Slow { addr, seen }
    }

    fn store(&self, limits: Limits) -> HttpStore {
        HttpStore::with_limits(&format!("http://{}/fhir", self.addr), Auth::None, limits).unwrap()
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// Read one request (head and body); its method.
fn read_request(conn: &mut TcpStream) -> Option<String> {
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
    let method = text.split(' ').next()?.to_owned();
    let len: usize = text
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len.min(8 << 20)];
    conn.read_exact(&mut body).ok()?;
    Some(method)
}

fn serve(mut conn: TcpStream, n: usize, log: &Mutex<Vec<String>>, handler: &Handler) {
    let Some(method) = read_request(&mut conn) else {
        return;
    };
    log.lock().unwrap().push(method.clone());
    match handler(&method, n) {
        Reply::Full(status, body) => {
            let body = serde_json::to_vec(&body).unwrap();
            let mut out = format!(
                "HTTP/1.1 {status} X\r\nConnection: close\r\nContent-Type: application/fhir+json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            out.extend_from_slice(&body);
            let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
            let _ = conn.write_all(&out);
        }
        Reply::Silence(d) => std::thread::sleep(d),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A patient group of `n` members.
fn group(n: usize) -> Value {
    let members: Vec<Value> = (0..n)
        .map(|i| json!({"entity": {"reference": format!("Patient/p{i:08}")}}))
        .collect();
    json!({"resourceType": "Group", "id": "g1", "type": "person", "actual": true, "member": members})
}

fn timed_out() -> Value {
    json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout", "diagnostics": "storing took too long"}]})
}

fn pre() -> Precondition {
    Precondition {
        version_id: Some("3".into()),
        last_updated: None,
    }
}

#[test]
fn a_large_group_write_answered_408_is_sent_once_and_reported_with_its_size() {
    let server = Slow::start(|_, _| Reply::Full(408, timed_out()));
    let body = group(4000);
    assert!(serde_json::to_vec(&body).unwrap().len() >= LARGE_WRITE_BYTES);
    let store = server.store(Limits::default()).with_max_retries(4);
    let err = rt().block_on(store.update(&body, &pre())).unwrap_err();
    assert!(
        matches!(err, FhirError::LargeWriteUnanswered { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("4000 members"), "{text}");
    assert!(text.contains(" bytes"), "{text}");
    assert!(text.contains("HTTP 408"), "{text}");
    assert!(!text.contains("Patient/p"), "no patient reference: {text}");
    assert_eq!(server.seen(), ["PUT"], "sent once, not resent whole");
}

#[test]
fn a_large_group_write_without_an_answer_in_time_is_sent_once() {
    let server = Slow::start(|_, _| Reply::Silence(Duration::from_secs(3)));
    let limits = Limits {
        read_timeout: Duration::from_millis(400),
        ..Limits::default()
    };
    let store = server.store(limits).with_max_retries(4);
    let err = rt()
        .block_on(store.update(&group(4000), &pre()))
        .unwrap_err();
    assert!(
        matches!(err, FhirError::LargeWriteUnanswered { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("read timeout"), "{err}");
    assert_eq!(server.seen(), ["PUT"]);
}

#[test]
fn a_small_write_answered_408_is_still_retried() {
    let server = Slow::start(|_, n| {
        if n == 0 {
            Reply::Full(408, timed_out())
        } else {
            Reply::Full(
                200,
                json!({"resourceType": "Group", "id": "g1", "meta": {"versionId": "4"}}),
            )
        }
    });
    let store = server.store(Limits::default()).with_max_retries(4);
    let written = rt().block_on(store.update(&group(3), &pre())).unwrap();
    assert_eq!(written.version_id.as_deref(), Some("4"));
    assert_eq!(server.seen(), ["PUT", "PUT"]);
}

#[test]
fn a_large_write_refused_with_503_is_retried() {
    // 503: the server did not take the request on; sending it again is safe
    let server = Slow::start(|_, n| {
        if n == 0 {
            Reply::Full(503, timed_out())
        } else {
            Reply::Full(
                200,
                json!({"resourceType": "Group", "id": "g1", "meta": {"versionId": "4"}}),
            )
        }
    });
    let store = server.store(Limits::default()).with_max_retries(4);
    rt().block_on(store.update(&group(4000), &pre())).unwrap();
    assert_eq!(server.seen(), ["PUT", "PUT"]);
}

#[test]
fn a_large_batch_answered_408_is_sent_once_and_reported_with_its_size() {
    let server = Slow::start(|_, _| Reply::Full(408, timed_out()));
    // 300 care-team creates of a few hundred bytes each: a Bundle over the limit
    let entries: Vec<careplane::fhir::BatchEntry> = (0..300)
        .map(|i| careplane::fhir::BatchEntry::Create {
            resource: json!({"resourceType": "CareTeam", "status": "active",
                "subject": {"reference": format!("Patient/p{i:08}")},
                "participant": [{"member": {"reference": "Practitioner/dr"},
                    "role": [{"coding": [{"system": "http://snomed.info/sct", "code": "453231000124104", "display": "Primary care provider"}]}]}]}),
            if_none_exist: Some(careplane::fhir::Query::new("CareTeam").param("subject", format!("Patient/p{i:08}"))),
        })
        .collect();
    let store = server.store(Limits::default()).with_max_retries(4);
    let err = rt().block_on(store.batch(&entries)).unwrap_err();
    assert!(
        matches!(err, FhirError::LargeWriteUnanswered { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("batch of 300 (create 300)"), "{text}");
    assert!(text.contains("300 batch entries"), "{text}");
    assert!(!text.contains("Patient/p"), "no patient reference: {text}");
    assert_eq!(server.seen(), ["POST"], "sent once, not resent whole");
}
