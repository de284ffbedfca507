//! The `claude` agent: the Claude Code command line for a task, and the parser of its output.
//!
//! The worker runs `claude -p --output-format stream-json --verbose` with the task's agent
//! options (`--model`, `--max-turns`, `--allowedTools`, `--permission-mode`,
//! `--max-budget-usd`) and the prompt on stdin. Stream-json is one JSON object per line:
//! `system` (init, with the session id), `assistant` (text and tool calls, forwarded as
//! progress), `user` (tool results), and last the `result` envelope with the answer,
//! `is_error`, `total_cost_usd`, `usage`, `session_id`, `num_turns` and `duration_ms`. The
//! parser also takes `--output-format json` output: one envelope, or (with `--verbose`) an
//! array of messages ending with it. Unknown message types and fields are ignored.

use orca_proto::pb;
use serde_json::Value;

/// The arguments after the binary; `permission_mode` is the one the worker's policy settled
/// on (see `policy::Policy::permission_mode`), always passed.
pub fn args(opts: Option<&pb::AgentOptions>, permission_mode: &str) -> Vec<String> {
    let mut a: Vec<String> = ["-p", "--output-format", "stream-json", "--verbose"].map(String::from).to_vec();
    if !permission_mode.is_empty() {
        a.extend(["--permission-mode".into(), permission_mode.to_string()]);
    }
    let Some(o) = opts else { return a };
    if !o.model.is_empty() {
        a.extend(["--model".into(), o.model.clone()]);
    }
    if o.max_turns > 0 {
        a.extend(["--max-turns".into(), o.max_turns.to_string()]);
    }
    if o.max_budget_usd > 0.0 {
        a.extend(["--max-budget-usd".into(), o.max_budget_usd.to_string()]);
    }
    if !o.allowed_tools.is_empty() {
        // One comma-separated value: tool patterns such as `Bash(git diff:*)` contain spaces.
        a.extend(["--allowedTools".into(), o.allowed_tools.join(",")]);
    }
    a
}

/// The `result` envelope.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Envelope {
    pub result: String,
    pub is_error: bool,
    pub subtype: String,
    pub cost_usd: f64,
    pub usage: pb::Usage,
    pub session_id: String,
    pub num_turns: u32,
    pub duration_ms: u64,
}

impl Envelope {
    fn from_value(v: &Value) -> Envelope {
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let n = |o: &Value, k: &str| o.get(k).and_then(Value::as_u64).unwrap_or(0);
        let usage = v.get("usage").cloned().unwrap_or(Value::Null);
        let subtype = s("subtype");
        Envelope {
            result: s("result"),
            is_error: v.get("is_error").and_then(Value::as_bool).unwrap_or(subtype.starts_with("error")),
            cost_usd: v.get("total_cost_usd").or_else(|| v.get("cost_usd")).and_then(Value::as_f64).unwrap_or(0.0),
            usage: pb::Usage {
                input_tokens: n(&usage, "input_tokens"),
                output_tokens: n(&usage, "output_tokens"),
                cache_read_input_tokens: n(&usage, "cache_read_input_tokens"),
                cache_creation_input_tokens: n(&usage, "cache_creation_input_tokens"),
            },
            session_id: s("session_id"),
            num_turns: n(v, "num_turns") as u32,
            duration_ms: n(v, "duration_ms"),
            subtype,
        }
    }

    /// Whether a retry could help: running out of turns or budget will happen again.
    pub fn retryable(&self) -> bool {
        !self.subtype.starts_with("error_max")
    }

    /// The error text of a failed run.
    pub fn error_text(&self) -> String {
        match (self.result.is_empty(), self.subtype.is_empty()) {
            (false, _) => self.result.clone(),
            (true, false) => format!("claude ended with {}", self.subtype),
            (true, true) => "claude reported an error".into(),
        }
    }
}

fn is_result(v: &Value) -> bool {
    v.get("type").and_then(Value::as_str) == Some("result")
}

/// Progress text of an assistant message: its text blocks and the names of the tools it calls.
fn progress_of(v: &Value) -> Option<String> {
    let content = v.get("message")?.get("content")?.as_array()?;
    let mut parts = Vec::new();
    for block in content {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                if let Some(t) = block.get("text").and_then(Value::as_str)
                    && !t.trim().is_empty()
                {
                    parts.push(t.trim().to_string());
                }
            }
            Some("tool_use") => {
                let name = block.get("name").and_then(Value::as_str).unwrap_or("tool");
                parts.push(format!("[tool] {name}"));
            }
            _ => {}
        }
    }
    (!parts.is_empty()).then(|| parts.join("\n"))
}

/// Reads Claude Code's output line by line.
#[derive(Debug, Default)]
pub struct Parser {
    envelope: Option<Envelope>,
    session_id: String,
}

impl Parser {
    /// Takes one stdout line; returns progress text to forward, if any.
    pub fn line(&mut self, line: &[u8]) -> Option<String> {
        let line = line.trim_ascii();
        if line.first() != Some(&b'{') {
            return None;
        }
        let v: Value = serde_json::from_slice(line).ok()?;
        match v.get("type").and_then(Value::as_str) {
            Some("result") => {
                self.envelope = Some(Envelope::from_value(&v));
                None
            }
            Some("system") => {
                if let Some(s) = v.get("session_id").and_then(Value::as_str) {
                    self.session_id = s.to_string();
                }
                None
            }
            Some("assistant") => progress_of(&v),
            _ => None,
        }
    }

    /// The envelope, from the lines seen or else from the whole of `stdout` (json output,
    /// possibly pretty-printed or an array of messages).
    pub fn finish(self, stdout: &[u8]) -> Option<Envelope> {
        let mut env = self.envelope.or_else(|| {
            let v: Value = serde_json::from_slice(stdout.trim_ascii()).ok()?;
            match &v {
                Value::Array(items) => items.iter().rev().find(|m| is_result(m)).map(Envelope::from_value),
                Value::Object(_) if is_result(&v) => Some(Envelope::from_value(&v)),
                _ => None,
            }
        })?;
        if env.session_id.is_empty() {
            env.session_id = self.session_id;
        }
        Some(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: &str = "5f2c6b1e-8d3a-4c71-9b0e-2a6f4d8c1e90";

    fn stream() -> Vec<String> {
        vec![
            format!(
                r#"{{"type":"system","subtype":"init","cwd":"/tmp/ws","session_id":"{SESSION}","tools":["Task","Bash","Read","Edit"],"mcp_servers":[],"model":"claude-sonnet-4-5-20250929","permissionMode":"acceptEdits","slash_commands":["compact"],"apiKeySource":"ANTHROPIC_API_KEY","claude_code_version":"2.0.14","output_style":"default","agents":[],"uuid":"0b1c"}}"#
            ),
            format!(
                r#"{{"type":"assistant","message":{{"id":"msg_01A","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{{"type":"text","text":"I'll read the notes first."}}],"stop_reason":null,"stop_sequence":null,"usage":{{"input_tokens":4,"cache_creation_input_tokens":1532,"cache_read_input_tokens":12210,"output_tokens":8,"service_tier":"standard"}}}},"parent_tool_use_id":null,"session_id":"{SESSION}","uuid":"1a2b"}}"#
            ),
            format!(
                r#"{{"type":"assistant","message":{{"id":"msg_01A","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{{"type":"tool_use","id":"toolu_01","name":"Read","input":{{"file_path":"/tmp/ws/notes.txt"}}}}],"stop_reason":null,"stop_sequence":null,"usage":{{"input_tokens":4,"output_tokens":60}}}},"parent_tool_use_id":null,"session_id":"{SESSION}","uuid":"2b3c"}}"#
            ),
            format!(
                r#"{{"type":"user","message":{{"role":"user","content":[{{"tool_use_id":"toolu_01","type":"tool_result","content":"hello"}}]}},"parent_tool_use_id":null,"session_id":"{SESSION}","uuid":"3c4d"}}"#
            ),
            format!(
                r#"{{"type":"result","subtype":"success","is_error":false,"duration_ms":5321,"duration_api_ms":4810,"num_turns":3,"result":"The notes say hello.","session_id":"{SESSION}","total_cost_usd":0.0213405,"usage":{{"input_tokens":12,"cache_creation_input_tokens":1532,"cache_read_input_tokens":24420,"output_tokens":120,"server_tool_use":{{"web_search_requests":0}},"service_tier":"standard"}},"permission_denials":[],"uuid":"4d5e"}}"#
            ),
        ]
    }

    #[test]
    fn stream_json_gives_progress_and_the_envelope() {
        let mut p = Parser::default();
        let progress: Vec<String> = stream().iter().filter_map(|l| p.line(l.as_bytes())).collect();
        assert_eq!(progress, vec!["I'll read the notes first.", "[tool] Read"]);
        let e = p.finish(b"").unwrap();
        assert_eq!(e.result, "The notes say hello.");
        assert!(!e.is_error);
        assert_eq!(e.subtype, "success");
        assert_eq!(e.cost_usd, 0.0213405);
        assert_eq!(
            e.usage,
            pb::Usage {
                input_tokens: 12,
                output_tokens: 120,
                cache_read_input_tokens: 24420,
                cache_creation_input_tokens: 1532
            }
        );
        assert_eq!((e.session_id.as_str(), e.num_turns, e.duration_ms), (SESSION, 3, 5321));
    }

    #[test]
    fn error_envelopes_without_result_text() {
        let mut p = Parser::default();
        p.line(stream()[0].as_bytes());
        let line = r#"{"type":"result","subtype":"error_max_turns","is_error":true,"duration_ms":9000,"num_turns":2,"total_cost_usd":0.05,"usage":{"input_tokens":3,"output_tokens":7}}"#;
        assert_eq!(p.line(line.as_bytes()), None);
        let e = p.finish(b"").unwrap();
        assert!(e.is_error && !e.retryable());
        assert_eq!(e.error_text(), "claude ended with error_max_turns");
        assert_eq!(e.session_id, SESSION, "taken from the init message");
        assert_eq!(e.usage.output_tokens, 7);
    }

    #[test]
    fn json_output_single_object_or_array() {
        let pretty = format!(
            "{{\n  \"type\": \"result\",\n  \"subtype\": \"success\",\n  \"is_error\": false,\n  \"duration_ms\": 1998,\n  \"num_turns\": 1,\n  \"result\": \"Hello CLI Test\",\n  \"session_id\": \"{SESSION}\",\n  \"total_cost_usd\": 0.0079825,\n  \"usage\": {{\"input_tokens\": 3, \"cache_read_input_tokens\": 15635, \"output_tokens\": 6}}\n}}\n"
        );
        let mut p = Parser::default();
        for l in pretty.lines() {
            p.line(l.as_bytes());
        }
        let e = p.finish(pretty.as_bytes()).unwrap();
        assert_eq!(
            (e.result.as_str(), e.cost_usd, e.usage.cache_read_input_tokens),
            ("Hello CLI Test", 0.0079825, 15635)
        );

        let one_line = stream()[4].clone();
        let mut p = Parser::default();
        p.line(one_line.as_bytes());
        assert_eq!(p.finish(one_line.as_bytes()).unwrap().num_turns, 3);

        let array = format!("[{},{},{}]", stream()[0], stream()[1], stream()[4]);
        let e = Parser::default().finish(array.as_bytes()).unwrap();
        assert_eq!(e.result, "The notes say hello.");
    }

    #[test]
    fn noise_is_ignored() {
        let mut p = Parser::default();
        assert_eq!(p.line(b"not json"), None);
        assert_eq!(p.line(b"{broken"), None);
        assert_eq!(p.line(br#"{"type":"stream_event","event":{}}"#), None);
        assert!(p.finish(b"plain text").is_none());
    }

    #[test]
    fn options_become_flags() {
        assert_eq!(args(None, ""), vec!["-p", "--output-format", "stream-json", "--verbose"]);
        let o = pb::AgentOptions {
            model: "opus".into(),
            max_turns: 5,
            allowed_tools: vec!["Read".into(), "Bash(git diff:*)".into()],
            permission_mode: "acceptEdits".into(),
            max_budget_usd: 1.5,
        };
        assert_eq!(
            args(Some(&o), "acceptEdits")[4..],
            [
                "--permission-mode",
                "acceptEdits",
                "--model",
                "opus",
                "--max-turns",
                "5",
                "--max-budget-usd",
                "1.5",
                "--allowedTools",
                "Read,Bash(git diff:*)"
            ]
        );
    }
}
