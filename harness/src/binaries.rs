//! Where the workspace's built binaries are: next to the running executable, whether that is
//! a tool in `target/<profile>/` or a test in `target/<profile>/deps/`.

use std::path::{Path, PathBuf};

use crate::Error;

/// The directory of the built binaries: this executable's directory, or its parent when this
/// executable is a test in `deps/`.
pub fn binary_dir() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe().map_err(Error::io("locate the current executable"))?;
    let dir = exe.parent().ok_or_else(|| Error::NotBuilt(exe.clone()))?;
    Ok(if dir.file_name().is_some_and(|n| n == "deps") { dir.parent().unwrap_or(dir) } else { dir }.to_path_buf())
}

/// `dir/name`, when it has been built.
pub fn binary_in(dir: &Path, name: &str) -> Result<PathBuf, Error> {
    let path = dir.join(name);
    if path.exists() { Ok(path) } else { Err(Error::NotBuilt(path)) }
}
