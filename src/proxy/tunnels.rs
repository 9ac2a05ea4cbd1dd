//! Upgraded connections (WebSocket and the like) outlive the HTTP exchange that opened them, so the
//! HTTP server's graceful shutdown does not see them. They are tracked here: shutdown waits for them
//! to end on their own, and when the drain deadline comes closes them with a FIN in both directions
//! rather than dropping them with the process.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
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
        self.inner.open.fetch_add(1, Ordering::AcqRel);
        let inner = self.inner.clone();
        let mut closing = inner.closing.subscribe();
        tokio::spawn(async move {
            let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut backend) => {}
                _ = async { let _ = closing.wait_for(|c| *c).await; } => {
                    let _ = client.shutdown().await;
                    let _ = backend.shutdown().await;
                }
            }
            if inner.open.fetch_sub(1, Ordering::AcqRel) == 1 {
                inner.all_closed.notify_waiters();
            }
        });
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
