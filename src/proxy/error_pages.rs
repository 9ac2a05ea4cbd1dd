//! The last step of a forwarded request: `custom-http-errors`. A response whose status the Ingress
//! lists (the backend's, or Portcullis's own 502, 503 and 504) is replaced by the error backend's
//! answer to a `GET /` carrying ingress-nginx's headers, so error-page services written for it
//! (`X-Code`, `X-Format`, …) work unchanged. When the error backend cannot answer, the original
//! response stands.

use http::header::{ACCEPT, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Version};
use http_body_util::Either;
use hyper::body::Incoming;

use super::Upstream;
use super::body::Guarded;
use super::limit_rate::Paced;
use super::response::{Body, SERVER};
use crate::model::annotations::custom_errors::ErrorPages;
use crate::model::{ConfigHandle, Route};

const X_CODE: HeaderName = HeaderName::from_static("x-code");
const X_FORMAT: HeaderName = HeaderName::from_static("x-format");
const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
const X_NAMESPACE: HeaderName = HeaderName::from_static("x-namespace");
const X_INGRESS_NAME: HeaderName = HeaderName::from_static("x-ingress-name");
const X_SERVICE_NAME: HeaderName = HeaderName::from_static("x-service-name");
const X_SERVICE_PORT: HeaderName = HeaderName::from_static("x-service-port");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the error backend is told about the request, taken before it is forwarded.
pub struct Original {
    host: Option<HeaderValue>,
    uri: Option<HeaderValue>,
    format: HeaderValue,
    request_id: HeaderValue,
}

impl Original {
    /// Also gives the request an `X-Request-ID` when it has none, so the backend and the error
    /// backend see the same one.
    pub fn of(req: &mut Request<Incoming>) -> Original {
        let uri = req
            .uri()
            .path_and_query()
            .and_then(|pq| HeaderValue::from_str(pq.as_str()).ok());
        let format = req
            .headers()
            .get(ACCEPT)
            .cloned()
            .unwrap_or(HeaderValue::from_static("text/html"));
        let host = req.headers().get(HOST).cloned().or_else(|| {
            req.uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        Original {
            host,
            uri,
            format,
            request_id: super::external_auth::ensure_request_id(req.headers_mut()),
        }
    }
}

/// The response to send: `resp`, or the error backend's answer when `pages` lists its status.
pub async fn replace(
    upstream: &Upstream,
    config: &ConfigHandle,
    route: &Route,
    pages: &ErrorPages,
    original: Original,
    resp: Response<Body>,
) -> Response<Body> {
    let status = resp.status();
    if !pages.covers(status.as_u16()) {
        return resp;
    }
    let live = config.load();
    let backend = match &pages.backend {
        Some(backend) => backend,
        None => match live.routes.default_value() {
            Some(default) => &default.backend,
            None => return resp,
        },
    };
    let Some(endpoint) = backend.pick() else {
        return resp;
    };
    let mut headers = HeaderMap::new();
    let text = |s: &str| HeaderValue::from_str(s).ok();
    let fields = [
        (HOST, original.host),
        (X_CODE, Some(HeaderValue::from(status.as_u16()))),
        (X_FORMAT, Some(original.format)),
        (X_ORIGINAL_URI, original.uri),
        (X_NAMESPACE, text(&route.ingress.namespace)),
        (X_INGRESS_NAME, text(&route.ingress.name)),
        (X_SERVICE_NAME, text(&route.backend.service.name)),
        (X_SERVICE_PORT, text(&route.backend.port)),
        (X_REQUEST_ID, Some(original.request_id)),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            headers.insert(name, value);
        }
    }
    let Ok(uri) = format!("http://{endpoint}/").parse::<http::Uri>() else {
        return resp;
    };
    let mut sub = Request::new(());
    *sub.uri_mut() = uri;
    *sub.headers_mut() = headers;
    let policy = &route.policy.upstream;
    match upstream.send_bodyless(sub, policy).await {
        Ok(answer) => {
            let (mut parts, body) = answer.into_parts();
            super::forward::strip_hop_by_hop(&mut parts.headers);
            parts.headers.entry(http::header::SERVER).or_insert(SERVER);
            parts.version = Version::HTTP_11;
            let body = Paced::new(Guarded::new(body, policy.read_timeout, None));
            Response::from_parts(parts, Either::Left(body))
        }
        Err(e) => {
            tracing::debug!(ingress = %route.ingress, %endpoint, error = %e, "error backend did not answer; the original response is sent");
            resp
        }
    }
}
