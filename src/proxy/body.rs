//! A body wrapper that enforces a size limit and an idle timeout (the longest wait for the next chunk),
//! used on request bodies (client → backend) and response bodies (backend → client).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What is sent upstream: the client's body streamed, or kept in memory to be sent again (an
/// empty one for the external-auth subrequest).
pub type RequestBody =
    Guarded<http_body_util::Either<hyper::body::Incoming, http_body_util::Full<Bytes>>>;

/// Why a guarded body stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body larger than {0} bytes")]
    TooLarge(u64),
    #[error("no body data for {0:?}")]
    Idle(Duration),
}

pub struct Guarded<B> {
    inner: B,
    idle_timeout: Duration,
    /// Created on the first wait, so bodies that are already complete cost no timer.
    idle: Option<Pin<Box<Sleep>>>,
    /// Whether `idle` runs for the current wait. It starts when the reader asks for data that is
    /// not there, not when the last frame came: a reader that was away (a slow client, a paced
    /// response) has not seen the body idle.
    waiting: bool,
    limit: Option<u64>,
    seen: u64,
    /// Where the bytes seen are also counted, for metrics.
    tally: Option<Arc<AtomicU64>>,
}

impl<B> Guarded<B> {
    pub fn new(inner: B, idle_timeout: Duration, limit: Option<u64>) -> Self {
        Guarded {
            inner,
            idle_timeout,
            idle: None,
            waiting: false,
            limit,
            seen: 0,
            tally: None,
        }
    }

    /// Also adds every data frame's length to `tally`.
    pub fn counting(mut self, tally: Option<Arc<AtomicU64>>) -> Self {
        self.tally = tally;
        self
    }
}

impl<B> Body for Guarded<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if let Some(tally) = &this.tally {
                        tally.fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                    if let Some(limit) = this.limit
                        && this.seen > limit
                    {
                        return Poll::Ready(Some(Err(BodyError::TooLarge(limit).into())));
                    }
                }
                this.waiting = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let timeout = this.idle_timeout;
                let idle = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if !this.waiting {
                    this.waiting = true;
                    idle.as_mut().reset(Instant::now() + timeout);
                }
                match idle.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::Idle(timeout).into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The first [`BodyError`] in an error's source chain, if the failure was one of ours.
pub fn body_error(error: &(dyn std::error::Error + 'static)) -> Option<BodyError> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<BodyError>() {
            return Some(*found);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    type Frames = futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BoxError>>>;

    fn chunks(sizes: &[usize]) -> StreamBody<Frames> {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = sizes
            .iter()
            .map(|n| Ok(Frame::data(Bytes::from(vec![0u8; *n]))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn passes_bodies_within_the_limit() {
        let body = Guarded::new(chunks(&[10, 20]), Duration::from_secs(1), Some(30));
        assert_eq!(body.collect().await.unwrap().to_bytes().len(), 30);
    }

    #[tokio::test]
    async fn stops_at_the_limit() {
        let body = Guarded::new(chunks(&[10, 21]), Duration::from_secs(1), Some(30));
        let err = body.collect().await.unwrap_err();
        assert_eq!(body_error(err.as_ref()), Some(BodyError::TooLarge(30)));
    }

    #[tokio::test]
    async fn stops_when_idle() {
        let body = Guarded::new(Never, Duration::from_millis(50), None);
        let err = body.collect().await.unwrap_err();
        assert_eq!(
            body_error(err.as_ref()),
            Some(BodyError::Idle(Duration::from_millis(50)))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn time_the_reader_spends_away_is_not_idle_time() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let frames = futures_util::stream::unfold(rx, |mut rx| async move {
            let chunk = rx.recv().await?;
            Some((Ok::<_, BoxError>(Frame::data(chunk)), rx))
        });
        let mut body = Guarded::new(
            StreamBody::new(Box::pin(frames)),
            Duration::from_secs(1),
            None,
        );
        let send_after = |ms, tx: tokio::sync::mpsc::Sender<Bytes>| {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let _ = tx.send(Bytes::from_static(b"x")).await;
            })
        };
        send_after(100, tx.clone());
        assert!(body.frame().await.unwrap().is_ok(), "waited 100 ms");
        // The reader is busy for longer than the idle timeout (a paced response, a slow client)…
        tokio::time::sleep(Duration::from_secs(5)).await;
        // …then asks again, and the backend answers within the timeout.
        send_after(500, tx);
        assert!(
            body.frame().await.unwrap().is_ok(),
            "waited 500 ms of a 1 s timeout"
        );
    }

    /// A body that never yields a frame, like a client that stopped sending.
    struct Never;
    impl Body for Never {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Pending
        }
    }
}
