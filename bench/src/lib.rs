//! Orca's benchmark and chaos run as a library, so that their binaries stay thin:
//! `orca-bench` (`src/main.rs`, figures against the bar, docs/benchmarks.md) and
//! `orca-chaos` (`src/bin/orca-chaos.rs`, [`chaos`], docs/resilience.md). Both drive the real
//! `orca-coordinator` and `orca-worker` processes through `orca-harness`.

pub mod chaos;
pub mod rpc;
pub mod soak;
