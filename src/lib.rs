//! careplane: team-based-care configuration as code for FHIR servers.
//!
//! The data flows one way, one module per stage:
//! [`manifest`] (YAML → validated [`model`]) → [`observe`] (live state, through
//! [`fhir`] and a [`dialect`]) → [`diff`] → [`plan`] → [`apply`] → [`render`].
//! [`ops`] strings the stages together for the commands in [`cli`].

pub mod apply;
pub mod check;
pub mod cli;
pub mod dialect;
pub mod drift;
pub mod export;
pub mod fhir;
pub mod manifest;
pub mod model;
pub mod observe;
pub mod ops;
pub mod output;
pub mod plan;
pub mod reconcile;
pub mod render;
pub mod rules;
pub mod ruletest;
pub mod target;
pub mod vocab;

/// The object-level diff, now part of [`reconcile`] (kept at this path for callers).
pub use reconcile::objects as diff;
