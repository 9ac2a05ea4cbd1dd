//! How an Ingress spreads requests over its Service's endpoints: `load-balance`, `upstream-hash-by`
//! and cookie session affinity (`affinity`, `affinity-mode`, `session-cookie-*`). As in ingress-nginx,
//! affinity wins over `upstream-hash-by`, which wins over `load-balance`. None of these protects
//! anything, so an invalid value is reported and the default (round robin) applies.

use std::sync::Arc;

use super::Reader;
use super::external_auth::Template;

/// The annotation names of this family (without prefix).
pub const NAMES: &[&str] = &[
    "load-balance",
    "upstream-hash-by",
    "affinity",
    "affinity-mode",
    "session-cookie-name",
    "session-cookie-path",
    "session-cookie-domain",
    "session-cookie-samesite",
    "session-cookie-conditional-samesite-none",
    "session-cookie-secure",
    "session-cookie-expires",
    "session-cookie-max-age",
    "session-cookie-change-on-failure",
];

/// ingress-nginx's default cookie name.
pub const DEFAULT_COOKIE_NAME: &str = "INGRESSCOOKIE";

/// How the endpoint of each request is chosen.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Balancing {
    /// `load-balance: round_robin` (the default).
    #[default]
    RoundRobin,
    /// `load-balance: ewma`: the less loaded of two random endpoints, by decaying average latency
    /// times requests in flight (what ingress-nginx's `ewma` balancer does).
    Ewma,
    /// `upstream-hash-by`: the key's place on a consistent-hash ring of the endpoints.
    Hash(Template),
    /// `affinity: cookie`.
    Sticky(Arc<SessionCookie>),
}

/// `affinity-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AffinityMode {
    /// The cookie holds a random key placed on a consistent-hash ring: when endpoints are added, a
    /// share of the sessions moves to them.
    #[default]
    Balanced,
    /// The cookie names the endpoint: a session moves only when its endpoint goes away.
    Persistent,
}

/// `session-cookie-samesite`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    None,
    Lax,
    Strict,
}

/// The affinity cookie and its attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCookie {
    pub mode: AffinityMode,
    pub name: String,
    /// `None`: the path of the Ingress rule.
    pub path: Option<String>,
    pub domain: Option<String>,
    pub samesite: Option<SameSite>,
    /// Leave `SameSite=None` out for browsers known to mishandle it.
    pub conditional_samesite_none: bool,
    /// Always `Secure`; without it, only requests that came over HTTPS get `Secure`.
    pub secure: bool,
    /// `Expires`, this many seconds after the cookie is set.
    pub expires: Option<u64>,
    pub max_age: Option<u64>,
    /// Parsed for compatibility: it takes effect with retries on another endpoint.
    pub change_on_failure: bool,
}

/// A cookie name or attribute value: visible ASCII without the separators that would end it.
fn cookie_token(v: &str) -> Result<String, String> {
    match !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'=' | b'"' | b'\\'))
    {
        true => Ok(v.to_string()),
        false => Err(format!("{v:?} cannot be used in a cookie")),
    }
}

fn seconds(v: &str) -> Result<u64, String> {
    v.parse::<u64>()
        .map_err(|_| format!("{v:?} is not a whole number of seconds"))
}

pub(super) fn parse(r: &mut Reader<'_>) -> Balancing {
    let sticky = sticky(r);
    let hash = r.parse("upstream-hash-by", |v| {
        let t = Template::parse(v)?;
        match v.contains('$') {
            true => Ok(t),
            false => Err(format!(
                "{v:?} has no variable, so every request would go to one endpoint"
            )),
        }
    });
    let lb = r.parse("load-balance", |v| match v {
        "round_robin" => Ok(Balancing::RoundRobin),
        "ewma" => Ok(Balancing::Ewma),
        _ => Err(format!("{v:?} is not round_robin or ewma")),
    });
    if let Some(s) = sticky {
        return Balancing::Sticky(Arc::new(s));
    }
    if let Some(t) = hash {
        return Balancing::Hash(t);
    }
    lb.unwrap_or_default()
}

/// The cookie settings, read only with `affinity: cookie` (ingress-nginx ignores them otherwise).
fn sticky(r: &mut Reader<'_>) -> Option<SessionCookie> {
    r.parse("affinity", |v| match v {
        "cookie" => Ok(()),
        _ => Err(format!("{v:?} is not supported (only \"cookie\")")),
    })?;
    let mode = r
        .parse("affinity-mode", |v| match v {
            "balanced" => Ok(AffinityMode::Balanced),
            "persistent" => Ok(AffinityMode::Persistent),
            _ => Err(format!("{v:?} is not balanced or persistent")),
        })
        .unwrap_or_default();
    let path = r.parse("session-cookie-path", |v| {
        match v.starts_with('/') && cookie_token(v).is_ok() {
            true => Ok(v.to_string()),
            false => Err(format!("{v:?} is not a cookie path like /app")),
        }
    });
    let domain = r.parse("session-cookie-domain", |v| {
        super::super::validation::check_host(v.trim_start_matches('.'))
            .map(|()| v.to_string())
            .map_err(|_| format!("{v:?} is not a domain"))
    });
    let samesite = r.parse("session-cookie-samesite", |v| {
        match v.to_ascii_lowercase().as_str() {
            "none" => Ok(SameSite::None),
            "lax" => Ok(SameSite::Lax),
            "strict" => Ok(SameSite::Strict),
            _ => Err(format!("{v:?} is not None, Lax or Strict")),
        }
    });
    Some(SessionCookie {
        mode,
        name: r
            .parse("session-cookie-name", cookie_token)
            .unwrap_or_else(|| DEFAULT_COOKIE_NAME.into()),
        path,
        domain,
        samesite,
        conditional_samesite_none: r
            .bool("session-cookie-conditional-samesite-none")
            .unwrap_or(false),
        secure: r.bool("session-cookie-secure").unwrap_or(false),
        expires: r.parse("session-cookie-expires", seconds),
        max_age: r.parse("session-cookie-max-age", seconds),
        change_on_failure: r.bool("session-cookie-change-on-failure").unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::super::AnnotationError;
    use super::super::tests::parse_nginx_map;
    use super::*;

    fn parsed(pairs: &[(&str, &str)]) -> (Balancing, Vec<AnnotationError>) {
        let (a, errors) = parse_nginx_map(pairs);
        (a.balancing, errors)
    }

    #[test]
    fn round_robin_by_default_and_ewma_on_request() {
        assert_eq!(parsed(&[]).0, Balancing::RoundRobin);
        assert_eq!(parsed(&[("load-balance", "ewma")]).0, Balancing::Ewma);
        let (b, errors) = parsed(&[("load-balance", "least_conn")]);
        assert_eq!(b, Balancing::RoundRobin);
        assert!(errors[0].to_string().contains("least_conn"), "{errors:?}");
    }

    #[test]
    fn cookie_defaults_follow_ingress_nginx() {
        let (b, errors) = parsed(&[("affinity", "cookie")]);
        assert!(errors.is_empty(), "{errors:?}");
        let Balancing::Sticky(c) = b else {
            panic!("{b:?}")
        };
        assert_eq!(c.name, "INGRESSCOOKIE");
        assert_eq!(c.mode, AffinityMode::Balanced);
        assert_eq!((c.path.as_ref(), c.samesite, c.secure), (None, None, false));
        assert_eq!((c.expires, c.max_age), (None, None));
    }

    #[test]
    fn every_cookie_attribute_is_read() {
        let (b, errors) = parsed(&[
            ("affinity", "cookie"),
            ("affinity-mode", "persistent"),
            ("session-cookie-name", "route"),
            ("session-cookie-path", "/app"),
            ("session-cookie-domain", ".example.com"),
            ("session-cookie-samesite", "None"),
            ("session-cookie-conditional-samesite-none", "true"),
            ("session-cookie-secure", "true"),
            ("session-cookie-expires", "172800"),
            ("session-cookie-max-age", "3600"),
            ("session-cookie-change-on-failure", "true"),
        ]);
        assert!(errors.is_empty(), "{errors:?}");
        let expected = SessionCookie {
            mode: AffinityMode::Persistent,
            name: "route".into(),
            path: Some("/app".into()),
            domain: Some(".example.com".into()),
            samesite: Some(SameSite::None),
            conditional_samesite_none: true,
            secure: true,
            expires: Some(172800),
            max_age: Some(3600),
            change_on_failure: true,
        };
        assert_eq!(b, Balancing::Sticky(Arc::new(expected)));
    }

    #[test]
    fn invalid_cookie_settings_are_reported_and_defaulted() {
        let (b, errors) = parsed(&[
            ("affinity", "cookie"),
            ("affinity-mode", "sometimes"),
            ("session-cookie-name", "a;b"),
            ("session-cookie-max-age", "-1"),
        ]);
        assert_eq!(errors.len(), 3, "{errors:?}");
        let Balancing::Sticky(c) = b else {
            panic!("{b:?}")
        };
        assert_eq!(
            (c.mode, c.name.as_str(), c.max_age),
            (AffinityMode::Balanced, "INGRESSCOOKIE", None)
        );
        let (b, errors) = parsed(&[("affinity", "ip")]);
        assert_eq!((b, errors.len()), (Balancing::RoundRobin, 1));
    }

    #[test]
    fn affinity_beats_hash_which_beats_load_balance() {
        let all = [
            ("affinity", "cookie"),
            ("upstream-hash-by", "$request_uri"),
            ("load-balance", "ewma"),
        ];
        assert!(matches!(parsed(&all).0, Balancing::Sticky(_)));
        assert!(matches!(parsed(&all[1..]).0, Balancing::Hash(_)));
    }

    #[test]
    fn hash_keys_need_a_known_variable() {
        for ok in [
            "$request_uri",
            "$remote_addr$host",
            "${http_x_user}-${cookie_s}",
            "$arg_id",
        ] {
            let (b, errors) = parsed(&[("upstream-hash-by", ok)]);
            assert!(
                matches!(b, Balancing::Hash(_)) && errors.is_empty(),
                "{ok}: {errors:?}"
            );
        }
        for bad in ["constant", "$no_such_var"] {
            let (b, errors) = parsed(&[("upstream-hash-by", bad)]);
            assert_eq!((b, errors.len()), (Balancing::RoundRobin, 1), "{bad}");
        }
    }

    #[test]
    fn hash_subsets_are_reported_as_unsupported() {
        let (_, errors) = parsed(&[
            ("upstream-hash-by", "$request_uri"),
            ("upstream-hash-by-subset", "true"),
            ("upstream-hash-by-subset-size", "3"),
        ]);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors
                .iter()
                .all(|e| matches!(e, AnnotationError::Unsupported { .. }))
        );
    }
}
