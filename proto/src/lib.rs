//! Orca's gRPC API, package `orca.v1`: the generated messages, clients and servers, the
//! encoded file descriptor set for server reflection, and small helpers on the generated
//! types (state names, the default values the contract fixes).
//!
//! Everything generated lives in [`pb`]; the other crates always name it through `pb::`.

/// The generated `orca.v1` types, clients and servers.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("orca.v1");
}

/// The encoded `FileDescriptorSet` of `orca.v1`, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("orca_descriptor");

/// Defaults fixed by the public contract.
pub mod defaults {
    /// Priority of a task that names none (higher runs first).
    pub const PRIORITY: i32 = 5;
    /// Retries of a task that names none.
    pub const MAX_RETRIES: u32 = 0;
    /// First retry backoff.
    pub const INITIAL_BACKOFF_MS: u32 = 1_000;
    /// Backoff growth per retry.
    pub const BACKOFF_MULTIPLIER: f64 = 2.0;
    /// Backoff cap.
    pub const MAX_BACKOFF_MS: u32 = 60_000;
    /// Lease of an assignment, in seconds.
    pub const LEASE_SECONDS: u32 = 30;
    /// Coordinator address of the CLI, the worker and the clients.
    pub const COORDINATOR_URL: &str = "http://127.0.0.1:50051";
}

impl pb::TaskState {
    /// The short lowercase name used by the CLI and JSON outputs (`in_progress`).
    pub fn short_name(self) -> &'static str {
        match self {
            pb::TaskState::Unspecified => "unspecified",
            pb::TaskState::Waiting => "waiting",
            pb::TaskState::Pending => "pending",
            pb::TaskState::InProgress => "in_progress",
            pb::TaskState::Completed => "completed",
            pb::TaskState::Failed => "failed",
            pb::TaskState::Cancelled => "cancelled",
        }
    }

    /// Completed, failed and cancelled are final.
    pub fn is_final(self) -> bool {
        matches!(self, pb::TaskState::Completed | pb::TaskState::Failed | pb::TaskState::Cancelled)
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
