//! The `--config` file shared by the three binaries: one TOML file with the sections
//! `[coordinator]`, `[worker]` and `[client]`. Each binary reads its own section; a key is a
//! long flag name with `_` for `-` (`lease_seconds`), a repeatable flag takes an array.
//!
//! What stays true here: precedence is flag > environment > file > default, because the
//! file's values become command-line arguments placed before the real ones, and only for
//! flags given neither on the command line nor in the environment; clap then parses and
//! checks everything as one command line, so a value in the file is checked exactly as the
//! same flag would be. An unknown section or key is an error naming it and the file. The
//! file is read only when named (`--config` or `ORCA_CONFIG`), never found implicitly.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;

/// The sections a file may have.
pub const SECTIONS: [&str; 3] = ["coordinator", "worker", "client"];

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("configuration file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("configuration file {path}: unknown {what}")]
    Unknown { path: PathBuf, what: String },
    #[error("configuration file {path}: [{section}] {key}: {message}")]
    Value { path: PathBuf, section: String, key: String, message: String },
}

/// The arguments to parse: `args` with the values of `section` of the file named by the
/// `config` flag (or its environment variable) put in front, for the flags given neither on
/// the command line nor in the environment. Without a file, or when `args` do not parse
/// (`--help`, a bad flag: clap reports it on the real parse), `args` come back unchanged.
pub fn with_file(cmd: &clap::Command, section: &str, args: Vec<OsString>) -> Result<Vec<OsString>, ConfigError> {
    let Ok(matches) = cmd.clone().try_get_matches_from(&args) else {
        return Ok(args);
    };
    let Some(path) = matches.get_one::<PathBuf>("config").cloned() else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
    let from_file = file_args(cmd, &matches, section, &path, &text)?;
    let mut out = Vec::with_capacity(args.len() + from_file.len());
    let mut args = args.into_iter();
    out.extend(args.next());
    out.extend(from_file);
    out.extend(args);
    Ok(out)
}

/// The keys an example file documents in `section`, set or commented out (`# key = ...`):
/// how each binary's tests check that `deploy/orca.toml.example` lists every flag.
pub fn documented_keys(text: &str, section: &str) -> std::collections::BTreeSet<String> {
    let mut current = String::new();
    let mut keys = std::collections::BTreeSet::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_string();
            continue;
        }
        let line = line.strip_prefix('#').map(str::trim_start).unwrap_or(line);
        let Some((key, _)) = line.split_once(" = ") else { continue };
        if current == section && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            keys.insert(key.to_string());
        }
    }
    keys
}

/// The long flags a command takes in a file (all but `--config`, `--help`, `--version`).
pub fn file_keys(cmd: &clap::Command) -> std::collections::BTreeSet<String> {
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| a.get_long())
        .filter(|l| !matches!(*l, "config" | "help" | "version"))
        .map(|l| l.replace('-', "_"))
        .collect()
}

/// The command-line arguments that `section` of the file `text` stands for.
fn file_args(
    cmd: &clap::Command,
    matches: &clap::ArgMatches,
    section: &str,
    path: &Path,
    text: &str,
) -> Result<Vec<OsString>, ConfigError> {
    let table: toml::Table =
        toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
    for (name, value) in &table {
        if !SECTIONS.contains(&name.as_str()) || !value.is_table() {
            let what = format!("section [{name}] (sections: {})", SECTIONS.join(", "));
            return Err(ConfigError::Unknown { path: path.to_path_buf(), what });
        }
    }
    let Some(keys) = table.get(section).and_then(toml::Value::as_table) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (key, value) in keys {
        let long = key.replace('_', "-");
        let arg =
            cmd.get_arguments().find(|a| a.get_long() == Some(long.as_str()) && a.get_id() != "config").ok_or_else(
                || ConfigError::Unknown { path: path.to_path_buf(), what: format!("key {key} in [{section}]") },
            )?;
        let given = matches.value_source(arg.get_id().as_str());
        if matches!(given, Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
            continue;
        }
        let bad = |message: &str| ConfigError::Value {
            path: path.to_path_buf(),
            section: section.to_string(),
            key: key.clone(),
            message: message.to_string(),
        };
        out.extend(flag_args(arg, &long, value).map_err(|m| bad(&m))?);
    }
    Ok(out)
}

/// One key's value as arguments: `--flag=value`, one per element of an array, and for a
/// switch `--flag` when true.
fn flag_args(arg: &clap::Arg, long: &str, value: &toml::Value) -> Result<Vec<OsString>, String> {
    let switch = matches!(arg.get_action(), clap::ArgAction::SetTrue);
    if switch {
        return match value.as_bool() {
            Some(true) => Ok(vec![format!("--{long}").into()]),
            Some(false) => Ok(vec![]),
            None => Err("must be true or false".into()),
        };
    }
    let repeatable = matches!(arg.get_action(), clap::ArgAction::Append);
    let values: Vec<&toml::Value> = match value {
        toml::Value::Array(items) if repeatable => items.iter().collect(),
        toml::Value::Array(_) => return Err("takes one value, not an array".into()),
        v => vec![v],
    };
    values.into_iter().map(|v| scalar(v).map(|s| format!("--{long}={s}").into())).collect()
}

fn scalar(v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        _ => Err("must be a string, a number or a boolean".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction, Command};

    fn cmd() -> Command {
        Command::new("t")
            .arg(Arg::new("config").long("config").env("T_CONFIG").value_parser(clap::value_parser!(PathBuf)))
            .arg(Arg::new("lease_seconds").long("lease-seconds").default_value("30"))
            .arg(Arg::new("label").long("label").action(ArgAction::Append))
            .arg(Arg::new("json").long("json").action(ArgAction::SetTrue))
    }

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orca.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn parse(args: &[&str]) -> Result<clap::ArgMatches, ConfigError> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let args = with_file(&cmd(), "coordinator", args)?;
        Ok(cmd().try_get_matches_from(args).unwrap())
    }

    fn lease(m: &clap::ArgMatches) -> String {
        m.get_one::<String>("lease_seconds").unwrap().clone()
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let (_d, p) = file("[coordinator]\nlease_seconds = 12\nlabel = [\"a=1\", \"b=2\"]\njson = true\n");
        let p = p.to_str().unwrap();
        let m = parse(&["t", "--config", p]).unwrap();
        assert_eq!(lease(&m), "12");
        let labels: Vec<&String> = m.get_many::<String>("label").unwrap().collect();
        assert_eq!(labels, ["a=1", "b=2"]);
        assert!(m.get_flag("json"));
        assert_eq!(lease(&parse(&["t", "--config", p, "--lease-seconds", "7"]).unwrap()), "7");
        assert_eq!(lease(&parse(&["t"]).unwrap()), "30", "no file, the default");
    }

    #[test]
    fn environment_beats_file() {
        let (_d, p) = file("[coordinator]\nlease_seconds = 12\n");
        // A variable of this test alone, so that the other tests (in parallel) do not see it;
        // set before the command is built, which is when clap reads it.
        // SAFETY: only this test reads or writes T_LEASE_ENV_TEST.
        unsafe { std::env::set_var("T_LEASE_ENV_TEST", "9") };
        let cmd = cmd().mut_arg("lease_seconds", |a| a.env("T_LEASE_ENV_TEST"));
        let args = vec![OsString::from("t"), "--config".into(), p.into_os_string()];
        let args = with_file(&cmd, "coordinator", args).unwrap();
        let m = cmd.try_get_matches_from(args).unwrap();
        unsafe { std::env::remove_var("T_LEASE_ENV_TEST") };
        assert_eq!(lease(&m), "9");
    }

    #[test]
    fn unknown_keys_and_sections_name_themselves_and_the_file() {
        let (_d, p) = file("[coordinator]\nlease_secs = 1\n");
        let e = parse(&["t", "--config", p.to_str().unwrap()]).unwrap_err().to_string();
        assert!(e.contains("lease_secs") && e.contains(p.to_str().unwrap()), "{e}");
        let (_d, p) = file("[coordinatr]\n");
        let e = parse(&["t", "--config", p.to_str().unwrap()]).unwrap_err().to_string();
        assert!(e.contains("[coordinatr]"), "{e}");
        let (_d, p) = file("[coordinator]\nlease_seconds = [1, 2]\n");
        let e = parse(&["t", "--config", p.to_str().unwrap()]).unwrap_err().to_string();
        assert!(e.contains("[coordinator] lease_seconds: takes one value"), "{e}");
        let e = parse(&["t", "--config", "/nonexistent/orca.toml"]).unwrap_err().to_string();
        assert!(e.contains("cannot read the configuration file /nonexistent/orca.toml"), "{e}");
    }

    #[test]
    fn other_sections_are_left_to_their_binaries() {
        let (_d, p) = file("[worker]\nslots = 4\n[client]\ncoordinator = \"http://x:1\"\n");
        assert_eq!(lease(&parse(&["t", "--config", p.to_str().unwrap()]).unwrap()), "30");
    }
}
