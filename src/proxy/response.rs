//! Responses Portcullis writes itself: errors and redirects, with short bodies a human can read.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use super::body::Guarded;
use super::limit_rate::Paced;

/// A response body: streamed from a backend (paced with `limit-rate`), or written by Portcullis.
pub type Body = Either<Paced<Guarded<Incoming>>, Full<Bytes>>;

pub const SERVER: HeaderValue = HeaderValue::from_static("portcullis");

pub fn error(status: StatusCode, message: &str) -> Response<Body> {
    let body = format!(
        "{} {}: {message}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::SERVER, SERVER);
    resp
}

pub fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let Ok(location_value) = HeaderValue::from_str(location) else {
        return error(StatusCode::BAD_REQUEST, "the request cannot be redirected");
    };
    let mut resp = error(status, &format!("moved to {location}"));
    resp.headers_mut().insert(header::LOCATION, location_value);
    resp
}
