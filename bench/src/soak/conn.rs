//! Connections to the coordinator. Each part of the run gets its own HTTP/2 connection, so
//! that a hostile stream that never reads (and so holds the connection's flow-control
//! window) can only stall its own connection, never the normal workload's.

use orca_proto::pb;
use pb::orchestrator_client::OrchestratorClient;
use pb::worker_gateway_client::WorkerGatewayClient;
use tonic::transport::{Channel, Endpoint};

use crate::rpc::MAX_MESSAGE;

/// A new, lazily connecting HTTP/2 connection (no call timeout: streams last the phase;
/// unary calls are bounded by `Tally::call`).
pub fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_string())?.tcp_nodelay(true).connect_lazy())
}

pub fn orchestrator(url: &str) -> anyhow::Result<OrchestratorClient<Channel>> {
    Ok(crate::rpc::orchestrator(channel(url)?))
}

/// A worker-side client that accepts assignments as large as the contract allows.
pub fn gateway(url: &str) -> anyhow::Result<WorkerGatewayClient<Channel>> {
    Ok(WorkerGatewayClient::new(channel(url)?)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}

/// The Orchestrator client every part uses.
pub type Orchestrator = OrchestratorClient<Channel>;
