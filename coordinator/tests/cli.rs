//! The binary's start-up checks: bad flags and a database newer than the binary are clear
//! errors, reported before anything is served.

use std::process::Command;

fn coordinator() -> Command {
    Command::new(env!("CARGO_BIN_EXE_orca-coordinator"))
}

#[test]
fn bad_flags_are_refused_with_the_flag_named() {
    let out = coordinator().args(["--lease-seconds", "0"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--lease-seconds"), "{err}");
    let out = coordinator().args(["--listen", "not-an-address"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
}

#[test]
fn database_newer_than_the_binary_is_a_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("future.db");
    // A database that claims a schema version from the future.
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let url = format!("sqlite://{}?mode=rwc", db.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::raw_sql("PRAGMA user_version = 999").execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
    });
    let out = coordinator().args(["--listen", "127.0.0.1:0", "--db"]).arg(&db).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("newer than this binary"), "{err}");
}
