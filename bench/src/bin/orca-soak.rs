//! `orca-soak`: the soak of docs/resilience.md (a normal workload alone, then beside a
//! hostile mix of calls within the limits). Parses the flags and runs
//! [`orca_bench::soak`]; exits 0 on pass, 1 on any failure, 2 when the run could not be done.

use clap::Parser;
use orca_bench::soak::{self, Args};

#[tokio::main]
async fn main() {
    std::process::exit(soak::main(Args::parse()).await);
}
