//! `orca-coordinator`: parses flags, sets up logging, runs until SIGTERM or SIGINT.
//! `orca-coordinator backup --db PATH --to FILE` instead takes an online backup.

use clap::{CommandFactory, Parser};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "backup") {
        std::process::exit(orca_coordinator::backup::main(argv.split_off(2)).await);
    }
    let args = orca_proto::config_file::with_file(&orca_coordinator::Config::command(), "coordinator", argv);
    let config = match args {
        Ok(args) => orca_coordinator::Config::parse_from(args),
        Err(e) => {
            eprintln!("orca-coordinator: {e}");
            std::process::exit(2);
        }
    };
    let telemetry = orca_telemetry::init("orca-coordinator", config.log_format, "info");
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
        on_signal.cancel();
    });
    let result = orca_coordinator::run(config, shutdown).await;
    telemetry.shutdown().await;
    if let Err(e) = result {
        tracing::error!(error = %e, "coordinator failed");
        eprintln!("orca-coordinator: {e}");
        std::process::exit(1);
    }
    Ok(())
}
