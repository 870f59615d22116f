//! `careplane watch [DIR]`: keep the effects of the rules current. Every `--interval`
//! seconds an effects pass (`ops::effects`): new open tasks routed, memberships and care
//! teams of the patients whose data changed since the previous pass (`_lastUpdated`;
//! Canvas, which cannot search patients by change time, on full passes), and every
//! `--full-every` passes a full recompute. One log line per effect applied. On
//! SIGINT/SIGTERM the writes in flight finish, a summary is printed, exit 130/143.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::plan::prepare;
use super::reconcile::{Stopper, print_pass, summary};
use super::{EXIT_ERROR, EXIT_OK, TargetArgs, default_dir, err, out, print_error};
use crate::ops::effects::Effects;

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
    /// Recompute every effect from all patients every N passes (the others read only the
    /// patients, consents, care teams and tasks changed since the previous pass).
    #[arg(long, value_name = "N", default_value_t = crate::ops::effects::FULL_EVERY, value_parser = clap::value_parser!(u64).range(1..))]
    pub full_every: u64,
    /// Apply removals even where a patient group or care-team assignment would lose more
    /// than its `maxRemovalShare` (otherwise that effect is held back and logged).
    #[arg(long)]
    pub allow_mass_removal: bool,
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

pub async fn run(a: Args) -> u8 {
    let dir = default_dir(a.dir);
    let prefix = "careplane watch";
    let (m, target) = match prepare(&dir, &a.target)
        .and_then(|(m, t)| crate::ops::effects::may_run(&m, &t).map(|()| (m, t)))
    {
        Ok(x) => x,
        Err(e) => {
            print_error(&e, &dir);
            return EXIT_ERROR;
        }
    };
    let rules = crate::ops::effects::rules_with_effects(&m.desired);
    if rules == 0 {
        err(
            "error: the manifests declare no RoutingRule, PatientGroup or CareTeamAssignment: nothing to watch\n",
        );
        return EXIT_ERROR;
    }
    if !a.once {
        super::note(&format!(
            "careplane watch: keeping the effects of {rules} rule(s) current on target '{}' every {} s (every {} pass(es) in full); Ctrl-C stops\n",
            target.info.name, a.interval, a.full_every
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
    // Ctrl-C / SIGTERM: the writes in flight finish, no new one starts, then a summary
    let stopper = Stopper::start("watch");
    let control = crate::apply::Control {
        stop: Some(&stopper.stop),
        on_done: None,
    };
    let mut effects = Effects::new(a.full_every, a.allow_mass_removal);
    loop {
        // a file store is locked for each pass (not between passes), like an apply
        let waiting = |msg: &str| err(&format!("{prefix}: {msg}\n"));
        let result = effects.locked_pass(&m, &target, &control, &waiting).await;
        match &result {
            Ok(o) => {
                print_pass(prefix, o);
                last_ok.store(now_secs(), std::sync::atomic::Ordering::SeqCst);
            }
            // a failed pass is logged and retried at the next interval (a server blip
            // must not end the watch); the next pass reads from the last good point
            Err(e) => err(&format!("{prefix}: pass failed: {e}\n")),
        }
        if a.once {
            out(&summary(prefix, &effects.totals));
            return match stopper.code() {
                0 if result.is_err() => EXIT_ERROR,
                0 => EXIT_OK,
                signal => signal,
            };
        }
        if stopper.code() == 0 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(a.interval)) => {}
                _ = stopper.wake.notified() => {}
            }
        }
        if stopper.code() != 0 {
            err("careplane watch: stopped\n");
            out(&summary(prefix, &effects.totals));
            return stopper.code();
        }
    }
}
