//! The last step of a forwarded request: `custom-http-errors`. A response whose status the Ingress
//! lists (the backend's, or Portcullis's own 502, 503 and 504) is replaced by the error backend's
//! answer to a `GET /` carrying ingress-nginx's headers, so error-page services written for it
//! (`X-Code`, `X-Format`, …) work unchanged. Portcullis's own 404 for a path no rule of the host
//! matches is replaced the same way when an Ingress of that host lists 404 and names its error
//! backend. When the error backend cannot answer, the original response stands.

use std::sync::Arc;

use http::header::{ACCEPT, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Version};
use http_body_util::Either;
use hyper::body::Incoming;

use super::Upstream;
use super::body::Guarded;
use super::limit_rate::Paced;
use super::response::{Body, SERVER};
use crate::model::matching::RouteTable;
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

/// The route whose error pages answer Portcullis's 404 for a request to `host` that no rule
/// matched: one that lists 404 and has its own error backend (with no rule matched there is no
/// cluster default backend either). Among several Ingresses of the host, the first by
/// namespace/name, so every replica picks the same.
pub fn for_unmatched(routes: &RouteTable<Arc<Route>>, host: &str) -> Option<Arc<Route>> {
    routes
        .host_values(host)
        .filter(|route| {
            let pages = route.policy.error_pages.as_ref();
            pages.is_some_and(|p| p.covers(404) && p.backend.is_some())
        })
        .min_by(|a, b| a.ingress.cmp(&b.ingress))
        .cloned()
}

/// Whether the response came from the route's Service (or Portcullis on its behalf), or is the
/// 404 for a path none of the host's rules matched: then no Service is named to the error backend.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    ForRoute,
    Unmatched,
}

/// The response to send: `resp`, or the error backend's answer when the route's error pages list
/// its status.
pub async fn replace(
    upstream: &Upstream,
    config: &ConfigHandle,
    route: &Route,
    answered: Answered,
    original: Original,
    resp: Response<Body>,
) -> Response<Body> {
    let status = resp.status();
    let Some(pages) = route.policy.error_pages.as_ref() else {
        return resp;
    };
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
    let service = |s: &str| match answered {
        Answered::ForRoute => text(s),
        Answered::Unmatched => None,
    };
    let fields = [
        (HOST, original.host),
        (X_CODE, Some(HeaderValue::from(status.as_u16()))),
        (X_FORMAT, Some(original.format)),
        (X_ORIGINAL_URI, original.uri),
        (X_NAMESPACE, text(&route.ingress.namespace)),
        (X_INGRESS_NAME, text(&route.ingress.name)),
        (X_SERVICE_NAME, service(&route.backend.service.name)),
        (X_SERVICE_PORT, service(&route.backend.port)),
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
