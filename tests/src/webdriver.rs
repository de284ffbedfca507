//! A small WebDriver client for the web dashboard's tests: `chromedriver` (Debian's
//! `chromium-driver`) started on a free port, one headless Chromium session, and the few
//! commands the tests use (open a URL, run a script, find and click an element, accept a
//! confirmation, take a screenshot), over plain HTTP/1.1 JSON.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::WAIT;

/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where Chromium and its driver are, or why the tests cannot run (they are skipped with a
/// message only when `ORCA_SKIP_BROWSER=1`; otherwise that is a failure).
pub fn tools() -> Result<(PathBuf, PathBuf), String> {
    let find = |names: &[&str]| {
        names.iter().map(PathBuf::from).find(|p| p.exists()).or_else(|| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path).flat_map(|d| names.iter().map(move |n| d.join(n))).find(|p| p.exists())
        })
    };
    let browser = find(&["/usr/bin/chromium", "chromium", "chromium-browser"])
        .ok_or("chromium is not installed (scripts/web-check.sh installs it)")?;
    let driver = find(&["/usr/bin/chromedriver", "chromedriver"])
        .ok_or("chromedriver is not installed (scripts/web-check.sh installs chromium-driver)")?;
    Ok((browser, driver))
}

/// A running chromedriver with one browser session; both end on drop.
pub struct Browser {
    driver: Child,
    addr: String,
    session: String,
}

/// One HTTP exchange with the driver: (status, JSON body).
fn http(addr: &str, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<(u16, Value)> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(WAIT))?;
    let payload = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    )?;
    // The driver may keep the connection open: read the head, then Content-Length bytes.
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    let (head, mut body) = loop {
        let k = s.read(&mut chunk)?;
        if k == 0 {
            let text = String::from_utf8_lossy(&raw).to_string();
            let (h, b) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
            break (h.to_string(), b.as_bytes().to_vec());
        }
        raw.extend_from_slice(&chunk[..k]);
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break (String::from_utf8_lossy(&raw[..i]).to_string(), raw[i + 4..].to_vec());
        }
    };
    let lower = head.to_ascii_lowercase();
    let length =
        lower.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok());
    match length {
        Some(n) => {
            while body.len() < n {
                let k = s.read(&mut chunk)?;
                if k == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..k]);
            }
        }
        None => {
            s.read_to_end(&mut body)?;
        }
    }
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = String::from_utf8_lossy(&body).to_string();
    let body = if lower.contains("transfer-encoding: chunked") { dechunk(&body) } else { body };
    Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

/// The body of a chunked HTTP/1.1 answer.
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session at 1280x800.
    pub fn start(log: &Path) -> Browser {
        let (browser, driver) = tools().unwrap_or_else(|e| panic!("{e}"));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr = format!("127.0.0.1:{port}");
        let mut b = Browser { driver: child, addr, session: String::new() };
        let start = Instant::now();
        while !matches!(http(&b.addr, "GET", "/status", None), Ok((200, ref v)) if v["value"]["ready"] == true) {
            assert!(start.elapsed() < WAIT, "chromedriver did not become ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": browser,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,800", "--no-first-run", "--disable-extensions"],
        }}}});
        let (status, v) = http(&b.addr, "POST", "/session", Some(&caps)).expect("new session");
        assert_eq!(status, 200, "new session: {v}");
        b.session = v["value"]["sessionId"].as_str().expect("a session id").to_string();
        b
    }

    /// A command of the session; panics on a WebDriver error.
    pub fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.try_cmd(method, path, body);
        assert_eq!(status, 200, "{method} {path}: {v}");
        v
    }

    /// A command of the session: (HTTP status, its `value`).
    pub fn try_cmd(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let full = format!("/session/{}{path}", self.session);
        let (status, v) = http(&self.addr, method, &full, body.as_ref()).unwrap_or_else(|e| panic!("{full}: {e}"));
        (status, v["value"].clone())
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url})));
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns what it returns.
    pub fn eval(&self, script: &str, args: Value) -> Value {
        self.cmd("POST", "/execute/sync", Some(json!({"script": script, "args": args})))
    }

    /// Polls `script` until it returns a truthy value (bounded by [`WAIT`]); returns it.
    pub fn until(&self, what: &str, script: &str) -> Value {
        let start = Instant::now();
        loop {
            let v = self.eval(script, json!([]));
            if !(v.is_null() || v == false || v == "" || v == 0) {
                return v;
            }
            assert!(start.elapsed() < WAIT, "timed out waiting for {what} (last: {v}); page: {}", self.text("body"));
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The text of the first element matching `css` ("" when there is none).
    pub fn text(&self, css: &str) -> String {
        let v =
            self.eval("const e = document.querySelector(arguments[0]); return e ? e.textContent : '';", json!([css]));
        v.as_str().unwrap_or_default().to_string()
    }

    /// Clicks the first element matching `css`, as a user does.
    pub fn click(&self, css: &str) {
        let e = self.cmd("POST", "/element", Some(json!({"using": "css selector", "value": css})));
        let id = e[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {e}")).to_string();
        self.cmd("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    /// Types `text` into the first element matching `css`.
    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.cmd("POST", "/element", Some(json!({"using": "css selector", "value": css})));
        let id = e[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {e}")).to_string();
        self.cmd("POST", &format!("/element/{id}/value"), Some(json!({"text": text})));
    }

    /// Accepts the open confirmation dialog (waiting for it); returns its text.
    pub fn accept_dialog(&self) -> String {
        let start = Instant::now();
        loop {
            let (status, text) = self.try_cmd("GET", "/alert/text", None);
            if status == 200 {
                self.cmd("POST", "/alert/accept", Some(json!({})));
                return text.as_str().unwrap_or_default().to_string();
            }
            assert!(start.elapsed() < WAIT, "no dialog opened");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Saves a PNG screenshot of the window.
    pub fn screenshot(&self, path: &Path) {
        let v = self.cmd("GET", "/screenshot", None);
        let png = base64_decode(v.as_str().expect("base64 PNG"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(&self.addr, "DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (the screenshot), padding and line breaks ignored.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_and_chunks_decode() {
        assert_eq!(super::base64_decode("aGVsbG8gd29ybGQ="), b"hello world");
        assert_eq!(super::dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), "hello world");
    }
}
