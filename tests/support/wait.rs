//! Bounded polling. Tests assert on state that becomes true "soon" (a file change going live, a log
//! line appearing); polling with a deadline keeps them fast when things work and finite when not.

use std::time::{Duration, Instant};

/// How often conditions are re-checked.
pub const POLL: Duration = Duration::from_millis(20);
/// How long a change may take to go live. The controller promises one second for manifest changes;
/// the margin absorbs a loaded CI machine.
pub const LIVE: Duration = Duration::from_secs(5);

/// Polls `check` until it returns `Ok`, and returns that value. Panics after `timeout` with `what`
/// and the last error, so the failure says what was expected and what was seen instead.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let started = Instant::now();
        let last = match tokio::time::timeout(timeout, check()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(e)) => e,
            Err(_) => format!("one check took longer than {timeout:?}"),
        };
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last: {last}");
        }
        // Do not spin when a check fails fast.
        tokio::time::sleep(POLL.saturating_sub(started.elapsed())).await;
    }
}

/// Runs a future with a deadline, panicking with `what` if it is exceeded.
pub async fn within<T>(what: &str, timeout: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(timeout, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {timeout:?}"),
    }
}
