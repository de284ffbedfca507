//! Orca's gRPC API, package `orca.v1`: the generated messages, clients and servers, the
//! encoded file descriptor set for server reflection, and small helpers on the generated
//! types, and [`contract`]: the rules and defaults every binary shares.
//!
//! Everything generated lives in [`pb`]; the other crates always name it through `pb::`.

/// The generated `orca.v1` types, clients and servers.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("orca.v1");
}

/// The encoded `FileDescriptorSet` of `orca.v1`, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("orca_descriptor");

pub mod codec;
pub mod config_file;
pub mod contract;
pub mod json;
pub mod systemd;
pub mod tls;

/// The contract's defaults, also reachable as `orca_proto::defaults`.
pub use contract::defaults;

impl pb::TaskState {
    /// The short lowercase name used by the CLI and JSON outputs (`in_progress`).
    pub fn short_name(self) -> &'static str {
        match self {
            pb::TaskState::Unspecified => "unspecified",
            s => contract::TASK_STATE_NAMES[s as usize - 1],
        }
    }

    /// Completed, failed and cancelled are final.
    pub fn is_final(self) -> bool {
        matches!(self, pb::TaskState::Completed | pb::TaskState::Failed | pb::TaskState::Cancelled)
    }

    /// The state of a short name ([`pb::TaskState::short_name`]).
    pub fn from_short_name(name: &str) -> Option<pb::TaskState> {
        let i = contract::TASK_STATE_NAMES.iter().position(|n| *n == name)?;
        pb::TaskState::try_from(i as i32 + 1).ok()
    }
}

impl pb::JobState {
    /// The short lowercase name (`active`, `completed`, ...).
    pub fn short_name(self) -> &'static str {
        match self {
            pb::JobState::Unspecified => "unspecified",
            pb::JobState::Active => "active",
            pb::JobState::Completed => "completed",
            pb::JobState::Failed => "failed",
            pb::JobState::Cancelled => "cancelled",
        }
    }
}

impl pb::JobStatus {
    /// Tasks in a final state.
    pub fn finished(&self) -> u64 {
        self.completed + self.failed + self.cancelled
    }

    /// True when the job has tasks and every one of them is final.
    pub fn all_final(&self) -> bool {
        self.total_tasks > 0 && self.finished() == self.total_tasks
    }
}
