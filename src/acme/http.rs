//! The ACME account's HTTP client: instant-acme's own, plus what instant-acme does not pass on, the
//! `Retry-After` of an error answer (RFC 8555 §6.6: a rate-limited or overloaded CA says when to come
//! back). The orderer reads it after a failed order and waits at least that long.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, Request, header};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, Error, HttpClient};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// When the CA's last error answer said to come back, if it said so; taken (and cleared) once read.
#[derive(Clone, Default)]
pub struct RetryAfter(Arc<Mutex<Option<SystemTime>>>);

impl RetryAfter {
    /// The time the last error answer named since the previous call.
    pub fn take(&self) -> Option<SystemTime> {
        self.0.lock().map(|mut at| at.take()).unwrap_or(None)
    }

    fn set(&self, at: SystemTime) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(at);
        }
    }
}

/// An HTTPS client trusting the platform's roots, or only the PEM certificates of
/// `directory_ca_file` (a private or test CA).
pub fn client(
    directory_ca_file: Option<&std::path::Path>,
) -> Result<(Box<dyn HttpClient>, RetryAfter), String> {
    let builder = match directory_ca_file {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            {
                let cert = cert.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            let tls = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            HttpsConnectorBuilder::new().with_tls_config(tls)
        }
        None => HttpsConnectorBuilder::new()
            .try_with_platform_verifier()
            .map_err(|e| format!("cannot load the platform's root certificates: {e}"))?,
    };
    let connector = builder.https_only().enable_http1().enable_http2().build();
    let retry_after = RetryAfter::default();
    let client = Recording {
        inner: Client::builder(TokioExecutor::new()).build(connector),
        retry_after: retry_after.clone(),
    };
    Ok((Box::new(client), retry_after))
}

struct Recording {
    inner: Client<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
    retry_after: RetryAfter,
}

impl HttpClient for Recording {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> BoxFuture<'static, Result<BytesResponse, Error>> {
        let sent = self.inner.request(req);
        let retry_after = self.retry_after.clone();
        Box::pin(async move {
            let rsp = sent.await.map_err(|e| Error::Other(Box::new(e)))?;
            let status = rsp.status();
            if (status.is_client_error() || status.is_server_error())
                && let Some(at) = parse_retry_after(rsp.headers(), SystemTime::now())
            {
                retry_after.set(at);
            }
            Ok(BytesResponse::from(rsp))
        })
    }
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110 §10.2.3); anything else is no answer.
pub fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<SystemTime> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    match value.parse::<u64>() {
        Ok(seconds) => now.checked_add(Duration::from_secs(seconds)),
        Err(_) => httpdate::parse_http_date(value).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, value.parse().unwrap());
        headers
    }

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            parse_retry_after(&with("120"), now),
            Some(now + Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after(&with("Sun, 06 Nov 1994 08:49:37 GMT"), now),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        assert_eq!(parse_retry_after(&with("soon"), now), None);
        assert_eq!(parse_retry_after(&with("-5"), now), None);
        assert_eq!(parse_retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn an_answer_is_read_once() {
        let r = RetryAfter::default();
        assert_eq!(r.take(), None);
        r.set(SystemTime::UNIX_EPOCH);
        assert_eq!(r.take(), Some(SystemTime::UNIX_EPOCH));
        assert_eq!(r.take(), None);
    }
}
