//! The portal's accept loop. Guests are unauthenticated and many, so every connection has a
//! header-read timeout and connections are capped per client address and in total: one device
//! holding idle sockets must not starve the daemon of file descriptors (which nft, conntrack and
//! the control socket need too).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::Service as _;

/// A client must send a complete request head within this time.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Most simultaneous connections from one address (a phone opens a handful).
pub const MAX_PER_CLIENT: usize = 32;
/// Most simultaneous connections in all (well under the default 1024 file descriptors).
pub const MAX_TOTAL: usize = 512;
/// How long open requests get to finish on shutdown.
const DRAIN: Duration = Duration::from_secs(5);

type Counts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// Serves one HTTP/1.1 connection (plain or TLS) with the header-read timeout, until it ends
/// or a graceful shutdown finishes it.
async fn run_connection<I>(io: I, app: Router, peer: SocketAddr, watcher: Watcher) -> Result<(), hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        app.clone().call(req)
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
    watcher.watch(conn).await
}

/// One client's slot; frees itself on drop.
struct Slot {
    counts: Counts,
    ip: IpAddr,
}

impl Slot {
    fn take(counts: &Counts, ip: IpAddr) -> Option<Self> {
        let mut map = counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(ip).or_insert(0);
        if *n >= MAX_PER_CLIENT {
            return None;
        }
        *n += 1;
        Some(Self {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `shutdown` turns true, then
/// drains for up to 5 s. The TLS handshake counts against the same header timeout.
pub async fn serve(listener: TcpListener, app: Router, tls: Option<TlsAcceptor>, mut shutdown: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    let total = Arc::new(Semaphore::new(MAX_TOTAL));
    let counts: Counts = Arc::default();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "portal accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let Ok(permit) = total.clone().try_acquire_owned() else {
            tracing::warn!("portal connection refused: {MAX_TOTAL} connections open");
            tracing::debug!(client = %peer.ip(), "refused over the total limit");
            continue;
        };
        let Some(slot) = Slot::take(&counts, peer.ip()) else {
            tracing::debug!(client = %peer.ip(), "portal connection refused: per-client limit");
            continue;
        };
        let app = app.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            // Errors here are the client's (reset, timeout, bad TLS or HTTP): nothing above debug.
            let result = match tls {
                None => run_connection(stream, app, peer, watcher).await,
                Some(acceptor) => match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => run_connection(stream, app, peer, watcher).await,
                    Ok(Err(e)) => {
                        tracing::debug!(client = %peer.ip(), error = %e, "TLS handshake failed");
                        Ok(())
                    }
                    Err(_) => Ok(()),
                },
            };
            if let Err(e) = result {
                tracing::debug!(client = %peer.ip(), error = %e, "portal connection ended");
            }
            drop((permit, slot));
        });
    }
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            "portal requests still open after {} s; stopping anyway",
            DRAIN.as_secs()
        );
    }
}
