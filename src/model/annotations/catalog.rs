//! What each ingress-nginx annotation and ConfigMap key becomes in Portcullis, in one table: the
//! unknown-annotation check takes its advice from here, `portcullis check` its verdicts, and a test
//! compares it with the tables of `docs/migrating-from-ingress-nginx.md`, so the guide and the tool
//! cannot drift apart.

/// How an ingress-nginx annotation behaves here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Implemented with ingress-nginx's behaviour.
    Same,
    /// Implemented; the note says how it differs.
    Differs,
    /// Not implemented; reported, and the note says what to do instead.
    Unsupported,
    /// Refused on purpose (raw configuration injection).
    Refused,
    /// Not implemented because Portcullis never needed it (the note says why).
    NotNeeded,
}

impl Verdict {
    /// The word of the guide's status column.
    pub fn status(self) -> &'static str {
        match self {
            Verdict::Same => "yes",
            Verdict::Differs => "difference",
            Verdict::Unsupported => "no",
            Verdict::Refused => "no, by design",
            Verdict::NotNeeded => "no, not needed",
        }
    }

    /// Whether Portcullis reads the annotation.
    pub fn is_supported(self) -> bool {
        matches!(self, Verdict::Same | Verdict::Differs)
    }
}

/// One row of the guide's annotation table.
#[derive(Debug)]
pub struct Entry {
    /// The row's first column when it is not just the names in backticks.
    label: Option<&'static str>,
    /// Annotation names without prefix; a trailing `*` stands for any ending.
    pub names: &'static [&'static str],
    pub verdict: Verdict,
    /// How it differs or what to do instead (Markdown, as in the guide); may be empty.
    pub note: &'static str,
}

impl Entry {
    /// The row's first column in the guide.
    pub fn label(&self) -> String {
        match self.label {
            Some(label) => label.to_string(),
            None => self
                .names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    fn covers(&self, name: &str) -> bool {
        self.names.iter().any(|n| match n.strip_suffix('*') {
            Some(start) => name.starts_with(start),
            None => *n == name,
        })
    }
}

/// The first row that covers this annotation name (without prefix).
pub fn annotation(name: &str) -> Option<&'static Entry> {
    ANNOTATIONS.iter().find(|e| e.covers(name))
}

/// What to say about an annotation Portcullis does not read: the guide's advice, else a pointer to it.
pub fn advice(name: &str) -> &'static str {
    match annotation(name) {
        Some(entry) if !entry.note.is_empty() => entry.note,
        _ => "see docs/migrating-from-ingress-nginx.md",
    }
}

/// One row of the guide's ConfigMap table.
#[derive(Debug)]
pub struct Setting {
    label: Option<&'static str>,
    pub keys: &'static [&'static str],
    /// Where the setting lives in Portcullis (Markdown).
    pub here: &'static str,
}

impl Setting {
    /// The row's first column in the guide.
    pub fn label(&self) -> String {
        match self.label {
            Some(label) => label.to_string(),
            None => self
                .keys
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// The row for an ingress-nginx ConfigMap key.
pub fn configmap_key(key: &str) -> Option<&'static Setting> {
    CONFIGMAP.iter().find(|s| s.keys.contains(&key))
}

/// In the guide's order.
pub const ANNOTATIONS: &[Entry] = &[
    Entry {
        label: None,
        names: &["ssl-redirect"],
        verdict: Verdict::Same,
        note: "Default `true` for hosts in `spec.tls`; code 308 (`redirect.code` in `--config`).",
    },
    Entry {
        label: None,
        names: &["force-ssl-redirect"],
        verdict: Verdict::Same,
        note: "",
    },
    Entry {
        label: None,
        names: &["permanent-redirect", "permanent-redirect-code"],
        verdict: Verdict::Same,
        note: "",
    },
    Entry {
        label: None,
        names: &["temporal-redirect", "temporal-redirect-code"],
        verdict: Verdict::Same,
        note: "",
    },
    Entry {
        label: None,
        names: &["app-root"],
        verdict: Verdict::Same,
        note: "302 for `/`.",
    },
    Entry {
        label: None,
        names: &["from-to-www-redirect"],
        verdict: Verdict::Same,
        note: "308 to the other name, only when no Ingress has rules for it.",
    },
    Entry {
        label: None,
        names: &["preserve-trailing-slash"],
        verdict: Verdict::Same,
        note: "HTTPS redirects drop one trailing `/` unless set, as in ingress-nginx.",
    },
    Entry {
        label: None,
        names: &["use-port-in-redirects"],
        verdict: Verdict::Same,
        note: "Adds the HTTPS listener's port when it is not 443.",
    },
    Entry {
        label: None,
        names: &["backend-protocol"],
        verdict: Verdict::Differs,
        note: "`HTTP`, `HTTPS`, `GRPC`, `GRPCS`, `H2C`. `AUTO_HTTP` and `FCGI` are not supported. Backend certificates are not verified (as ingress-nginx's default).",
    },
    Entry {
        label: None,
        names: &[
            "proxy-connect-timeout",
            "proxy-read-timeout",
            "proxy-send-timeout",
        ],
        verdict: Verdict::Same,
        note: "Seconds, or with a unit (`30s`).",
    },
    Entry {
        label: None,
        names: &["proxy-body-size"],
        verdict: Verdict::Differs,
        note: "Same syntax. ingress-nginx's default is `1m`; Portcullis has **no limit** unless this annotation or `upstream.max-body-size` sets one.",
    },
    Entry {
        label: None,
        names: &["upstream-vhost"],
        verdict: Verdict::Same,
        note: "",
    },
    Entry {
        label: None,
        names: &["x-forwarded-prefix"],
        verdict: Verdict::Same,
        note: "",
    },
    Entry {
        label: None,
        names: &["rewrite-target"],
        verdict: Verdict::Same,
        note: "`$1`, `$2`… captures from the path regex; implies `use-regex`.",
    },
    Entry {
        label: None,
        names: &["use-regex"],
        verdict: Verdict::Differs,
        note: "Anchored, case-insensitive, linear-time regexes, tried after `Exact` and before plain prefixes, longest pattern first. ingress-nginx turns every path of the host into a regex when any Ingress of the host sets it; Portcullis only the paths of the Ingress that asks.",
    },
    Entry {
        label: None,
        names: &["whitelist-source-range", "allowlist-source-range"],
        verdict: Verdict::Differs,
        note: "Same CIDR list; an **invalid list denies everyone** (ingress-nginx rejected the Ingress's configuration).",
    },
    Entry {
        label: None,
        names: &["denylist-source-range"],
        verdict: Verdict::Differs,
        note: "Same CIDR list, checked before the allowlist (deny wins), on the same client address (`trusted-proxies` honoured). An **invalid or empty list makes the Ingress answer 503** until fixed, and is reported.",
    },
    Entry {
        label: None,
        names: &[
            "enable-cors",
            "cors-allow-methods",
            "cors-allow-headers",
            "cors-expose-headers",
            "cors-max-age",
        ],
        verdict: Verdict::Same,
        note: "Same defaults and header values.",
    },
    Entry {
        label: None,
        names: &["cors-allow-origin"],
        verdict: Verdict::Differs,
        note: "Same list, `*` and `https://*.example.com` (one label) forms, matched case-insensitively and anchored at **both** ends (ingress-nginx anchored only the end). A listed origin is echoed as before, now with **`Vary: Origin`** on every answer (ingress-nginx sent none, so caches could serve one origin's answer to another). Preflights need `Access-Control-Request-Method` (ingress-nginx answered any `OPTIONS` with a matching origin, and any `OPTIONS` at all with `*`; now such requests reach the backend). An invalid entry turns CORS off for the Ingress, reported (ingress-nginx skipped the entry).",
    },
    Entry {
        label: None,
        names: &["cors-allow-credentials"],
        verdict: Verdict::Differs,
        note: "Default `true`, as before, for listed origins. With origin `*`, **no** `Access-Control-Allow-Credentials` is sent: ingress-nginx sent `true` with `*`, which browsers reject, so credentialed requests failed there too; list the origins to allow credentials. An explicit `\"true\"` with `*` is reported.",
    },
    Entry {
        label: None,
        names: &["default-backend"],
        verdict: Verdict::Same,
        note: "Serves when the rule's Service has no ready endpoint.",
    },
    Entry {
        label: None,
        names: &["auth-type"],
        verdict: Verdict::Differs,
        note: "`basic` only; `digest` is reported as unsupported and the Ingress answers 503 (ingress-nginx supported digest). `auth-secret`, `auth-secret-type` or `auth-realm` without `auth-type` fail closed (503) instead of being ignored.",
    },
    Entry {
        label: None,
        names: &["auth-secret"],
        verdict: Verdict::Differs,
        note: "`name` or `namespace/name`, but only the Ingress's own namespace: a Secret in another namespace is refused (503), as ingress-nginx did unless cross-namespace references were allowed. Missing Secret or missing key → 503, as in ingress-nginx.",
    },
    Entry {
        label: None,
        names: &["auth-secret-type"],
        verdict: Verdict::Same,
        note: "`auth-file` (key `auth`, htpasswd lines) or `auth-map` (user → hash).",
    },
    Entry {
        label: None,
        names: &["auth-realm"],
        verdict: Verdict::Same,
        note: "`WWW-Authenticate: Basic realm=\"…\"`; empty by default, as ingress-nginx.",
    },
    Entry {
        label: Some("basic-auth hashes"),
        names: &[],
        verdict: Verdict::Differs,
        note: "bcrypt (`$2a$`/`$2b$`/`$2y$`), `$apr1$`, `$1$`, `$5$`, `$6$`, `{SHA}` work. **DES crypt (`htpasswd -d`) and plain text (`{PLAIN}`, `htpasswd -p`) are refused** (that user cannot sign in; with no usable user, 503), and `{SSHA}`, bcrypt cost above 15 and SHA-crypt above 1,000,000 rounds are not supported: re-create those entries with `htpasswd -B`. A Secret that turns bad fails closed (503), with no last good credentials kept. See [annotations.md](annotations.md#basic-authentication).",
    },
    Entry {
        label: None,
        names: &["auth-url"],
        verdict: Verdict::Differs,
        note: "Same subrequest (no body, the client's headers, `X-Original-URL`, `X-Original-Method`, `X-Auth-Request-Redirect`, `X-Real-IP`, `X-Request-ID`, …) and the same use of the answer (2xx on, 401/403 to the client, anything else 500). The variables listed in [annotations.md](annotations.md#external-authentication) work; header, cookie and query values are percent-encoded when filled in and a `Host` that is not a host name gets 400 (nginx put them in raw, so a client could change the auth URL). `X-Forwarded-Proto`, `-Host`, `-Port` and `-Uri` are sent (ingress-nginx removed `X-Forwarded-Proto`). An invalid value → 503, as in ingress-nginx.",
    },
    Entry {
        label: None,
        names: &["auth-method"],
        verdict: Verdict::Same,
        note: "Same methods; adds `X-Original-URI` and `X-Scheme` as ingress-nginx does.",
    },
    Entry {
        label: None,
        names: &["auth-signin"],
        verdict: Verdict::Same,
        note: "A 401 becomes a 302 with `rd=` (unless the URL already has it); the auth answer's cookies go with it. The original URL in `rd` is fully percent-encoded (ingress-nginx left `scheme://host` unencoded; both decode to the same).",
    },
    Entry {
        label: None,
        names: &["auth-signin-redirect-param"],
        verdict: Verdict::Same,
        note: "Default `rd`.",
    },
    Entry {
        label: None,
        names: &["auth-response-headers"],
        verdict: Verdict::Same,
        note: "Copied from the auth answer; removed from the request when the answer lacks them (as nginx's empty value did), so clients cannot forge them. Every value of a repeated header is copied.",
    },
    Entry {
        label: None,
        names: &["auth-request-redirect"],
        verdict: Verdict::Same,
        note: "The `X-Auth-Request-Redirect` value; variables work.",
    },
    Entry {
        label: None,
        names: &["auth-always-set-cookie"],
        verdict: Verdict::Same,
        note: "Without it, `Set-Cookie` reaches the client on 2xx and 3xx responses.",
    },
    Entry {
        label: None,
        names: &["auth-cache-key", "auth-cache-duration"],
        verdict: Verdict::Differs,
        note: "Same syntax and default (`200 202 401 5m`), per Ingress and key. Answers that set cookies are never cached, and the cache is bounded (10,000 answers, in memory, per replica).",
    },
    Entry {
        label: None,
        names: &["auth-proxy-set-headers"],
        verdict: Verdict::Unsupported,
        note: "A ConfigMap of headers for the auth service; reported and the Ingress answers **503** rather than ask the auth service without them. Derive them in the auth service from the headers sent.",
    },
    Entry {
        label: Some(
            "`global-auth-url` and the other global-auth ConfigMap keys, `enable-global-auth`",
        ),
        names: &["enable-global-auth"],
        verdict: Verdict::Unsupported,
        note: "Set `auth-url` on each Ingress that needs it.",
    },
    Entry {
        label: None,
        names: &["auth-tls-secret"],
        verdict: Verdict::Differs,
        note: "Same keys (`ca.crt`, optional `ca.crl`), but only the Ingress's own namespace (another namespace → 503). Missing Secret, no `ca.crt`, bad PEM or a bad CRL → 503 and reported, as ingress-nginx answered 503 for an unusable CA. When the Ingresses of one host disagree on `auth-tls-*`, the host answers 503 (ingress-nginx applied the first one's settings to the whole host). See [annotations.md](annotations.md#client-certificates-mutual-tls).",
    },
    Entry {
        label: None,
        names: &["auth-tls-verify-client"],
        verdict: Verdict::Differs,
        note: "`on`, `off`, `optional`, `optional_no_ca` as in ingress-nginx; any other value fails closed (503). A request for the host on a connection whose SNI did not name it (no SNI, or HTTP/2 reuse of another host's connection) gets **421** instead of being served unchecked. The certificate request sends no CA names.",
    },
    Entry {
        label: None,
        names: &["auth-tls-verify-depth"],
        verdict: Verdict::Differs,
        note: "Default 1; values 1–10 (others fail closed). Counted as the client's certificate plus the intermediates it sends.",
    },
    Entry {
        label: None,
        names: &["auth-tls-pass-certificate-to-upstream"],
        verdict: Verdict::Same,
        note: "`ssl-client-cert` with the URL-escaped PEM. `ssl-client-verify`, `ssl-client-subject-dn` and `ssl-client-issuer-dn` are always sent, as before; client-sent copies are removed on every route.",
    },
    Entry {
        label: None,
        names: &["auth-tls-error-page"],
        verdict: Verdict::Same,
        note: "A missing or failed certificate redirects (302) to the URL instead of answering 400.",
    },
    Entry {
        label: None,
        names: &["auth-tls-match-cn"],
        verdict: Verdict::Same,
        note: "A regex on the subject DN; a mismatch is 403 \"client certificate unauthorized\". Rust regex syntax (no lookaround or backreferences); one that does not compile fails closed.",
    },
    Entry {
        label: Some(
            "HSTS (ConfigMap `hsts`, `hsts-max-age`, `hsts-include-subdomains`, `hsts-preload`)",
        ),
        names: &[
            "hsts",
            "hsts-max-age",
            "hsts-include-subdomains",
            "hsts-preload",
        ],
        verdict: Verdict::Differs,
        note: "Global defaults in `--config` **and** per Ingress with `portcullis.io/hsts*` annotations, which ingress-nginx never offered.",
    },
    Entry {
        label: None,
        names: &[
            "configuration-snippet",
            "server-snippet",
            "auth-snippet",
            "stream-snippet",
            "modsecurity-snippet",
        ],
        verdict: Verdict::Refused,
        note: "Raw configuration injection; the source of several critical ingress-nginx CVEs. Move the behaviour into the application or a dedicated annotation.",
    },
    Entry {
        label: None,
        names: &["affinity", "affinity-mode"],
        verdict: Verdict::Differs,
        note: "`cookie`, `balanced` (default) and `persistent` as in ingress-nginx. Cookie values are keyed hashes that reveal no endpoint (ingress-nginx's were unkeyed MD5s of the address), so sessions pinned by ingress-nginx are pinned anew once on switching; a forged or stale value is balanced as if absent. See [annotations.md](annotations.md#load-balancing-and-session-affinity).",
    },
    Entry {
        label: None,
        names: &[
            "session-cookie-name",
            "session-cookie-domain",
            "session-cookie-samesite",
            "session-cookie-conditional-samesite-none",
            "session-cookie-secure",
            "session-cookie-expires",
            "session-cookie-max-age",
        ],
        verdict: Verdict::Same,
        note: "Same defaults and attributes (`HttpOnly` always; `Secure` also for requests over HTTPS).",
    },
    Entry {
        label: None,
        names: &["session-cookie-path"],
        verdict: Verdict::Differs,
        note: "Default the rule's path, as before; for `use-regex` paths the default is `/` (ingress-nginx put the regex in `Path`).",
    },
    Entry {
        label: None,
        names: &["session-cookie-change-on-failure"],
        verdict: Verdict::Same,
        note: "",
    },
    Entry {
        label: None,
        names: &["upstream-hash-by"],
        verdict: Verdict::Differs,
        note: "Consistent hashing with the same variables and combinations; which endpoint a key lands on differs from nginx's `chash` (keys are re-spread once on switching). Values are hashed as percent-encoded text.",
    },
    Entry {
        label: None,
        names: &["upstream-hash-by-subset", "upstream-hash-by-subset-size"],
        verdict: Verdict::Unsupported,
        note: "Reported; `upstream-hash-by` spreads over all endpoints.",
    },
    Entry {
        label: None,
        names: &["load-balance"],
        verdict: Verdict::Differs,
        note: "`round_robin` (default) and `ewma`: power of two choices on a decaying latency average (as ingress-nginx), times requests in flight.",
    },
    Entry {
        label: None,
        names: &["limit-rps", "limit-rpm", "limit-burst-multiplier"],
        verdict: Verdict::Differs,
        note: "Same keys (client address, `trusted-proxies` honoured), scope (all hosts and paths of the Ingress, per replica), default multiplier `5` and burst + 1 behaviour. The refusal status is `limits.rate-limit-status` in `--config` (`503` default, or `429`; ingress-nginx's `limit-req-status-code` ConfigMap key). An **invalid value makes the Ingress answer 503** until fixed, and is reported (ingress-nginx ignored it and served unlimited).",
    },
    Entry {
        label: None,
        names: &["limit-connections"],
        verdict: Verdict::Differs,
        note: "Counts a client's requests in progress on the Ingress (as nginx's `limit_conn` does for HTTP), so HTTP/2 streams count one each. Refusals get `limits.rate-limit-status` (ingress-nginx's separate `limit-conn-status-code` has no equivalent); invalid values fail closed as above.",
    },
    Entry {
        label: None,
        names: &["limit-whitelist", "limit-allowlist"],
        verdict: Verdict::Same,
        note: "Same CIDR list, exempting from all three limits; an invalid list fails closed as above.",
    },
    Entry {
        label: None,
        names: &["limit-rate"],
        verdict: Verdict::Differs,
        note: "Same unit (KiB per second) and per-response scope as the nginx `limit_rate` it became; `0` means none. nginx's per-second accounting may let up to a second's worth go ahead at the start; Portcullis paces from the first byte after `limit-rate-after` (256 KiB at 64 KiB/s takes 4 s). Needs no `proxy-buffering`. An **invalid value makes the Ingress answer 503** until fixed (ingress-nginx ignored it).",
    },
    Entry {
        label: None,
        names: &["limit-rate-after"],
        verdict: Verdict::Same,
        note: "KiB sent at full speed first, per response. Without `limit-rate` it has no effect and is reported.",
    },
    Entry {
        label: None,
        names: &[
            "canary",
            "canary-weight",
            "canary-weight-total",
            "canary-by-header",
            "canary-by-header-value",
            "canary-by-cookie",
        ],
        verdict: Verdict::Same,
        note: "Same precedence (affinity side, header, cookie, weight; `always`/`never`), same weight-total rule, one canary per host and path; Argo Rollouts' and Flagger's generated `-canary` Ingresses work unchanged. A canary for a host and path no primary serves is reported. Annotations on the canary other than the canary, `load-balance`, `upstream-hash-by` and affinity ones are reported as ignored (ingress-nginx ignored them silently). See [annotations.md](annotations.md#canary).",
    },
    Entry {
        label: None,
        names: &["canary-by-header-pattern"],
        verdict: Verdict::Differs,
        note: "Rust regex syntax instead of PCRE (no lookaround or backreferences); a pattern that does not compile is reported and requests with the header go to the primary, as before.",
    },
    Entry {
        label: None,
        names: &["ssl-passthrough"],
        verdict: Verdict::Differs,
        note: "With `--enable-ssl-passthrough`, as ingress-nginx: exact hosts by SNI, the backend of path `/`, other annotations ignored and reported. Endpoints instead of the Service's ClusterIP; plain HTTP for the host redirects to HTTPS instead of reaching the backend; a passthrough host's conflicts with other Ingresses are reported ([annotations.md](annotations.md#ssl-passthrough)).",
    },
    Entry {
        label: None,
        names: &[
            "proxy-buffering",
            "proxy-buffer-size",
            "proxy-buffers-number",
            "proxy-request-buffering",
            "client-body-buffer-size",
            "proxy-max-temp-file-size",
        ],
        verdict: Verdict::NotNeeded,
        note: "Portcullis streams bodies both ways and never writes them to disk.",
    },
    Entry {
        label: None,
        names: &["proxy-http-version"],
        verdict: Verdict::Unsupported,
        note: "Upstream is HTTP/1.1, or HTTP/2 with `backend-protocol`.",
    },
    Entry {
        label: None,
        names: &["proxy-next-upstream"],
        verdict: Verdict::Differs,
        note: "Same conditions and default (`error timeout`); `http_500`…`http_504`, `non_idempotent`, `off` work as in nginx. `invalid_header`, `http_403`, `http_404`, `http_429` are reported and ignored. Bodies are replayed only up to 64 KiB with a `Content-Length` (nginx buffers any size, to disk); see [annotations.md](annotations.md#retries-and-failing-endpoints).",
    },
    Entry {
        label: None,
        names: &["proxy-next-upstream-tries"],
        verdict: Verdict::Same,
        note: "Attempts in all, default 3; `0` means one per endpoint.",
    },
    Entry {
        label: None,
        names: &["proxy-next-upstream-timeout"],
        verdict: Verdict::Same,
        note: "Seconds (or `500ms`, `2s`); `0` means no limit.",
    },
    Entry {
        label: Some("`custom-http-errors`, `default-backend` with error pages"),
        names: &["custom-http-errors"],
        verdict: Verdict::Same,
        note: "The same headers to the error backend (`X-Code`, `X-Format`, `X-Original-URI`, `X-Namespace`, `X-Ingress-Name`, `X-Service-Name`, `X-Service-Port`, `X-Request-ID`), with the `default-backend` annotation or the cluster's default backend; Portcullis's own 502/503/504 are covered, and its 404 for a path none of the host's rules matches when an Ingress of the host lists 404 with a `default-backend`. Without `--default-backend-service` (Portcullis has none), the cluster's default backend is the oldest Ingress's `spec.defaultBackend`.",
    },
    Entry {
        label: None,
        names: &["server-alias"],
        verdict: Verdict::Same,
        note: "The alias serves every route of the Ingress's first host and gets its certificate; a name that another Ingress has rules for is not taken over, and is reported (ingress-nginx logged it only).",
    },
    Entry {
        label: None,
        names: &["ssl-ciphers", "ssl-prefer-server-ciphers"],
        verdict: Verdict::Unsupported,
        note: "TLS is global: TLS 1.2/1.3 with rustls's strong defaults; `tls.min-version` in `--config`.",
    },
    Entry {
        label: None,
        names: &["proxy-ssl-secret"],
        verdict: Verdict::Same,
        note: "`ca.crt`, optional `tls.crt`/`tls.key` for mTLS to the backend; Secrets of the Ingress's namespace only.",
    },
    Entry {
        label: None,
        names: &["proxy-ssl-verify"],
        verdict: Verdict::Differs,
        note: "As nginx's `proxy_ssl_verify` (default `off`); with `on`, a missing or bad Secret makes the routes answer 503 instead of failing each request.",
    },
    Entry {
        label: None,
        names: &["proxy-ssl-verify-depth"],
        verdict: Verdict::Same,
        note: "Default 1.",
    },
    Entry {
        label: None,
        names: &["proxy-ssl-name"],
        verdict: Verdict::Differs,
        note: "Required with `proxy-ssl-verify: on` (ingress-nginx would verify against its internal upstream name and fail every request).",
    },
    Entry {
        label: None,
        names: &["proxy-ssl-server-name"],
        verdict: Verdict::Same,
        note: "`on` sends `proxy-ssl-name` as SNI.",
    },
    Entry {
        label: None,
        names: &["proxy-ssl-protocols"],
        verdict: Verdict::Differs,
        note: "Only `TLSv1.2` and `TLSv1.3` exist in Portcullis; older versions in the list are ignored.",
    },
    Entry {
        label: None,
        names: &["enable-access-log"],
        verdict: Verdict::Unsupported,
        note: "Access logs are global: `--access-log`.",
    },
    Entry {
        label: None,
        names: &[
            "enable-modsecurity",
            "enable-owasp-core-rules",
            "modsecurity-transaction-id",
        ],
        verdict: Verdict::Unsupported,
        note: "No WAF.",
    },
    Entry {
        label: None,
        names: &["service-upstream"],
        verdict: Verdict::Same,
        note: "Requests go to the Service's `clusterIP:port`; a headless Service keeps its endpoints (reported).",
    },
    Entry {
        label: None,
        names: &["mirror-target", "mirror-uri", "mirror-request-body"],
        verdict: Verdict::Unsupported,
        note: "",
    },
    Entry {
        label: None,
        names: &[
            "proxy-cookie-domain",
            "proxy-cookie-path",
            "proxy-redirect-from",
            "proxy-redirect-to",
        ],
        verdict: Verdict::Unsupported,
        note: "Have the application emit the public URLs.",
    },
    Entry {
        label: None,
        names: &["enable-opentelemetry", "opentelemetry-*"],
        verdict: Verdict::Unsupported,
        note: "Metrics are Prometheus (`/metrics`).",
    },
];

/// In the guide's order.
pub const CONFIGMAP: &[Setting] = &[
    Setting {
        label: None,
        keys: &["ssl-redirect", "force-ssl-redirect"],
        here: "per Ingress (annotations)",
    },
    Setting {
        label: None,
        keys: &["http-redirect-code"],
        here: "`redirect.code`",
    },
    Setting {
        label: None,
        keys: &[
            "hsts",
            "hsts-max-age",
            "hsts-include-subdomains",
            "hsts-preload",
        ],
        here: "`hsts.*` (and per-Ingress annotations)",
    },
    Setting {
        label: None,
        keys: &["ssl-protocols"],
        here: "`tls.min-version`",
    },
    Setting {
        label: None,
        keys: &[
            "use-forwarded-headers",
            "forwarded-for-header",
            "proxy-real-ip-cidr",
        ],
        here: "`trusted-proxies`",
    },
    Setting {
        label: None,
        keys: &["use-proxy-protocol"],
        here: "`proxy-protocol: required` (or `optional`, which ingress-nginx does not have); the addresses in headers are believed from `trusted-proxies` only",
    },
    Setting {
        label: None,
        keys: &[
            "proxy-connect-timeout",
            "proxy-read-timeout",
            "proxy-send-timeout",
            "proxy-body-size",
        ],
        here: "`upstream.*`",
    },
    Setting {
        label: None,
        keys: &[
            "client-header-timeout",
            "keep-alive",
            "large-client-header-buffers",
            "http2-max-concurrent-streams",
        ],
        here: "`limits.*`",
    },
    Setting {
        label: Some("`default-ssl-certificate` (flag)"),
        keys: &["default-ssl-certificate"],
        here: "`--default-ssl-certificate` or `tls.default-certificate`",
    },
    Setting {
        label: Some("`watch-ingress-without-class` (flag)"),
        keys: &["watch-ingress-without-class"],
        here: "`--watch-ingress-without-class`",
    },
    Setting {
        label: Some("`publish-service`, `publish-status-address` (flags)"),
        keys: &["publish-service", "publish-status-address"],
        here: "same flags",
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::annotations::{
        SUPPORTED, balancing, basic_auth, canary, client_cert, custom_errors, external_auth,
        next_upstream, passthrough, proxy_ssl, server_alias,
    };

    const GUIDE: &str = include_str!("../../../docs/migrating-from-ingress-nginx.md");

    /// The cells of the table rows in the guide's section `heading`, header and rule left out.
    fn table(heading: &str) -> Vec<Vec<String>> {
        let section = GUIDE
            .split_once(heading)
            .map(|(_, rest)| rest.split("\n## ").next().unwrap_or(""))
            .unwrap_or_else(|| panic!("the guide has a section {heading:?}"));
        section
            .lines()
            .filter(|l| l.starts_with('|'))
            .skip(2)
            .map(|l| {
                let inner = l.trim().trim_start_matches('|').trim_end_matches('|');
                inner.split(" | ").map(|c| c.trim().to_string()).collect()
            })
            .collect()
    }

    #[test]
    fn annotation_table_is_the_guides() {
        let ours: Vec<Vec<String>> = ANNOTATIONS
            .iter()
            .map(|e| vec![e.label(), e.verdict.status().into(), e.note.into()])
            .collect();
        assert_eq!(ours, table("## Annotation by annotation"));
    }

    #[test]
    fn configmap_table_is_the_guides() {
        let ours: Vec<Vec<String>> = CONFIGMAP
            .iter()
            .map(|s| vec![s.label(), s.here.into()])
            .collect();
        assert_eq!(
            ours,
            table("## Global settings (the ingress-nginx ConfigMap)")
        );
    }

    /// Every name a parser reads is listed as supported, and nothing else is.
    #[test]
    fn supported_rows_are_what_the_parsers_read() {
        let parsed: Vec<&str> = [
            SUPPORTED,
            basic_auth::NAMES,
            client_cert::NAMES,
            external_auth::NAMES,
            balancing::NAMES,
            canary::NAMES,
            next_upstream::NAMES,
            proxy_ssl::NAMES,
            passthrough::NAMES,
            custom_errors::NAMES,
            server_alias::NAMES,
        ]
        .concat();
        for name in &parsed {
            let entry = annotation(name).unwrap_or_else(|| panic!("{name} has no row"));
            // Read only to be refused with a 503, as the row says.
            if *name != "auth-proxy-set-headers" {
                assert!(
                    entry.verdict.is_supported(),
                    "{name} is read but its row says {:?}",
                    entry.verdict
                );
            }
        }
        for entry in ANNOTATIONS.iter().filter(|e| e.verdict.is_supported()) {
            for name in entry.names {
                assert!(
                    parsed.contains(name),
                    "{name} is listed as supported but no parser reads it"
                );
            }
        }
    }

    #[test]
    fn unsupported_annotations_get_the_guides_advice() {
        assert_eq!(advice("enable-modsecurity"), "No WAF.");
        assert_eq!(
            advice("no-such-annotation"),
            "see docs/migrating-from-ingress-nginx.md"
        );
        assert_eq!(
            advice("mirror-uri"),
            "see docs/migrating-from-ingress-nginx.md"
        );
    }

    #[test]
    fn first_row_wins_for_a_name_listed_twice() {
        let entry = annotation("default-backend").expect("listed");
        assert_eq!(entry.verdict, Verdict::Same);
    }

    #[test]
    fn a_trailing_star_covers_every_ending() {
        let entry = annotation("opentelemetry-trust-incoming-span").expect("listed");
        assert_eq!(entry.verdict, Verdict::Unsupported);
        assert!(annotation("opentelemetry").is_none());
    }
}
