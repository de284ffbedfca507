//! The `orca` binary without a coordinator: usage errors and an unreachable coordinator are
//! clear messages with a non-zero exit.

use std::process::Command;

fn orca() -> Command {
    Command::new(env!("CARGO_BIN_EXE_orca"))
}

#[test]
fn unreachable_coordinator_is_a_clear_error() {
    // Port 1 on loopback: nothing listens there.
    let out = orca().args(["--coordinator", "http://127.0.0.1:1", "status", "some-job"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("orca: no coordinator at http://127.0.0.1:1 (is `orca up` or orca-coordinator running?"),
        "{err}"
    );
}

#[test]
fn bad_address_and_missing_arguments_are_refused() {
    let out = orca().args(["--coordinator", "not a url", "jobs"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect to not a url"));
    let out = orca().args(["status"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("<JOB>"));
}
