//! The gRPC client settings the benchmark and the chaos run share: an Orchestrator client
//! that accepts the large messages a big job produces (ListTasks pages, WatchJob snapshots).

use orca_proto::pb::orchestrator_client::OrchestratorClient;
use tonic::transport::Channel;

/// Largest message either way (a snapshot chunk of 2,000 tasks with their specs fits easily).
pub const MAX_MESSAGE: usize = 256 << 20;

pub fn orchestrator(channel: Channel) -> OrchestratorClient<Channel> {
    OrchestratorClient::new(channel).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE)
}
