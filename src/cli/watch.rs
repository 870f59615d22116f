//! `careplane watch [DIR]`: keep routing new tasks. Every `--interval` seconds it reads the
//! open tasks changed since the previous pass (`_lastUpdated`, Canvas `modified`), applies
//! routing rules only, and logs one line per routed task. Stops cleanly on SIGINT/SIGTERM.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::plan::prepare;
use super::{EXIT_ERROR, EXIT_OK, TargetArgs, default_dir, err, out, print_error};
use crate::ops::{self, OpsError};
use crate::plan::Action;

/// How far back each pass reads beyond the previous pass's start, for clock skew
/// between careplane and the server (re-reading a routed task is a no-op).
const OVERLAP: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manifest directory (default: the current directory).
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Seconds between passes.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub interval: u64,
    /// Run one pass and stop.
    #[arg(long)]
    pub once: bool,
    /// Serve a health check at ADDR (e.g. `0.0.0.0:8080`): `GET /healthz` answers 200 while
    /// the last good pass is at most three intervals old (and at least a minute), else 503.
    /// For a readiness or liveness probe.
    #[arg(long, value_name = "ADDR")]
    pub health: Option<std::net::SocketAddr>,
}

/// Seconds since the epoch, now.
fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The health endpoint: a tiny HTTP/1.1 responder (one request per connection) over the
/// time of the last good pass. It reads at most 8 KiB of a request and says nothing else.
async fn serve_health(
    listener: tokio::net::TcpListener,
    last_ok: std::sync::Arc<std::sync::atomic::AtomicU64>,
    max_age: u64,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let last_ok = last_ok.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 8192];
            let read =
                tokio::time::timeout(std::time::Duration::from_secs(5), conn.read(&mut buf)).await;
            let Ok(Ok(n)) = read else { return };
            let first = String::from_utf8_lossy(&buf[..n]);
            let path_ok = first.starts_with("GET /healthz ") || first.starts_with("GET / ");
            let last = last_ok.load(std::sync::atomic::Ordering::SeqCst);
            let healthy = last > 0 && now_secs().saturating_sub(last) <= max_age;
            let (status, body) = match (path_ok, healthy) {
                (false, _) => ("404 Not Found", "not found\n".to_owned()),
                (true, true) => (
                    "200 OK",
                    format!("ok: last good pass {}s ago\n", now_secs() - last),
                ),
                (true, false) if last == 0 => {
                    ("503 Service Unavailable", "no good pass yet\n".to_owned())
                }
                (true, false) => (
                    "503 Service Unavailable",
                    format!(
                        "last good pass {}s ago (more than {max_age}s)\n",
                        now_secs() - last
                    ),
                ),
            };
            let answer = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(answer.as_bytes()).await;
        });
    }
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// One pass: plan with the tasks changed since `since`, apply the routing changes.
async fn pass(
    m: &crate::manifest::Manifests,
    target: &crate::target::ResolvedTarget,
    since: Option<String>,
) -> Result<(usize, usize), OpsError> {
    let (full, _) = ops::plan_since(m, target, Default::default(), since).await?;
    let routing: Vec<_> = full
        .changes
        .iter()
        .filter(|c| {
            matches!(c.operation, crate::vocab::Operation::RouteTask { .. })
                && c.action == Action::Update
        })
        .cloned()
        .collect();
    if routing.is_empty() {
        return Ok((0, 0));
    }
    let plan = full.with_changes(routing);
    let applied = ops::apply_recorded(&plan, target, ops::agent(m, target), false).await;
    if let crate::apply::ProvenanceStatus::Failed { error } = &applied.record.provenance {
        err(&format!(
            "careplane watch: the routing was applied but its Provenance could not be written: {error}\n"
        ));
    }
    let report = applied.report;
    for o in &report.outcomes {
        let c = &plan.changes[o.change];
        match &o.result {
            Ok(_) => {
                let fields: Vec<&str> = c.fields.iter().map(|f| f.field.as_str()).collect();
                let by = match &c.operation {
                    crate::vocab::Operation::RouteTask { rule, order } => {
                        format!("routing rule '{rule}' (order {order})")
                    }
                    _ => "routing".to_owned(),
                };
                out(&format!(
                    "careplane watch: routed {} ({by}): {}\n",
                    c.target.name,
                    fields.join(", ")
                ));
            }
            Err(e) => err(&format!("careplane watch: {e}\n")),
        }
    }
    Ok((report.succeeded(), report.failed()))
}

pub async fn run(a: Args) -> u8 {
    let dir = default_dir(a.dir);
    let (m, target) = match prepare(&dir, &a.target) {
        Ok(x) => x,
        Err(e) => {
            print_error(&e, &dir);
            return EXIT_ERROR;
        }
    };
    if m.desired.routing_rules.is_empty() {
        err("error: the manifests declare no RoutingRule: nothing to watch\n");
        return EXIT_ERROR;
    }
    if !a.once {
        super::note(&format!(
            "careplane watch: routing open tasks on target '{}' every {} s with {} rule(s); Ctrl-C stops\n",
            target.info.name,
            a.interval,
            m.desired.routing_rules.len()
        ));
    }
    let last_ok = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    // the health server lives as long as the watch (its task handle is kept until the end)
    let _health = match a.health {
        None => None,
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                let max_age = (3 * a.interval).max(60);
                Some(tokio::spawn(serve_health(l, last_ok.clone(), max_age)))
            }
            Err(e) => {
                err(&format!(
                    "error: cannot serve the health check on {addr}: {e}\n"
                ));
                return EXIT_ERROR;
            }
        },
    };
    let mut since: Option<String> = None;
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        let started = SystemTime::now() - OVERLAP;
        // a file store is locked for each pass (not between passes), like an apply
        let locked = target.begin_writes(&|msg| err(&format!("careplane watch: {msg}\n")));
        let mut result = match locked.await {
            Ok(()) => pass(&m, &target, since.clone()).await,
            Err(e) => Err(e.into()),
        };
        // a file store writes the pass's changes here, each file once
        if let Err(e) = target.end_writes().await
            && result.is_ok()
        {
            result = Err(e.into());
        }
        match result {
            Ok(_) => {
                since = Some(humantime::format_rfc3339_millis(started).to_string());
                last_ok.store(now_secs(), std::sync::atomic::Ordering::SeqCst);
            }
            // a failed pass is logged and retried at the next interval (a server blip
            // must not end the watch); the next pass reads from the last good point
            Err(e) => err(&format!("careplane watch: pass failed: {e}\n")),
        }
        if a.once {
            return EXIT_OK;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(a.interval)) => {}
            _ = &mut stop => {
                err("careplane watch: stopped\n");
                return EXIT_OK;
            }
        }
    }
}
