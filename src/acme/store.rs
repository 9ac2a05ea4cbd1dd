//! Manifest mode's `--state-dir`: the ACME account of each issuer (key created once) and the issued
//! certificates, each one file written atomically (temporary file, fsync, rename) and readable only
//! by the owner, read back at start so a restart re-orders nothing.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::vocab::NamespacedName;

/// An account as stored: the directory it belongs to and instant-acme's serialised credentials.
#[derive(Serialize, Deserialize)]
pub struct StoredAccount {
    pub directory: String,
    pub credentials: instant_acme::AccountCredentials,
}

/// An issued certificate as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCertificate {
    pub namespace: String,
    pub name: String,
    pub issuer: String,
    pub hosts: Vec<String>,
    /// PEM chain, leaf first, as the CA sent it.
    pub chain: String,
    /// PKCS#8 PEM of the certificate's key.
    pub key: String,
    /// Validity of the leaf, Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

impl StoredCertificate {
    pub fn secret(&self) -> NamespacedName {
        NamespacedName::new(&self.namespace, &self.name)
    }

    /// When to renew: one third of the lifetime before expiry (Let's Encrypt's advice without ARI).
    pub fn renew_at(&self) -> i64 {
        self.not_after - (self.not_after - self.not_before).max(0) / 3
    }
}

#[derive(Debug)]
pub(super) struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn open(dir: &Path) -> std::io::Result<Store> {
        for sub in ["accounts", "certificates"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    pub fn account(&self, issuer: &str) -> Option<StoredAccount> {
        let path = self.dir.join("accounts").join(format!("{issuer}.json"));
        let text = std::fs::read(&path).ok()?;
        match serde_json::from_slice(&text) {
            Ok(account) => Some(account),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "unreadable ACME account file; a new account is created");
                None
            }
        }
    }

    pub fn save_account(&self, issuer: &str, account: &StoredAccount) -> std::io::Result<()> {
        let path = self.dir.join("accounts").join(format!("{issuer}.json"));
        write_atomically(&path, &serde_json::to_vec(account)?)
    }

    /// Every readable stored certificate, by Secret; unreadable files are logged and skipped.
    pub fn certificates(&self) -> BTreeMap<NamespacedName, StoredCertificate> {
        let mut found = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(self.dir.join("certificates")) else {
            return found;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| {
                    serde_json::from_slice::<StoredCertificate>(&t).map_err(|e| e.to_string())
                });
            match parsed {
                Ok(cert) => {
                    found.insert(cert.secret(), cert);
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "unreadable stored certificate; it is ordered again")
                }
            }
        }
        found
    }

    pub fn save_certificate(&self, cert: &StoredCertificate) -> std::io::Result<()> {
        let file = file_name(&cert.namespace, &cert.name).ok_or_else(|| {
            std::io::Error::other(format!(
                "{}/{} cannot be a file name",
                cert.namespace, cert.name
            ))
        })?;
        write_atomically(
            &self.dir.join("certificates").join(file),
            &serde_json::to_vec_pretty(cert)?,
        )
    }
}

/// `NAMESPACE_NAME.json`; Kubernetes names have no `_` or `/`, so this is unambiguous. `None` for
/// names no Kubernetes object can have.
fn file_name(namespace: &str, name: &str) -> Option<String> {
    let ok = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    (ok(namespace) && ok(name)).then(|| format!("{namespace}_{name}.json"))
}

/// Writes `path` so that a crash leaves either the old or the new content, never a mix.
fn write_atomically(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(content)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_survive_a_reopen_and_odd_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let cert = StoredCertificate {
            namespace: "shop".into(),
            name: "web-tls".into(),
            issuer: "le".into(),
            hosts: vec!["a.example".into()],
            chain: "PEM".into(),
            key: "KEY".into(),
            not_before: 0,
            not_after: 90,
        };
        store.save_certificate(&cert).unwrap();
        let again = Store::open(dir.path()).unwrap().certificates();
        assert_eq!(again.get(&cert.secret()), Some(&cert));
        assert_eq!(cert.renew_at(), 60);
        let mode = std::fs::metadata(dir.path().join("certificates/shop_web-tls.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key is readable by the owner only");
        let odd = StoredCertificate {
            name: "../x".into(),
            ..cert
        };
        assert!(store.save_certificate(&odd).is_err());
    }
}
