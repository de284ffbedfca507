//! `orca-worker`: parses flags, sets up logging, runs the worker until it drained after
//! SIGTERM or SIGINT. Run as `orca-worker __orca_supervise ...` it is instead the small
//! per-task supervisor (see `agent::supervise`), which needs neither logging nor a runtime.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use orca_worker::agent::supervise;

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == supervise::SUBCOMMAND) {
        std::process::exit(supervise::main(&argv[2..]));
    }
    let args = match orca_proto::config_file::with_file(&orca_worker::Args::command(), "worker", argv) {
        Ok(args) => orca_worker::Args::parse_from(args),
        Err(e) => {
            eprintln!("orca-worker: {e}");
            return ExitCode::from(2);
        }
    };
    let log_format = args.log_format;
    let config = match args.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("orca-worker: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("orca-worker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The trace exporter's connection lives on the runtime.
    let telemetry = {
        let _in_runtime = runtime.enter();
        orca_telemetry::init("orca-worker", log_format, "info")
    };
    let result = runtime.block_on(orca_worker::run(config));
    runtime.block_on(telemetry.shutdown());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orca-worker: {e}");
            ExitCode::FAILURE
        }
    }
}
