//! The output edge: everything careplane prints or writes for people (stdout, stderr, the
//! request log, plan files, reports, panics) goes through here, and here every credential
//! careplane holds is replaced by `[redacted]`.
//!
//! Credentials are registered once, where careplane first holds them (the target's bearer
//! token, OAuth client secret and access tokens, passwords in a target URL, the pseudonym
//! key). Call sites never have to remember to redact: a server that echoes the token in an
//! error body, or a message that quotes a URL with a password in it, is cleaned on the way
//! out. `clippy.toml` forbids `println!`/`eprintln!` so nothing bypasses this module.

use std::io::Write;
use std::path::Path;
use std::sync::{LazyLock, RwLock};

/// What a credential is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Shorter values are not registered: replacing every "ab" in the output would garble it
/// and hide nothing (no real credential is that short).
const MIN_SECRET_LEN: usize = 6;

static SECRETS: LazyLock<RwLock<Vec<String>>> = LazyLock::new(|| RwLock::new(Vec::new()));

/// Remember a credential so that it never leaves the process in output. Its URL-encoded
/// and form-encoded spellings are registered too (servers echo requests in either).
pub fn register_secret(secret: &str) {
    let secret = secret.trim();
    if secret.len() < MIN_SECRET_LEN {
        return;
    }
    let mut forms = vec![secret.to_owned()];
    let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    forms.push(encoded.clone());
    forms.push(encoded.replace('+', "%20"));
    let mut all = SECRETS.write().unwrap_or_else(|p| p.into_inner());
    for f in forms {
        if !all.contains(&f) {
            all.push(f);
        }
    }
    // Longest first, so a secret that contains another is replaced whole.
    all.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// `text` with every registered credential replaced by [`REDACTED`].
///
/// ```
/// careplane::output::register_secret("tok-3f9a8b7c");
/// assert_eq!(
///     careplane::output::scrub("401: invalid Bearer tok-3f9a8b7c"),
///     "401: invalid Bearer [redacted]"
/// );
/// ```
pub fn scrub(text: &str) -> String {
    let secrets = SECRETS.read().unwrap_or_else(|p| p.into_inner());
    let mut out = text.to_owned();
    for s in secrets.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), REDACTED);
        }
    }
    out
}

/// Write to stdout through anstream (strips colour for pipes and NO_COLOR).
pub fn stdout(text: &str) {
    let mut s = anstream::stdout();
    let _ = s.write_all(scrub(text).as_bytes());
    let _ = s.flush();
}

/// Write to stderr through anstream.
pub fn stderr(text: &str) {
    let mut s = anstream::stderr();
    let _ = s.write_all(scrub(text).as_bytes());
    let _ = s.flush();
}

/// One line of the request log (`CAREPLANE_LOG=requests`) on stderr.
pub fn log(line: &str) {
    stderr(&format!("careplane: {line}\n"));
}

/// Write a file meant for people or CI (a plan file, a report, exported manifests).
pub fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, scrub(text))
}

/// Panic messages go through the same edge (a panic must not print a token either).
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        stderr(&format!(
            "careplane crashed{at}: {msg}\nThis is a bug in careplane; please report it.\n"
        ));
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_registered_secret_is_replaced() {
        register_secret("s3cr3t value/with+signs");
        let text = "a s3cr3t value/with+signs b s3cr3t+value%2Fwith%2Bsigns c s3cr3t%20value%2Fwith%2Bsigns";
        assert_eq!(scrub(text), "a [redacted] b [redacted] c [redacted]");
    }

    #[test]
    fn short_values_are_not_registered() {
        register_secret("abc");
        assert_eq!(scrub("abc abcdef"), "abc abcdef");
    }

    #[test]
    fn a_secret_inside_a_longer_one_does_not_leave_a_tail() {
        register_secret("inner-123456");
        register_secret("outer-inner-123456-xyz");
        assert_eq!(scrub("outer-inner-123456-xyz"), "[redacted]");
    }
}
