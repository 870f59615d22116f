//! The crate's shared vocabulary: object kinds, capability tables, desired / observed /
//! foreign objects as field maps, the staff directory and JSON helpers. Every stage speaks
//! it; it imports no stage (only the desired model's `Source` and `PractitionerRef`, and the
//! manifest `Diagnostic` type), so no stage imports another through it.

pub mod capability;
pub mod json;
pub mod kind;
pub mod object;
pub mod operation;
pub mod ownership;
pub mod staff;

pub use capability::{
    Capabilities, CareTeams, Identity, KindCapability, PatientReads, Reference, Retire,
    TargetCapability,
};
pub use kind::ObjectKind;
pub use object::{
    CompactObject, DesiredObject, Fields, ForeignObject, Memberships, ObservedObject, Recognised,
};
pub use operation::{Coding, Operation, Participant, RoutedTask};
pub use staff::{StaffIndex, Unresolved};
