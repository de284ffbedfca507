//! TLS and mutual TLS with certificates made here (rcgen): the CLI and a real worker over
//! `https://` with client certificates; a plaintext client, a client without a certificate
//! and one trusting another CA each refused with the cause in the message; SIGHUP rotating
//! the server's certificate.

use std::path::{Path, PathBuf};

use orca_e2e::workers::WorkerProc;
use orca_e2e::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pem: PathBuf,
}

fn ca(dir: &Path, name: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, format!("{name} CA"));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let issuer = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
    let pem = dir.join(format!("{name}-ca.pem"));
    std::fs::write(&pem, issuer.pem()).unwrap();
    Ca { issuer, pem }
}

/// A certificate and key signed by `ca`, written as `name.pem` and `name.key`.
fn leaf(dir: &Path, ca: &Ca, name: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> (PathBuf, PathBuf) {
    let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    let (c, k) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn refused_or_ok(out: std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_certified_clients_only_and_sighup_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ours = ca(d, "ours");
    let theirs = ca(d, "theirs");
    let (server_cert, server_key) =
        leaf(d, &ours, "server", &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = leaf(d, &ours, "client", &["client"], ExtendedKeyUsagePurpose::ClientAuth);
    let live_cert = d.join("live.pem");
    let live_key = d.join("live.key");
    std::fs::copy(&server_cert, &live_cert).unwrap();
    std::fs::copy(&server_key, &live_key).unwrap();
    let http_file = d.join("http.addr");
    let mut coord = Coordinator::start(
        d,
        &[
            "--tls-cert",
            s(&live_cert),
            "--tls-key",
            s(&live_key),
            "--tls-client-ca",
            s(&ours.pem),
            "--http-listen",
            "127.0.0.1:0",
            "--http-addr-file",
            s(&http_file),
        ],
    );
    let http = wait_for_file(&http_file, &mut coord.child);
    let https = format!("https://{}", coord.addr);
    let orca = |url: &str, tls: &[&str], args: &[&str]| {
        std::process::Command::new(binary("orca")).args(["--coordinator", url]).args(tls).args(args).output().unwrap()
    };
    let with_cert = ["--tls-ca", s(&ours.pem), "--tls-cert", s(&client_cert), "--tls-key", s(&client_key)];
    let out = orca(&https, &with_cert, &["submit", "--json", "over tls"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let job = job["job_id"].as_str().unwrap().to_string();

    // A real worker over mutual TLS runs it.
    let args =
        ["--agent", "noop", "--tls-ca", s(&ours.pem), "--tls-cert", s(&client_cert), "--tls-key", s(&client_key)];
    let worker = WorkerProc::start(&https, d, "tls", &args);
    let waited = orca(&https, &with_cert, &["wait", &job]);
    assert!(waited.status.success(), "{}", String::from_utf8_lossy(&waited.stderr));

    // The HTTP listener serves HTTPS with the same certificate and client CA.
    let get = |scheme: &str, cert: bool| {
        let load = if cert {
            format!("ctx.load_cert_chain({:?}, {:?})\n", s(&client_cert), s(&client_key))
        } else {
            String::new()
        };
        let py = format!(
            "import ssl, urllib.request\nctx = ssl.create_default_context(cafile={:?})\n{load}\
             try:\n    print(urllib.request.urlopen('{scheme}://{http}/healthz', context=ctx, timeout=30).status)\n\
             except Exception as e:\n    print('refused', e)\n",
            s(&ours.pem)
        );
        let out = std::process::Command::new("python3").arg("-c").arg(py).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(get("https", true), "200");
    assert!(get("https", false).starts_with("refused"), "no client certificate on HTTPS");

    // Refused, each with its cause in the message.
    let refused = |out: std::process::Output| {
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let plain = refused(orca(&coord.url(), &[], &["status", &job]));
    assert!(plain.contains("use an https:// URL"), "a plaintext client against TLS: {plain}");
    let no_cert = refused(orca(&https, &["--tls-ca", s(&ours.pem)], &["status", &job]));
    // The alert names it, or, when the connection closes first, the hint does.
    assert!(
        no_cert.contains("CertificateRequired") || no_cert.contains("--tls-cert"),
        "no client certificate: {no_cert}"
    );
    let wrong_ca = refused(orca(&https, &["--tls-ca", s(&theirs.pem)], &["status", &job]));
    assert!(wrong_ca.contains("UnknownIssuer") || wrong_ca.contains("unknown issuer"), "another CA: {wrong_ca}");
    let (stranger_cert, stranger_key) =
        leaf(d, &theirs, "stranger", &["stranger"], ExtendedKeyUsagePurpose::ClientAuth);
    let stranger = ["--tls-ca", s(&ours.pem), "--tls-cert", s(&stranger_cert), "--tls-key", s(&stranger_key)];
    let stranger = refused(orca(&https, &stranger, &["status", &job]));
    assert!(!stranger.is_empty(), "a client certificate of another CA");
    let mixed = refused(orca(&coord.url(), &["--tls-ca", s(&ours.pem)], &["status", &job]));
    assert!(mixed.contains("https://"), "TLS files with an http:// URL: {mixed}");

    // Rotation: a certificate from the other CA, then SIGHUP; new connections see it.
    let (new_cert, new_key) =
        leaf(d, &theirs, "server2", &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::copy(&new_cert, &live_cert).unwrap();
    std::fs::copy(&new_key, &live_key).unwrap();
    signal(coord.child.id(), libc::SIGHUP);
    let rotated = ["--tls-ca", s(&theirs.pem), "--tls-cert", s(&client_cert), "--tls-key", s(&client_key)];
    let start = std::time::Instant::now();
    while !orca(&https, &rotated, &["status", &job]).status.success() {
        assert!(start.elapsed() < WAIT, "the rotated certificate was never served");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let old = refused(orca(&https, &with_cert, &["status", &job]));
    assert!(old.contains("UnknownIssuer") || old.contains("unknown issuer"), "{old}");

    // An expired certificate is named as such.
    let mut p = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    std::fs::write(&live_cert, p.signed_by(&key, &theirs.issuer).unwrap().pem()).unwrap();
    std::fs::write(&live_key, key.serialize_pem()).unwrap();
    signal(coord.child.id(), libc::SIGHUP);
    let start = std::time::Instant::now();
    loop {
        let out = refused_or_ok(orca(&https, &rotated, &["status", &job]));
        if out.contains("Expired") || out.contains("expired") {
            break;
        }
        assert!(start.elapsed() < WAIT, "the expired certificate was never reported: {out}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    worker.terminate();
}
