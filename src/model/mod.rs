//! The pure translation from Kubernetes objects to one immutable routing [`Config`].
//!
//! Nothing here does I/O or reads the clock: [`build`] takes every object of one moment (a [`Snapshot`])
//! and returns the routes, certificates, redirect decisions and problems of one generation.

pub mod acme;
pub mod annotations;
pub mod balancer;
pub mod build;
pub mod gateway;
pub mod htpasswd;
pub mod incremental;
pub mod matching;
mod objects;
pub mod passthrough;
pub mod policy;
pub mod validation;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;

pub use build::{BuildOptions, build};
pub use matching::{PathKind, RouteTable};
pub use objects::{Kind, Object, ObjectRef, Snapshot};
pub use policy::{Policy, UpstreamPolicy};

use crate::settings::Settings;
use crate::tls::CertTable;
pub use crate::vocab::NamespacedName;

/// The live configuration, swapped atomically as a whole; readers `load()` it without locking.
pub type ConfigHandle = Arc<ArcSwap<Config>>;

/// Everything the data plane needs, for one generation. Cheap to clone: the large parts are shared.
#[derive(Debug, Clone)]
pub struct Config {
    pub generation: u64,
    pub routes: Arc<RouteTable<Arc<Route>>>,
    pub certs: Arc<CertTable>,
    /// Ingresses served in this generation, oldest first; the previous generation's list when a
    /// change kept it, so readers can tell by pointer.
    pub ingresses: Arc<[NamespacedName]>,
    /// One entry per TLS host that has a certificate from a Secret, by Secret then host; shared with
    /// the previous generation when no certificate changed.
    pub certificates: Arc<[CertificateInfo]>,
    pub problems: Vec<Problem>,
    /// The global settings this generation was built with.
    pub settings: Arc<Settings>,
    /// Certificates to obtain by ACME, one per Secret, oldest Ingress first.
    pub acme: Vec<acme::WantedCertificate>,
    /// `ssl-passthrough` hosts, looked up by the HTTPS listener before TLS.
    pub passthrough: Arc<passthrough::PassthroughTable>,
    /// The Gateway API's sockets, translated beside the Ingresses (see [`gateway::serve`]).
    pub gateway: Arc<gateway::serve::Serving>,
}

impl Config {
    /// The configuration before the first build: no routes, the default certificate only.
    pub fn empty(certs: CertTable, settings: Arc<Settings>) -> Config {
        Config {
            generation: 0,
            routes: Arc::default(),
            certs: Arc::new(certs),
            ingresses: Arc::new([]),
            certificates: Arc::new([]),
            problems: Vec::new(),
            settings,
            acme: Vec::new(),
            passthrough: Arc::default(),
            gateway: Arc::default(),
        }
    }
}

/// Where one matched request goes and what policy applies to it.
#[derive(Debug, Clone)]
pub struct Route {
    pub ingress: NamespacedName,
    /// The rule's host as configured (lower-case); `None` for rules without a host and default backends.
    pub host: Option<Box<str>>,
    pub backend: Arc<Backend>,
    /// Serves the request when `backend` has no ready endpoint (`default-backend` annotation).
    pub fallback: Option<Arc<Backend>>,
    /// On the plain-HTTP listener, answer with a redirect to `https://` instead of proxying.
    pub https_redirect: bool,
    /// `from-to-www-redirect`: this route only redirects to the same URI on this host.
    pub redirect_host: Option<Box<str>>,
    /// The path's regular expression, when it is one (`use-regex`); its captures feed `rewrite-target`.
    pub path_regex: Option<regex::Regex>,
    pub policy: Arc<Policy>,
    /// The `Path` of an affinity cookie without `session-cookie-path`: the rule's path.
    pub cookie_path: Box<str>,
    /// A canary Ingress's share of this route's requests.
    pub canary: Option<Arc<annotations::canary::CanaryRoute>>,
}

/// A Service port and its ready endpoints.
#[derive(Debug)]
pub struct Backend {
    pub service: NamespacedName,
    /// The Service port as the Ingress names it (number or name), for logs.
    pub port: String,
    pub endpoints: Box<[SocketAddr]>,
    next: AtomicUsize,
    balancer: balancer::BalancerState,
}

impl Backend {
    pub fn new(service: NamespacedName, port: String, endpoints: Vec<SocketAddr>) -> Backend {
        let key = format!("{service}");
        Backend {
            service,
            port,
            endpoints: endpoints.into(),
            next: AtomicUsize::new(0),
            balancer: balancer::BalancerState::new(key.as_bytes()),
        }
    }

    /// Keys the affinity cookie tokens with a secret clients do not know (the Service's UID), the
    /// same on every replica and across restarts.
    pub fn keyed(mut self, secret: &[u8]) -> Backend {
        self.balancer = balancer::BalancerState::new(secret);
        self
    }

    /// The next endpoint, round robin per request; `None` when no endpoint is ready.
    pub fn pick(&self) -> Option<SocketAddr> {
        match self.endpoints.len() {
            0 => None,
            1 => Some(self.endpoints[0]),
            n => Some(self.endpoints[self.next.fetch_add(1, Ordering::Relaxed) % n]),
        }
    }
}

/// A certificate that is live for a TLS host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    pub secret: NamespacedName,
    pub host: String,
    pub not_before: i64,
    pub not_after: i64,
    pub fingerprint: String,
}

/// What kind of problem the translation found; stable names for metrics labels and Event reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProblemKind {
    ParseError,
    DuplicateObject,
    InvalidObject,
    InvalidRule,
    InvalidAnnotation,
    UnsupportedAnnotation,
    UnsupportedBackend,
    MissingService,
    MissingServicePort,
    MissingSecret,
    InvalidAuthSecret,
    InvalidCertificate,
    KeyMismatch,
    CertificateHostMismatch,
    CertificateExpired,
    CertificateNotYetValid,
    CertificateIsCa,
    CertificateWithoutSan,
    CertificateChainOrder,
    CertificateChainUnrelated,
    CertificateKeyUsage,
    CertificateKeyType,
    RuleConflict,
    TlsHostConflict,
    ForeignIngressClass,
    AcmeNotOrdered,
    /// A Gateway or listener of ours that is not accepted, programmed or fully resolved.
    GatewayNotReady,
    /// A route parent reference of ours that is not accepted.
    RouteNotAccepted,
    /// A route reference (backend) that does not resolve.
    UnresolvedReference,
}

impl ProblemKind {
    pub const ALL: [ProblemKind; 29] = [
        ProblemKind::ParseError,
        ProblemKind::DuplicateObject,
        ProblemKind::InvalidObject,
        ProblemKind::InvalidRule,
        ProblemKind::InvalidAnnotation,
        ProblemKind::UnsupportedAnnotation,
        ProblemKind::UnsupportedBackend,
        ProblemKind::MissingService,
        ProblemKind::MissingServicePort,
        ProblemKind::MissingSecret,
        ProblemKind::InvalidAuthSecret,
        ProblemKind::InvalidCertificate,
        ProblemKind::KeyMismatch,
        ProblemKind::CertificateHostMismatch,
        ProblemKind::CertificateExpired,
        ProblemKind::CertificateNotYetValid,
        ProblemKind::CertificateIsCa,
        ProblemKind::CertificateWithoutSan,
        ProblemKind::CertificateChainOrder,
        ProblemKind::CertificateChainUnrelated,
        ProblemKind::CertificateKeyUsage,
        ProblemKind::CertificateKeyType,
        ProblemKind::RuleConflict,
        ProblemKind::TlsHostConflict,
        ProblemKind::ForeignIngressClass,
        ProblemKind::AcmeNotOrdered,
        ProblemKind::GatewayNotReady,
        ProblemKind::RouteNotAccepted,
        ProblemKind::UnresolvedReference,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::ParseError => "parse-error",
            ProblemKind::DuplicateObject => "duplicate-object",
            ProblemKind::InvalidObject => "invalid-object",
            ProblemKind::InvalidRule => "invalid-rule",
            ProblemKind::InvalidAnnotation => "invalid-annotation",
            ProblemKind::UnsupportedAnnotation => "unsupported-annotation",
            ProblemKind::UnsupportedBackend => "unsupported-backend",
            ProblemKind::MissingService => "missing-service",
            ProblemKind::MissingServicePort => "missing-service-port",
            ProblemKind::MissingSecret => "missing-secret",
            ProblemKind::InvalidAuthSecret => "invalid-auth-secret",
            ProblemKind::InvalidCertificate => "invalid-certificate",
            ProblemKind::KeyMismatch => "key-mismatch",
            ProblemKind::CertificateHostMismatch => "certificate-host-mismatch",
            ProblemKind::CertificateExpired => "certificate-expired",
            ProblemKind::CertificateNotYetValid => "certificate-not-yet-valid",
            ProblemKind::CertificateIsCa => "certificate-is-ca",
            ProblemKind::CertificateWithoutSan => "certificate-without-san",
            ProblemKind::CertificateChainOrder => "certificate-chain-order",
            ProblemKind::CertificateChainUnrelated => "certificate-chain-unrelated",
            ProblemKind::CertificateKeyUsage => "certificate-key-usage",
            ProblemKind::CertificateKeyType => "certificate-key-type",
            ProblemKind::RuleConflict => "rule-conflict",
            ProblemKind::TlsHostConflict => "tls-host-conflict",
            ProblemKind::ForeignIngressClass => "foreign-ingress-class",
            ProblemKind::AcmeNotOrdered => "acme-not-ordered",
            ProblemKind::GatewayNotReady => "gateway-not-ready",
            ProblemKind::RouteNotAccepted => "route-not-accepted",
            ProblemKind::UnresolvedReference => "unresolved-reference",
        }
    }

    /// The Event reason, in the CamelCase Kubernetes uses.
    pub fn reason(self) -> String {
        self.as_str()
            .split('-')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect()
    }
}

/// Something wrong with one object (or one file, in manifest mode). The object, or the part of it that
/// is wrong, is left out; everything else is served.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Problem {
    /// The object it concerns; `None` for a file that yielded no object.
    pub object: Option<ObjectRef>,
    /// In manifest mode, the file the object came from.
    pub file: Option<Arc<str>>,
    pub kind: ProblemKind,
    pub message: String,
}

impl Problem {
    pub fn object(object: ObjectRef, kind: ProblemKind, message: impl Into<String>) -> Problem {
        Problem {
            object: Some(object),
            file: None,
            kind,
            message: message.into(),
        }
    }

    pub fn file(file: Arc<str>, kind: ProblemKind, message: impl Into<String>) -> Problem {
        Problem {
            object: None,
            file: Some(file),
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.object, &self.file) {
            (Some(o), Some(file)) => write!(f, "{o} (in {file}): {}", self.message),
            (Some(o), None) => write!(f, "{o}: {}", self.message),
            (None, Some(file)) => write!(f, "{file}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}
