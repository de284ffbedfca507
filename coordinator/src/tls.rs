//! TLS for the gRPC listener (`--tls-cert`, `--tls-key`, and `--tls-client-ca` for mutual
//! TLS), with rustls. The server configuration sits behind a lock that SIGHUP swaps
//! ([`Tls::reload`]): a rotated or revoked certificate takes effect for new connections
//! without a restart; a bad file on reload is logged and the previous configuration stays.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The files of the server's TLS configuration.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// With it, clients must present a certificate signed by one of these CAs.
    pub client_ca: Option<PathBuf>,
}

/// The current server configurations: gRPC (HTTP/2) and the HTTP listener (HTTP/1.1).
#[derive(Clone)]
pub struct Tls {
    files: TlsFiles,
    config: Arc<RwLock<(Arc<rustls::ServerConfig>, Arc<rustls::ServerConfig>)>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish_non_exhaustive()
    }
}

fn certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{what} {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// The gRPC configuration (ALPN h2) and the HTTP listener's (ALPN http/1.1).
fn configs(files: &TlsFiles) -> Result<(Arc<rustls::ServerConfig>, Arc<rustls::ServerConfig>), String> {
    let grpc = server_config(files)?;
    let mut http = grpc.clone();
    http.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(grpc), Arc::new(http)))
}

fn server_config(files: &TlsFiles) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs(&files.cert, "--tls-cert")?;
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|e| format!("--tls-key {}: {e}", files.key.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca, "--tls-client-ca")? {
                roots.add(c).map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("--tls-cert/--tls-key: {e} (does the key belong to the certificate?)"))?;
    // gRPC is HTTP/2.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

impl Tls {
    /// Reads the files; an error names the flag and the file.
    pub fn load(files: TlsFiles) -> Result<Tls, String> {
        let config = configs(&files)?;
        Ok(Tls { files, config: Arc::new(RwLock::new(config)) })
    }

    /// Reads the files again (SIGHUP); on error the configuration stays as it was.
    pub fn reload(&self) -> Result<(), String> {
        let config = configs(&self.files)?;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    /// An acceptor for gRPC with the current configuration.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.read().unwrap_or_else(|e| e.into_inner()).0.clone())
    }

    /// An acceptor for the HTTP listener (HTTPS, HTTP/1.1) with the current configuration.
    pub fn http_acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.read().unwrap_or_else(|e| e.into_inner()).1.clone())
    }

    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }
}
