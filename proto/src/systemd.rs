//! The systemd service-manager protocol (`Type=notify`), shared by the coordinator and the
//! worker. Every call does nothing when `NOTIFY_SOCKET` is unset (not run by systemd), and a
//! failure to notify is logged by the caller's subscriber, never fatal.

use std::time::Duration;

use sd_notify::NotifyState;

/// Variables of the protocol, which processes the worker starts must not inherit (an agent
/// could otherwise speak for the worker).
pub const VARIABLES: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        eprintln!("systemd notification failed: {e}");
    }
}

/// READY=1 with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// STATUS=... (shown by `systemctl status`).
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// STOPPING=1.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// WATCHDOG=1.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to send WATCHDOG=1 when `WatchdogSec` is set: half the period systemd allows.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| (d / 2).max(Duration::from_millis(10)))
}
