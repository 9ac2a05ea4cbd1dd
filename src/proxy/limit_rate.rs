//! The `limit-rate` step, on the way back: a backend's response body is passed on at the Ingress's
//! bandwidth once its first `limit-rate-after` bytes have gone, paced by a timer, so a throttled
//! download costs a sleeping task rather than a busy one. Each response is paced on its own, as
//! nginx's `limit_rate` is per request (two downloads at once get twice the bandwidth).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Either;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::model::annotations::{LimitRate, ResponseRate};

/// A paced body goes in pieces of a tenth of a second's worth: small enough that the bytes flow
/// evenly rather than in bursts, large enough that a fast limit costs few timer wake-ups.
const PIECES_PER_SECOND: u64 = 10;

/// Paces a response body from a backend (`Left`); Portcullis's own short answers are never paced.
pub(super) fn pace<B, Own>(body: &mut Either<Paced<B>, Own>, limit: Option<&LimitRate>) {
    if let (Some(LimitRate::Limit(rate)), Either::Left(body)) = (limit, body) {
        body.pace = Some(Box::new(Pace::new(*rate)));
    }
}

/// A response body, passed on as it comes unless it is paced.
pub struct Paced<B> {
    inner: B,
    pace: Option<Box<Pace>>,
}

impl<B> Paced<B> {
    pub fn new(inner: B) -> Self {
        Paced { inner, pace: None }
    }
}

struct Pace {
    rate: u64,
    /// Bytes still to pass on at once (`limit-rate-after`).
    free: u64,
    /// When the paced part began, and how much of it has gone since.
    started: Option<Instant>,
    paced: u64,
    /// Data read from the backend and not passed on yet.
    pending: Bytes,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Pace {
    fn new(rate: ResponseRate) -> Pace {
        Pace {
            rate: rate.bytes_per_second.get(),
            free: rate.after,
            started: None,
            paced: 0,
            pending: Bytes::new(),
            sleep: None,
        }
    }

    /// The next piece of `pending` (not empty), once the rate allows it: after `t` seconds of the
    /// paced part at most `rate × t` bytes have gone.
    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Bytes> {
        let len = self.pending.len() as u64;
        if self.free > 0 {
            let n = self.free.min(len);
            self.free -= n;
            return Poll::Ready(self.pending.split_to(n as usize));
        }
        let now = Instant::now();
        let started = *self.started.get_or_insert(now);
        let piece = len.min((self.rate / PIECES_PER_SECOND).max(1));
        let nanos = u128::from(self.paced + piece) * 1_000_000_000 / u128::from(self.rate);
        let due = started + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        if due > now {
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            if sleep.deadline() != due {
                sleep.as_mut().reset(due);
            }
            ready!(sleep.as_mut().poll(cx));
        }
        self.paced += piece;
        Poll::Ready(self.pending.split_to(piece as usize))
    }
}

impl<B> HttpBody for Paced<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let Some(pace) = this.pace.as_deref_mut() else {
            return Pin::new(&mut this.inner).poll_frame(cx);
        };
        while pace.pending.is_empty() {
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => pace.pending = data,
                    Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
                },
                end => return Poll::Ready(end),
            }
        }
        pace.poll_piece(cx)
            .map(|piece| Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream() && self.pace.as_ref().is_none_or(|p| p.pending.is_empty())
    }

    fn size_hint(&self) -> SizeHint {
        let hint = self.inner.size_hint();
        let pending = self.pace.as_ref().map_or(0, |p| p.pending.len() as u64);
        if pending == 0 {
            return hint;
        }
        let mut with_pending = SizeHint::new();
        with_pending.set_lower(hint.lower() + pending);
        if let Some(upper) = hint.upper() {
            with_pending.set_upper(upper + pending);
        }
        with_pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use std::convert::Infallible;
    use std::num::NonZeroU64;

    fn paced(
        chunks: Vec<usize>,
        rate: u64,
        after: u64,
    ) -> Paced<impl HttpBody<Data = Bytes, Error = Infallible> + Unpin> {
        let frames = chunks
            .into_iter()
            .map(|n| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![7u8; n]))));
        let mut body = Paced::new(StreamBody::new(futures_util::stream::iter(frames)));
        body.pace = Some(Box::new(Pace::new(ResponseRate {
            bytes_per_second: NonZeroU64::new(rate).unwrap(),
            after,
        })));
        body
    }

    /// (milliseconds since the start, bytes so far) after each frame, on tokio's paused clock.
    async fn arrivals(mut body: impl HttpBody<Data = Bytes> + Unpin) -> Vec<(u128, usize)> {
        let start = Instant::now();
        let mut total = 0;
        let mut seen = Vec::new();
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                total += data.len();
                seen.push((start.elapsed().as_millis(), total));
            }
        }
        seen
    }

    #[tokio::test(start_paused = true)]
    async fn the_body_goes_at_the_rate() {
        let seen = arrivals(paced(vec![64 * 1024; 4], 64 * 1024, 0)).await;
        let (ms, total) = *seen.last().unwrap();
        assert_eq!(total, 256 * 1024, "every byte, in order");
        assert!(
            (3990..=4010).contains(&ms),
            "256 KiB at 64 KiB/s took {ms} ms"
        );
        // Evenly: never more than the rate allows at any moment, in pieces of a tenth of a second.
        for (ms, total) in &seen {
            assert!(
                *total as u128 * 1000 <= 64 * 1024 * (ms + 1),
                "{total} bytes by {ms} ms"
            );
        }
        assert!(seen.len() >= 40, "{} pieces", seen.len());
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_bytes_go_at_once() {
        let seen = arrivals(paced(
            vec![100 * 1024, 28 * 1024, 128 * 1024],
            64 * 1024,
            128 * 1024,
        ))
        .await;
        assert_eq!(
            seen[..2],
            [(0, 100 * 1024), (0, 128 * 1024)],
            "limit-rate-after bytes at once"
        );
        let (ms, total) = *seen.last().unwrap();
        assert_eq!(total, 256 * 1024);
        assert!(
            (1990..=2010).contains(&ms),
            "the other 128 KiB took {ms} ms"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_straddling_the_free_bytes_is_split() {
        let seen = arrivals(paced(vec![3000], 1000, 1000)).await;
        assert_eq!(seen.first(), Some(&(0, 1000)));
        assert_eq!(seen.last(), Some(&(2000, 3000)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unpaced_body_is_passed_through() {
        let frames = [Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"ok")))];
        let body = Paced::new(StreamBody::new(futures_util::stream::iter(frames)));
        assert_eq!(arrivals(body).await, [(0, 2)]);
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_backend_body_is_paced() {
        let rate = LimitRate::Limit(ResponseRate {
            bytes_per_second: NonZeroU64::new(1).unwrap(),
            after: 0,
        });
        let mut own: Either<Paced<http_body_util::Empty<Bytes>>, _> = Either::Right(
            http_body_util::Full::new(Bytes::from_static(b"404 Not Found")),
        );
        pace(&mut own, Some(&rate));
        assert_eq!(
            arrivals(own).await,
            [(0, 13)],
            "Portcullis's own answer at once"
        );
        let mut backend: Either<_, http_body_util::Empty<Bytes>> = Either::Left(Paced::new(
            http_body_util::Full::new(Bytes::from_static(b"ok")),
        ));
        pace(&mut backend, Some(&rate));
        assert_eq!(arrivals(backend).await, [(1000, 1), (2000, 2)], "1 B/s");
        let mut invalid: Either<_, http_body_util::Empty<Bytes>> = Either::Left(Paced::new(
            http_body_util::Full::new(Bytes::from_static(b"ok")),
        ));
        pace(&mut invalid, Some(&LimitRate::Invalid));
        assert_eq!(
            arrivals(invalid).await,
            [(0, 2)],
            "refused before it gets here"
        );
    }
}
