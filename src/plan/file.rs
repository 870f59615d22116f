//! Reading and writing saved plan files (`plan --out`, `apply --plan`). A plan file is the
//! versioned JSON document that `plan --format json` prints; its schema is
//! `schema/plan.schema.json`.

use std::path::Path;

use super::{FORMAT, FORMAT_VERSION, Plan};

#[derive(Debug, thiserror::Error)]
pub enum PlanFileError {
    #[error("cannot read plan file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("cannot write plan file {path}: {reason}")]
    Write { path: String, reason: String },
    #[error("{path} is not a careplane plan file ({reason})")]
    Invalid { path: String, reason: String },
    #[error(
        "{path} is a plan of format version {found}, written by {}; this careplane reads version {FORMAT_VERSION}: make the plan again with this careplane (careplane plan --out FILE)", if *found < FORMAT_VERSION { "an older careplane" } else { "a newer careplane" }
    )]
    Version { path: String, found: u32 },
}

pub fn to_json(plan: &Plan) -> String {
    let mut s = serde_json::to_string_pretty(plan).expect("plans serialize");
    s.push('\n');
    s
}

/// `sha256:<hex>` of the plan file's bytes, as `sha256sum plan.json` prints it.
pub fn checksum(plan: &Plan) -> String {
    use sha2::{Digest, Sha256};
    format!("sha256:{:x}", Sha256::digest(to_json(plan).as_bytes()))
}

pub fn write(plan: &Plan, path: &Path) -> Result<(), PlanFileError> {
    crate::output::write_file(path, &to_json(plan)).map_err(|e| PlanFileError::Write {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

pub fn read(path: &Path) -> Result<Plan, PlanFileError> {
    let p = path.display().to_string();
    let text = read_bounded(path).map_err(|reason| PlanFileError::Read {
        path: p.clone(),
        reason,
    })?;
    let raw: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| PlanFileError::Invalid {
            path: p.clone(),
            reason: e.to_string(),
        })?;
    if raw.get("format").and_then(|v| v.as_str()) != Some(FORMAT) {
        return Err(PlanFileError::Invalid {
            path: p,
            reason: format!("missing \"format\": \"{FORMAT}\""),
        });
    }
    let found = raw
        .get("format_version")
        .and_then(|v| v.as_u64())
        .unwrap_or(0) as u32;
    if found != FORMAT_VERSION {
        return Err(PlanFileError::Version { path: p, found });
    }
    serde_json::from_value(raw).map_err(|e| PlanFileError::Invalid {
        path: p,
        reason: e.to_string(),
    })
}

/// The largest plan file read (a plan carries counts and samples, never whole patient
/// lists, so real plans are far smaller).
pub const MAX_PLAN_BYTES: u64 = 256 * 1024 * 1024;

/// A plan file's text: a regular file (a FIFO or device is refused before it is opened,
/// so it cannot hang or fill memory), at most [`MAX_PLAN_BYTES`].
fn read_bounded(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    if !file.metadata().map_err(|e| e.to_string())?.is_file() {
        return Err("not a regular file".into());
    }
    let mut bytes = Vec::new();
    file.take(MAX_PLAN_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_PLAN_BYTES {
        return Err(format!(
            "larger than {MAX_PLAN_BYTES} bytes; not a careplane plan"
        ));
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text; not a careplane plan".into())
}

#[cfg(test)]
mod bounded_tests {
    use super::*;

    #[test]
    fn a_device_or_directory_is_not_read_as_a_plan() {
        for p in ["/dev/zero", "/dev/urandom", "/"] {
            let e = read(Path::new(p)).unwrap_err().to_string();
            assert!(e.contains("not a regular file"), "{p}: {e}");
        }
    }
}

#[cfg(test)]
mod version_tests {
    use super::*;

    #[test]
    fn version_1_and_2_plans_are_refused_with_what_to_do() {
        let dir = tempfile_dir();
        let path = dir.join("old.json");
        // version 2 carried the effects of rules change by change (every routed task,
        // member lists as digests): applying it as version 3 would skip the recompute
        for v in [1, 2] {
            crate::output::write_file(
                &path,
                &format!(r#"{{"format": "careplane-plan", "format_version": {v}, "changes": []}}"#),
            )
            .unwrap();
            let e = read(&path).unwrap_err().to_string();
            assert!(
                e.contains(&format!(
                    "format version {v}, written by an older careplane"
                )) && e.contains("careplane plan --out"),
                "{e}"
            );
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("careplane-plan-v1-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
