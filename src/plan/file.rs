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
        "{path} is a plan of format version {found}; this careplane reads version {FORMAT_VERSION}: make a new plan"
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
    let text = std::fs::read_to_string(path).map_err(|e| PlanFileError::Read {
        path: p.clone(),
        reason: e.to_string(),
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
