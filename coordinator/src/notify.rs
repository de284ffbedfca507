//! systemd notifications of the coordinator: READY=1 once serving (after migrations and the
//! restore), STOPPING=1 on shutdown, and WATCHDOG=1 from the dispatcher, the loop that would
//! hang: the watchdog is fed only while the dispatcher answers.

use orca_proto::systemd;
use tokio_util::sync::CancellationToken;

use crate::dispatch::Handle;

pub use systemd::status;

pub fn ready() {
    systemd::ready("serving");
}

pub fn stopping() {
    systemd::stopping();
}

/// With `WatchdogSec` set, asks the dispatcher for its stats every half period and sends
/// WATCHDOG=1 on each answer in time; a stuck dispatcher lets systemd restart the service.
pub async fn watchdog(handle: Handle, shutdown: CancellationToken) {
    let Some(every) = systemd::watchdog_interval() else { return };
    tracing::info!(every_ms = every.as_millis() as u64, "systemd watchdog enabled");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match tokio::time::timeout(every, handle.stats()).await {
            Ok(Ok(_)) => systemd::watchdog(),
            Ok(Err(_)) => return,
            Err(_) => tracing::warn!("the dispatcher did not answer within the watchdog period"),
        }
    }
}
