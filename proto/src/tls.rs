//! TLS for the coordinator's clients (the worker, the CLI, the Rust client): an `https://`
//! URL means TLS, verified against `--tls-ca` (or the system's roots without it); with
//! `--tls-cert` and `--tls-key` the client also presents a certificate (mutual TLS).

use std::path::PathBuf;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// A client's TLS files.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

fn read(path: &PathBuf, flag: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
}

impl ClientTls {
    /// From `ORCA_TLS_CA`, `ORCA_TLS_CERT` and `ORCA_TLS_KEY`.
    pub fn from_env() -> ClientTls {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        ClientTls { ca: var("ORCA_TLS_CA"), cert: var("ORCA_TLS_CERT"), key: var("ORCA_TLS_KEY") }
    }

    /// Sets up TLS on `endpoint` when `url` is `https://`; a plain `http://` URL with TLS
    /// files given is an error (the files would silently do nothing).
    pub fn apply(&self, url: &str, endpoint: Endpoint) -> Result<Endpoint, String> {
        if !url.trim_start().to_ascii_lowercase().starts_with("https://") {
            if self.ca.is_some() || self.cert.is_some() {
                return Err(format!("TLS files are set but {url} is not https://; use https:// for TLS"));
            }
            return Ok(endpoint);
        }
        let mut config = match &self.ca {
            Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca, "--tls-ca")?)),
            None => ClientTlsConfig::new().with_native_roots(),
        };
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                config = config.identity(Identity::from_pem(read(cert, "--tls-cert")?, read(key, "--tls-key")?));
            }
            (None, None) => {}
            _ => return Err("--tls-cert and --tls-key go together".into()),
        }
        endpoint.tls_config(config).map_err(|e| format!("TLS settings for {url}: {e}"))
    }
}

/// An error with its causes, `a: b: c`: transport errors say little on their own (a TLS
/// failure's reason is two causes down).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}
