//! Text for `sh`: quoting a word so that it survives `sh -c` unchanged, and writing agent
//! scripts the workers run.

use std::path::{Path, PathBuf};

/// `s` as one single-quoted `sh` word.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Writes the executable `sh` script `dir/name` (`#!/bin/sh`, then `body`); returns its path.
pub fn write_script(dir: &Path, name: &str, body: &str) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n"))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}
