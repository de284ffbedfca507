//! The `command` agent's template: `--agent-command` with `{prompt}`, `{task_id}`,
//! `{job_id}`, `{workspace}` and `{attempt}` replaced by shell-quoted values, run with
//! `sh -c`. The same values are in the environment (`ORCA_PROMPT`, `ORCA_TASK_ID`, ...), and
//! the prompt is also on stdin.
//!
//! What stays true: a substituted value is always one shell word, whatever it contains, and
//! is never substituted again (a prompt containing `{task_id}` stays as written).

use std::path::Path;

/// Longest prompt put in `ORCA_PROMPT` or substituted for `{prompt}`: Linux refuses a single
/// argument or environment string over 128 KiB. Longer prompts are only on stdin.
pub const MAX_INLINE_PROMPT: usize = 100_000;

/// The values a template and the environment get.
#[derive(Clone, Copy, Debug)]
pub struct Values<'a> {
    pub prompt: &'a str,
    pub task_id: i64,
    pub job_id: &'a str,
    pub workspace: &'a Path,
    pub attempt: u32,
}

/// `s` as one POSIX shell word.
pub fn shell_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./=:,+@%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The template with its placeholders replaced; unknown `{...}` are left as they are. Fails
/// when `{prompt}` is used with a prompt too long for a command line.
pub fn render(template: &str, v: &Values) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let name = after.find('}').map(|j| &after[1..j]);
        let value = match name {
            Some("prompt") => {
                if v.prompt.len() > MAX_INLINE_PROMPT {
                    return Err(format!(
                        "the prompt is {} bytes, too long for {{prompt}} (at most {MAX_INLINE_PROMPT}); read it from stdin",
                        v.prompt.len()
                    ));
                }
                Some(shell_quote(v.prompt))
            }
            Some("task_id") => Some(v.task_id.to_string()),
            Some("job_id") => Some(shell_quote(v.job_id)),
            Some("workspace") => Some(shell_quote(&v.workspace.to_string_lossy())),
            Some("attempt") => Some(v.attempt.to_string()),
            _ => None,
        };
        match (value, name) {
            (Some(val), Some(n)) => {
                out.push_str(&val);
                rest = &after[n.len() + 2..];
            }
            _ => {
                out.push('{');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Shell words that are not programs found in PATH: builtins and keywords.
const SHELL_WORDS: &[&str] = &[
    ".", ":", "[", "!", "{", "alias", "break", "case", "cd", "command", "continue", "eval", "exec", "exit", "export",
    "for", "if", "read", "readonly", "return", "set", "shift", "test", "time", "trap", "ulimit", "umask", "unset",
    "until", "wait", "while",
];

/// The program a template starts with, when that is a plain word the shell looks up as a
/// program (a path, or a name in PATH): what the worker checks before taking work. `None`
/// when it cannot tell without running the shell (a builtin or keyword, a variable, quotes,
/// a placeholder, an assignment, a subshell).
pub fn leading_program(template: &str) -> Option<&str> {
    let t = template.trim_start();
    let end = t.find(|c: char| c.is_whitespace() || ";|&<>()".contains(c)).unwrap_or(t.len());
    let word = &t[..end];
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./+,@%:".contains(c);
    if word.is_empty() || !word.chars().all(plain) || SHELL_WORDS.contains(&word) {
        return None;
    }
    Some(word)
}

/// A rendered command as the words `sh -c` would run, when it is only plain words and
/// single-quoted strings (what [`shell_quote`] makes) and starts with a program: then the
/// worker runs it without a shell, the same way. `None` for anything the shell would do more
/// with: expansions, operators, redirections, other quotes, escapes, globs, comments, an
/// assignment, a builtin or keyword.
pub fn plain_words(cmd: &str) -> Option<Vec<String>> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./=:,+@%".contains(c);
    let mut words = Vec::new();
    let mut chars = cmd.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut word = String::new();
        while let Some(&c) = chars.peek() {
            match c {
                ' ' | '\t' => break,
                '\'' => {
                    chars.next();
                    loop {
                        match chars.next()? {
                            '\'' => break,
                            c => word.push(c),
                        }
                    }
                }
                // `\'`: the escaped quote inside what shell_quote makes ('it'\''s').
                '\\' => {
                    chars.next();
                    if chars.next()? != '\'' {
                        return None;
                    }
                    word.push('\'');
                }
                c if plain(c) => {
                    word.push(c);
                    chars.next();
                }
                _ => return None,
            }
        }
        words.push(word);
    }
    let first = words.first()?;
    let program_like = !first.is_empty() && !first.contains('=') && !SHELL_WORDS.contains(&first.as_str());
    // A leading `~` or a `#` is not plain, so tildes and comments never get here.
    program_like.then_some(words)
}

/// The `ORCA_*` variables every agent and hook gets.
pub fn env(v: &Values) -> Vec<(String, String)> {
    let mut e = vec![
        ("ORCA_TASK_ID".to_string(), v.task_id.to_string()),
        ("ORCA_JOB_ID".to_string(), v.job_id.to_string()),
        ("ORCA_WORKSPACE".to_string(), v.workspace.to_string_lossy().into_owned()),
        ("ORCA_ATTEMPT".to_string(), v.attempt.to_string()),
    ];
    if v.prompt.len() <= MAX_INLINE_PROMPT && !v.prompt.contains('\0') {
        e.push(("ORCA_PROMPT".to_string(), v.prompt.to_string()));
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(prompt: &str) -> Values<'_> {
        Values { prompt, task_id: 42, job_id: "0199-abc", workspace: Path::new("/tmp/my work"), attempt: 3 }
    }

    #[test]
    fn quoting_makes_one_word() {
        assert_eq!(shell_quote("simple-1.txt"), "simple-1.txt");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("two words"), "'two words'");
        assert_eq!(shell_quote("it's $HOME `x`"), r"'it'\''s $HOME `x`'");
    }

    #[test]
    fn placeholders_are_substituted_once() {
        let t = "agent --task {task_id} --job {job_id} --dir {workspace} --try {attempt} -- {prompt} {unknown} ${HOME}";
        let got = render(t, &values("say {task_id} 'hi'")).unwrap();
        assert_eq!(
            got,
            r"agent --task 42 --job 0199-abc --dir '/tmp/my work' --try 3 -- 'say {task_id} '\''hi'\''' {unknown} ${HOME}"
        );
        assert_eq!(render("no placeholders {", &values("p")).unwrap(), "no placeholders {");
    }

    #[test]
    fn quoted_values_survive_the_shell() {
        let prompt = "a 'quoted' \"double\" $VAR `cmd` \\ ; | & \n newline";
        let cmd = render("printf %s {prompt}", &values(prompt)).unwrap();
        let out = std::process::Command::new("sh").arg("-c").arg(&cmd).output().unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), prompt);
    }

    #[test]
    fn the_leading_program_is_found_only_when_plain() {
        for (t, want) in [
            ("/opt/agents/run.sh", Some("/opt/agents/run.sh")),
            ("  my-agent --task {task_id} {prompt}", Some("my-agent")),
            ("sh /x/agent.sh", Some("sh")),
            ("run.sh;echo done", Some("run.sh")),
            ("cd /src && make", None),
            ("exec agent", None),
            ("$AGENT {prompt}", None),
            ("'quoted prog' x", None),
            ("FOO=1 agent", None),
            ("{workspace}/run", None),
            ("(cd x; y)", None),
            ("", None),
        ] {
            assert_eq!(leading_program(t), want, "{t:?}");
        }
    }

    #[test]
    fn plain_commands_split_as_the_shell_splits_them() {
        let prompt = "a 'quoted' \"double\" $VAR `cmd` \\ ; | & \n newline";
        let cmd = render("printf %s-%s {prompt} {workspace}", &values(prompt)).unwrap();
        let words = plain_words(&cmd).unwrap();
        assert_eq!(words, vec!["printf", "%s-%s", prompt, "/tmp/my work"]);
        // What sh makes of it is the same.
        let out = std::process::Command::new("sh").arg("-c").arg(&cmd).output().unwrap();
        let direct = std::process::Command::new(&words[0]).args(&words[1..]).output().unwrap();
        assert_eq!(out.stdout, direct.stdout);
        assert_eq!(plain_words("true"), Some(vec!["true".to_string()]));
        assert_eq!(plain_words("  /bin/echo  a   b "), Some(vec!["/bin/echo".into(), "a".into(), "b".into()]));
        for shell in [
            "echo $HOME",
            "a && b",
            "a; b",
            "a | b",
            "a > out",
            "echo \"x\"",
            "echo a\\ b",
            "ls *.rs",
            "FOO=1 agent",
            "cd /tmp",
            "exec agent",
            "echo 'unclosed",
            "~/bin/agent",
            "agent # note",
            "",
            "''",
        ] {
            assert_eq!(plain_words(shell), None, "{shell:?}");
        }
    }

    #[test]
    fn long_prompts_stay_off_the_command_line() {
        let long = "x".repeat(MAX_INLINE_PROMPT + 1);
        assert!(render("a {prompt}", &values(&long)).unwrap_err().contains("stdin"));
        assert!(render("a {task_id}", &values(&long)).is_ok());
        assert!(!env(&values(&long)).iter().any(|(k, _)| k == "ORCA_PROMPT"));
        assert!(env(&values("short")).iter().any(|(k, v)| k == "ORCA_PROMPT" && v == "short"));
    }
}
