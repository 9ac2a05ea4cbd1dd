//! The `acme:` section of `--config`: the ACME certificate authorities Ingresses may name with
//! `portcullis.io/acme-issuer`, checked as a whole so a bad section is a configuration error.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::vocab::NamespacedName;

/// ACME issuers. Without issuers, ACME is off.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AcmeSettings {
    /// The issuer of Ingresses annotated `portcullis.io/acme: "true"` without `acme-issuer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_issuer: Option<String>,
    /// Issuers by name.
    pub issuers: BTreeMap<String, Issuer>,
}

/// One ACME certificate authority and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Issuer {
    /// The ACME directory URL, e.g. `https://acme-v02.api.letsencrypt.org/directory`.
    pub directory: String,
    /// Contact address given to the CA for expiry and policy notices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// How the CA checks control of each name.
    #[serde(default)]
    pub challenge: Challenge,
    /// PEM file of the CA certificates that sign the directory's HTTPS certificate, for a private
    /// ACME server; without it, the system's web roots are trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory_ca_file: Option<PathBuf>,
    /// The ACME profile to order (e.g. `tlsserver`, `shortlived`); the CA's default without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// External account binding, for CAs that require one (ZeroSSL, Google, private CAs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_account_binding: Option<ExternalAccountBinding>,
}

/// The challenge type an issuer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
pub enum Challenge {
    /// A token served on port 80 under `/.well-known/acme-challenge/`.
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    /// A special certificate offered on port 443 to handshakes with ALPN `acme-tls/1` (RFC 8737).
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

impl Challenge {
    pub fn as_str(self) -> &'static str {
        match self {
            Challenge::Http01 => "http-01",
            Challenge::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

/// The key id and HMAC key the CA gave for binding the ACME account to an existing customer account.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExternalAccountBinding {
    pub key_id: String,
    /// `NAMESPACE/NAME` of a Secret whose `hmac-key` holds the base64url HMAC key the CA gave.
    #[schemars(with = "String", regex(pattern = r"^[^/]+/[^/]+$"))]
    pub hmac_key_secret: NamespacedName,
}

impl AcmeSettings {
    /// Checks what the types cannot: names, URLs and the default issuer.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(name) = &self.default_issuer
            && !self.issuers.contains_key(name)
        {
            return Err(format!(
                "acme.default-issuer: {name:?} is not one of acme.issuers"
            ));
        }
        for (name, issuer) in &self.issuers {
            let at = format!("acme.issuers.{name}");
            if name.is_empty()
                || name.len() > 63
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(format!(
                    "{at}: issuer names are lower-case letters, digits and '-' (at most 63)"
                ));
            }
            let uri: http::Uri = issuer
                .directory
                .parse()
                .map_err(|_| format!("{at}.directory: {:?} is not a URL", issuer.directory))?;
            if uri.scheme_str() != Some("https") || uri.authority().is_none() {
                return Err(format!(
                    "{at}.directory: {:?} must be an https:// URL",
                    issuer.directory
                ));
            }
            if let Some(email) = &issuer.email {
                let valid = email.split_once('@').is_some_and(|(user, domain)| {
                    !user.is_empty() && domain.contains('.') && !domain.contains('@')
                }) && !email.contains(|c: char| c.is_whitespace() || c.is_control());
                if !valid {
                    return Err(format!("{at}.email: {email:?} is not an e-mail address"));
                }
            }
            if let Some(profile) = &issuer.profile
                && (profile.is_empty() || !profile.bytes().all(|b| b.is_ascii_graphic()))
            {
                return Err(format!("{at}.profile: {profile:?} is not a profile name"));
            }
            if let Some(eab) = &issuer.external_account_binding
                && eab.key_id.trim().is_empty()
            {
                return Err(format!(
                    "{at}.external-account-binding.key-id: must not be empty"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::settings::Settings;

    use super::*;

    const ISSUER: &str = "acme:\n  default-issuer: le\n  issuers:\n    le:\n      directory: https://acme.example/dir\n";

    #[test]
    fn reads_the_issuers_with_their_defaults() {
        let s = Settings::from_yaml(&format!(
            "{ISSUER}      email: ops@example.com\n      profile: tlsserver\n      directory-ca-file: /etc/ca.pem\n      external-account-binding: {{key-id: kid, hmac-key-secret: ns/eab}}\n    alpn:\n      directory: https://other.example/dir\n      challenge: tls-alpn-01\n"
        ))
        .unwrap();
        let le = &s.acme.issuers["le"];
        assert_eq!(s.acme.default_issuer.as_deref(), Some("le"));
        assert_eq!(le.challenge, Challenge::Http01);
        assert_eq!(le.email.as_deref(), Some("ops@example.com"));
        assert_eq!(le.profile.as_deref(), Some("tlsserver"));
        assert_eq!(
            le.external_account_binding
                .as_ref()
                .unwrap()
                .hmac_key_secret,
            NamespacedName::new("ns", "eab")
        );
        assert_eq!(s.acme.issuers["alpn"].challenge, Challenge::TlsAlpn01);
        assert!(Settings::default().acme.issuers.is_empty());
    }

    #[test]
    fn a_bad_acme_section_is_an_error_naming_the_field() {
        let bad = |extra: &str| Settings::from_yaml(&format!("{ISSUER}{extra}")).unwrap_err();
        assert!(bad("      challenge: dns-01\n").contains("unknown variant"));
        assert!(bad("      mail: a@b.c\n").contains("unknown field `mail`"));
        assert!(bad("      email: nobody\n").contains("acme.issuers.le.email"));
        assert!(bad("      profile: \"\"\n").contains("acme.issuers.le.profile"));
        let e = Settings::from_yaml(
            "acme:\n  default-issuer: nope\n  issuers:\n    le: {directory: https://a.example/}\n",
        )
        .unwrap_err();
        assert!(e.contains("acme.default-issuer"), "{e}");
        let e = Settings::from_yaml("acme:\n  issuers:\n    le: {directory: http://a.example/}\n")
            .unwrap_err();
        assert!(e.contains("must be an https:// URL"), "{e}");
        let e = Settings::from_yaml("acme:\n  issuers:\n    Le: {directory: https://a.example/}\n")
            .unwrap_err();
        assert!(e.contains("issuer names"), "{e}");
        let e = Settings::from_yaml("acme:\n  issuers:\n    le: {email: a@b.c}\n").unwrap_err();
        assert!(e.contains("missing field `directory`"), "{e}");
    }
}
