//! The gRPC listener: accepts TCP connections within a cap, and hands a connection to the
//! server only once it has spoken.
//!
//! What stays true here: at most `max_connections` connections are open at once (past it
//! the accept loop waits, and new clients queue in the kernel's backlog); a connection that
//! sends nothing within [`FIRST_BYTE_TIMEOUT`] is closed, so idle sockets cannot use up the
//! file descriptors; an accept error (such as running out of them) backs off up to
//! [`MAX_ACCEPT_BACKOFF`] instead of spinning. Half-open connections are found by TCP
//! keepalive and the server's HTTP/2 pings.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How long a new connection may stay silent before it is closed.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause of the accept loop after an accept error.
pub const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// Connections at most when the file-descriptor limit allows more.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// File descriptors kept for the database, logs and the rest when the cap is derived.
const RESERVED_FDS: u64 = 256;
/// Connections accepted and checked but not yet taken by the server.
const ACCEPTED_BUFFER: usize = 64;
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The connection cap: the flag's value, or what the process's file-descriptor limit
/// leaves room for, at most [`DEFAULT_MAX_CONNECTIONS`].
pub fn max_connections(flag: Option<usize>) -> usize {
    if let Some(n) = flag {
        return n;
    }
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own; no other effect.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc != 0 {
        return DEFAULT_MAX_CONNECTIONS;
    }
    let room = lim.rlim_cur.saturating_sub(RESERVED_FDS).max(16);
    room.min(DEFAULT_MAX_CONNECTIONS as u64) as usize
}

/// A TCP connection holding one of the cap's permits until it closes.
pub struct Conn {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// A connection as the server sees it: plain TCP, or TLS over it (`--tls-cert`).
pub enum Io {
    Plain(Conn),
    Tls(Box<tokio_rustls::server::TlsStream<Conn>>),
}

impl Connected for Io {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        match self {
            Io::Plain(c) => c.connect_info(),
            Io::Tls(t) => t.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(c) => Pin::new(c).poll_read(cx, buf),
            Io::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(c) => Pin::new(c).poll_write(cx, buf),
            Io::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(c) => Pin::new(c).poll_flush(cx),
            Io::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(c) => Pin::new(c).poll_shutdown(cx),
            Io::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The connections for the server, accepted until `shutdown`.
pub fn incoming(
    listener: TcpListener,
    max_connections: usize,
    tls: Option<crate::tls::Tls>,
    shutdown: CancellationToken,
) -> ReceiverStream<io::Result<Io>> {
    let (tx, rx) = mpsc::channel(ACCEPTED_BUFFER);
    let permits = Arc::new(Semaphore::new(max_connections));
    tokio::spawn(accept_loop(listener, permits, tls, tx, shutdown));
    ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    permits: Arc<Semaphore>,
    tls: Option<crate::tls::Tls>,
    tx: mpsc::Sender<io::Result<Io>>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                backoff = Duration::from_millis(10);
                let acceptor = tls.as_ref().map(crate::tls::Tls::acceptor);
                tokio::spawn(admit(stream, permit, acceptor, tx.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
            }
        }
    }
}

/// Hands the connection to the server once it sent its first byte (and, with TLS, finished
/// its handshake within the same bound); closes it otherwise.
async fn admit(
    stream: TcpStream,
    permit: OwnedSemaphorePermit,
    tls: Option<tokio_rustls::TlsAcceptor>,
    tx: mpsc::Sender<io::Result<Io>>,
) {
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
    let mut byte = [0u8; 1];
    match tokio::time::timeout(FIRST_BYTE_TIMEOUT, stream.peek(&mut byte)).await {
        Ok(Ok(n)) if n > 0 => {
            let conn = Conn { stream, _permit: permit };
            let io = match tls {
                None => Io::Plain(conn),
                Some(acceptor) => {
                    let peer = conn.stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                    match tokio::time::timeout(FIRST_BYTE_TIMEOUT, acceptor.accept(conn)).await {
                        Ok(Ok(t)) => Io::Tls(Box::new(t)),
                        Ok(Err(e)) => {
                            // A plaintext client, an unknown CA, no or a bad client certificate.
                            tracing::info!(%peer, error = %e, "TLS handshake failed; connection closed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake not finished in time; connection closed");
                            return;
                        }
                    }
                }
            };
            let _ = tx.send(Ok(io)).await;
        }
        Ok(_) => {}
        Err(_) => {
            let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            tracing::debug!(%peer, "connection sent nothing; closing it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_follows_the_flag_or_the_descriptor_limit() {
        assert_eq!(max_connections(Some(7)), 7);
        let derived = max_connections(None);
        assert!((16..=DEFAULT_MAX_CONNECTIONS).contains(&derived), "{derived}");
    }
}
