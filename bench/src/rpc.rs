//! The gRPC client settings the benchmark and the chaos run share: an Orchestrator client
//! that accepts the large messages a big job produces (ListTasks pages, WatchJob snapshots).

use orca_proto::pb::orchestrator_client::OrchestratorClient;
use tonic::transport::Channel;

/// Largest message either way: the contract's (the coordinator sends no more).
pub const MAX_MESSAGE: usize = orca_proto::contract::limits::MAX_MESSAGE_BYTES;

pub fn orchestrator(channel: Channel) -> OrchestratorClient<Channel> {
    OrchestratorClient::new(channel).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE)
}
