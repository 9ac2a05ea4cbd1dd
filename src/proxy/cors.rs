//! The CORS step: a preflight from an admitted origin is answered here (the backend never sees it), and
//! every answer of the route gets the CORS headers its request's `Origin` earns, plus `Vary: Origin`
//! whenever the answer depends on it, so a shared cache never hands one origin's answer to another.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{Either, Full};

use super::response::{Body, SERVER};
use crate::model::annotations::Cors;

/// What CORS asks of one request's answer, decided before the request is answered.
pub(super) struct CorsAnswer<'a> {
    cors: &'a Cors,
    allow_origin: Option<HeaderValue>,
    preflight: bool,
}

pub(super) fn evaluate<'a, B>(cors: &'a Cors, req: &Request<B>) -> CorsAnswer<'a> {
    let origin = req.headers().get(header::ORIGIN);
    let allow_origin = cors.allow_origin(origin);
    let preflight = allow_origin.is_some()
        && origin.is_some()
        && req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    CorsAnswer {
        cors,
        allow_origin,
        preflight,
    }
}

impl CorsAnswer<'_> {
    /// The answer to a preflight, or `None` for a request that goes on to the backend.
    pub(super) fn preflight(&self) -> Option<Response<Body>> {
        if !self.preflight {
            return None;
        }
        let mut resp = Response::new(Either::Right(Full::new(Bytes::new())));
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(header::SERVER, SERVER);
        Some(resp)
    }

    /// Puts the CORS headers on the answer, replacing the backend's own, as ingress-nginx does.
    pub(super) fn apply(self, headers: &mut HeaderMap) {
        if let Some(origin) = self.allow_origin {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            for (name, value) in self.cors.headers() {
                headers.insert(name, value.clone());
            }
        }
        if self.cors.varies_by_origin() && !varies_by_origin(headers) {
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
}

/// Whether the answer's `Vary` already covers `Origin` (by name or `*`).
fn varies_by_origin(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || t.eq_ignore_ascii_case("origin"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn cors(origin: &str) -> Cors {
        let map: BTreeMap<String, String> = [
            ("portcullis.io/enable-cors", "true"),
            ("portcullis.io/cors-allow-origin", origin),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        crate::model::annotations::parse(Some(&map)).0.cors.unwrap()
    }

    fn req(method: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri("/");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn a_preflight_needs_an_admitted_origin_and_a_requested_method() {
        let c = cors("https://a.test");
        let pre = [
            ("origin", "https://a.test"),
            ("access-control-request-method", "PUT"),
        ];
        assert!(evaluate(&c, &req("OPTIONS", &pre)).preflight().is_some());
        assert!(evaluate(&c, &req("GET", &pre)).preflight().is_none());
        let no_method = req("OPTIONS", &pre[..1]);
        assert!(evaluate(&c, &no_method).preflight().is_none());
        let other = req(
            "OPTIONS",
            &[
                ("origin", "https://b.test"),
                ("access-control-request-method", "PUT"),
            ],
        );
        assert!(evaluate(&c, &other).preflight().is_none());
        let any = cors("*");
        let no_origin = req("OPTIONS", &pre[1..]);
        assert!(evaluate(&any, &no_origin).preflight().is_none());
    }

    #[test]
    fn vary_is_added_once_beside_the_backend_s_and_cors_headers_replace_its_own() {
        let c = cors("https://a.test");
        let mut h = HeaderMap::new();
        h.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        evaluate(&c, &req("GET", &[("origin", "https://a.test")])).apply(&mut h);
        let vary: Vec<_> = h.get_all(header::VARY).iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"]);
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://a.test");

        let mut h = HeaderMap::new();
        h.insert(
            header::VARY,
            HeaderValue::from_static("accept-encoding, ORIGIN"),
        );
        evaluate(&c, &req("GET", &[])).apply(&mut h);
        assert_eq!(h.get_all(header::VARY).iter().count(), 1);
        assert!(!h.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    }
}
