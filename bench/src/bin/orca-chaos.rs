//! `orca-chaos`: the chaos run of docs/resilience.md (tasks under coordinator and worker
//! SIGKILLs, then the invariant checks). Parses the flags and runs [`orca_bench::chaos`];
//! exits 0 on pass, 1 on any violation, 2 when the run could not be done.

use clap::Parser;
use orca_bench::chaos::{self, Args};

#[tokio::main]
async fn main() {
    std::process::exit(chaos::main(Args::parse()).await);
}
