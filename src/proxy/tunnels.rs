//! Upgraded connections (WebSocket and the like) outlive the HTTP exchange that opened them, and SSL
//! passthrough connections never had one, so the HTTP server's graceful shutdown cannot ask them to
//! finish. They are tracked here: shutdown waits for them to end on their own, and when the drain
//! deadline comes closes them with a FIN in both directions rather than dropping them with the
//! process.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, watch};

#[derive(Clone)]
pub struct Tunnels {
    inner: Arc<Inner>,
}

struct Inner {
    open: AtomicUsize,
    all_closed: Notify,
    closing: watch::Sender<bool>,
}

impl Default for Tunnels {
    fn default() -> Self {
        Tunnels {
            inner: Arc::new(Inner {
                open: AtomicUsize::new(0),
                all_closed: Notify::new(),
                closing: watch::channel(false).0,
            }),
        }
    }
}

impl Tunnels {
    /// Copies bytes both ways until either side closes, or until [`Tunnels::close`].
    pub fn spawn(&self, client: Upgraded, backend: Upgraded) {
        // Counted before the task starts, so a drain that begins meanwhile waits for it.
        let open = self.enter();
        tokio::spawn(open.carry(TokioIo::new(client), TokioIo::new(backend)));
    }

    /// Copies bytes both ways between two streams (an SSL passthrough connection and its backend)
    /// until either side closes, or until [`Tunnels::close`].
    pub async fn carry<A, B>(&self, client: A, backend: B)
    where
        A: AsyncRead + AsyncWrite + Unpin,
        B: AsyncRead + AsyncWrite + Unpin,
    {
        self.enter().carry(client, backend).await
    }

    fn enter(&self) -> Open {
        self.inner.open.fetch_add(1, Ordering::AcqRel);
        Open(self.inner.clone())
    }

    pub fn open(&self) -> usize {
        self.inner.open.load(Ordering::Acquire)
    }

    /// Waits until every tunnel has ended on its own.
    pub async fn idle(&self) {
        loop {
            let notified = self.inner.all_closed.notified();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Closes every open tunnel and waits (briefly) for them to finish closing.
    pub async fn close(&self) {
        self.inner.closing.send_replace(true);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.idle()).await;
    }
}

/// One open tunnel, counted until it is dropped.
struct Open(Arc<Inner>);

impl Open {
    async fn carry<A, B>(self, mut client: A, mut backend: B)
    where
        A: AsyncRead + AsyncWrite + Unpin,
        B: AsyncRead + AsyncWrite + Unpin,
    {
        let mut closing = self.0.closing.subscribe();
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut backend) => {}
            _ = async { let _ = closing.wait_for(|c| *c).await; } => {
                let _ = client.shutdown().await;
                let _ = backend.shutdown().await;
            }
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_closed.notify_waiters();
        }
    }
}
