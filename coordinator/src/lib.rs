//! Orca's coordinator.
pub mod queue;
