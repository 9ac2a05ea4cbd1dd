//! ACME HTTP-01 answers on the plain-HTTP listener: `GET /.well-known/acme-challenge/TOKEN` for a
//! pending challenge of Portcullis's own orderer is answered here, before any route, redirect or
//! policy. Other tokens (cert-manager's solver, say) go on to the routes as usual.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{Either, Full};

use super::ACME_CHALLENGE_PREFIX;
use super::response::{Body, SERVER};
use crate::acme::Challenges;

/// The key authorization of a pending challenge, if `path` asks for one.
pub(super) fn answer(challenges: &Challenges, path: &str) -> Option<Response<Body>> {
    let token = path.strip_prefix(ACME_CHALLENGE_PREFIX)?;
    let key_authorization = challenges.http01(token)?;
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(
        key_authorization.as_bytes().to_vec(),
    ))));
    *resp.status_mut() = StatusCode::OK;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::SERVER, SERVER);
    Some(resp)
}
