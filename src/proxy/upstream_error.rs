//! What can go wrong talking to a backend, and so which status the client gets.

use std::time::Duration;

use http::StatusCode;

use super::body::{BodyError, body_error};

/// Why a request could not be forwarded, and so which status the client gets.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to the endpoint: {0}")]
    Connect(String),
    #[error("connecting to the endpoint timed out")]
    ConnectTimeout,
    #[error("the endpoint did not answer within {0:?}")]
    ResponseTimeout(Duration),
    #[error("the endpoint broke the exchange: {0}")]
    Exchange(String),
    /// The exchange broke on a reused keep-alive connection, most likely one the endpoint closed
    /// while it was idle: a new connection will probably do.
    #[error("the endpoint closed a reused connection: {0}")]
    StaleConnection(String),
    #[error("the request body is larger than {0} bytes")]
    BodyTooLarge(u64),
    #[error("the client stopped sending the request body for {0:?}")]
    ClientIdle(Duration),
    #[error("the request cannot be forwarded: {0}")]
    BadRequest(String),
    #[error("the Ingress's backend TLS settings cannot be used")]
    BackendTlsUnavailable,
}

impl UpstreamError {
    pub fn status(&self) -> StatusCode {
        match self {
            UpstreamError::Connect(_)
            | UpstreamError::Exchange(_)
            | UpstreamError::StaleConnection(_) => StatusCode::BAD_GATEWAY,
            UpstreamError::ConnectTimeout | UpstreamError::ResponseTimeout(_) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            UpstreamError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            UpstreamError::ClientIdle(_) => StatusCode::REQUEST_TIMEOUT,
            UpstreamError::BadRequest(_) => StatusCode::BAD_REQUEST,
            UpstreamError::BackendTlsUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// What the client is told: the kind of failure, never internal addresses.
    pub fn public_message(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "cannot connect to the backend",
            UpstreamError::ConnectTimeout => "timed out connecting to the backend",
            UpstreamError::ResponseTimeout(_) => "the backend did not answer in time",
            UpstreamError::Exchange(_) | UpstreamError::StaleConnection(_) => {
                "the backend closed the connection unexpectedly"
            }
            UpstreamError::BodyTooLarge(_) => "the request body is too large",
            UpstreamError::ClientIdle(_) => "the request body did not arrive in time",
            UpstreamError::BadRequest(_) => "the request cannot be forwarded",
            UpstreamError::BackendTlsUnavailable => {
                "the Ingress's backend TLS settings are invalid or incomplete"
            }
        }
    }
}

/// Maps a failed exchange to the status the client gets. `connect`: the failure happened while
/// connecting, so the backend never saw the request.
pub fn classify(e: &(dyn std::error::Error + 'static), connect: bool) -> UpstreamError {
    match body_error(e) {
        Some(BodyError::TooLarge(limit)) => return UpstreamError::BodyTooLarge(limit),
        Some(BodyError::Idle(d)) => return UpstreamError::ClientIdle(d),
        None => {}
    }
    // A request body that broke off while being sent (a malformed chunked encoding, a client gone) is
    // a "user" error with the body's error as its cause. The client's fault, not the backend's: 400,
    // never a 502 that blames the backend.
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>()
            && h.is_user()
            && std::error::Error::source(h).is_some()
        {
            return UpstreamError::BadRequest(h.to_string());
        }
        source = s.source();
    }
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return UpstreamError::ConnectTimeout;
        }
        source = s.source();
    }
    let detail = match std::error::Error::source(e) {
        Some(s) => format!("{e}: {s}"),
        None => e.to_string(),
    };
    if connect {
        UpstreamError::Connect(detail)
    } else {
        UpstreamError::Exchange(detail)
    }
}
