//! Basic-auth credentials: htpasswd lines (or a user → hash map) parsed once per build into typed
//! password hashes, and the check of one password against one hash. Parsing only looks at the form of
//! each hash; the expensive work (bcrypt, SHA-crypt rounds) happens in [`PasswordHash::verify`].

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use subtle::ConstantTimeEq;

/// The costliest hashes accepted. Every wrong password costs one full check, and checks share one
/// bounded pool, so one Ingress's absurdly expensive hash must not slow every other site's sign-in.
const MAX_BCRYPT_COST: u32 = 15;
const MAX_SHA_CRYPT_ROUNDS: u32 = 1_000_000;

/// The users of one auth Secret and their password hashes.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    users: HashMap<String, PasswordHash>,
    /// SHA-256 of everything parsed: a change of any user or hash changes it, so verifications
    /// remembered for the old content no longer apply.
    version: [u8; 32],
}

impl fmt::Debug for Credentials {
    /// Users and hashes stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("users", &self.users.len())
            .finish()
    }
}

/// What was wrong with some entries; the others are usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub user: String,
    pub reason: String,
}

impl Credentials {
    /// `user:hash[:comment]` lines; blank lines and `#` comments are skipped, as nginx does. A line
    /// without a user and a hash makes the whole file invalid; an unusable hash only locks out its user.
    pub fn from_htpasswd(text: &str) -> Result<(Credentials, Vec<Refused>), String> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.splitn(3, ':');
            match (fields.next(), fields.next()) {
                (Some(user), Some(hash)) if !user.is_empty() && !hash.is_empty() => {
                    entries.push((user, hash));
                }
                _ => return Err(format!("line {} is not user:hash", i + 1)),
            }
        }
        Credentials::from_entries(entries)
    }

    /// `auth-map`: one entry per user, the value is the hash.
    pub fn from_map<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(Credentials, Vec<Refused>), String> {
        Credentials::from_entries(entries.into_iter().map(|(u, h)| (u, h.trim())))
    }

    fn from_entries<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(Credentials, Vec<Refused>), String> {
        let mut users = HashMap::new();
        let mut refused = Vec::new();
        let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for (user, hash) in entries {
            if user.contains(':') {
                return Err(format!("user {user:?} contains ':'"));
            }
            // The first line for a user counts, as in nginx.
            if users.contains_key(user) {
                continue;
            }
            match PasswordHash::parse(hash) {
                Ok(h) => {
                    digest.update(user.as_bytes());
                    digest.update(b"\0");
                    digest.update(hash.as_bytes());
                    digest.update(b"\n");
                    users.insert(user.to_string(), h);
                }
                Err(reason) => refused.push(Refused {
                    user: user.to_string(),
                    reason: reason.to_string(),
                }),
            }
        }
        if users.is_empty() {
            return Err(match refused.first() {
                Some(r) => format!("no usable user (user {:?}: {})", r.user, r.reason),
                None => "no users".into(),
            });
        }
        let mut version = [0; 32];
        version.copy_from_slice(digest.finish().as_ref());
        Ok((Credentials { users, version }, refused))
    }

    pub fn user(&self, name: &str) -> Option<&PasswordHash> {
        self.users.get(name)
    }

    pub fn version(&self) -> &[u8; 32] {
        &self.version
    }
}

/// One stored password hash, in a scheme Portcullis can check.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$2a$`, `$2b$`, `$2y$` (`htpasswd -B`).
    Bcrypt(String),
    /// `$apr1$` (`htpasswd` default, `-m`) and `$1$` (MD5-crypt, the same algorithm with another tag).
    Md5Crypt {
        magic: &'static str,
        salt: String,
        encoded: String,
    },
    /// `$5$` and `$6$` (`htpasswd -2`, `-5`, `openssl passwd -5/-6`).
    ShaCrypt(String),
    /// `{SHA}`: base64 of the unsalted SHA-1 (`htpasswd -s`).
    Sha1([u8; 20]),
}

impl PasswordHash {
    /// The scheme, from the hash's prefix. DES crypt and plain text are refused: they are trivial to
    /// reverse, and a plain-text entry is indistinguishable from a typo in a hash.
    pub fn parse(hash: &str) -> Result<PasswordHash, &'static str> {
        if let Some(rest) = hash.strip_prefix("{SHA}") {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .map_err(|_| "{SHA} hash is not base64")?;
            return <[u8; 20]>::try_from(bytes.as_slice())
                .map(PasswordHash::Sha1)
                .map_err(|_| "{SHA} hash is not 20 bytes");
        }
        if ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
            if hash.len() != 60 || !hash.is_ascii() {
                return Err("bcrypt hash is not 60 characters");
            }
            match hash[4..6].parse::<u32>() {
                Ok(cost) if cost <= MAX_BCRYPT_COST => {}
                _ => {
                    return Err(
                        "bcrypt cost is above 15 (each check would take seconds; use htpasswd -B -C 15 or less)",
                    );
                }
            }
            return Ok(PasswordHash::Bcrypt(hash.to_string()));
        }
        for magic in ["$apr1$", "$1$"] {
            if let Some(rest) = hash.strip_prefix(magic) {
                let (salt, encoded) = rest.split_once('$').ok_or("MD5 hash has no salt")?;
                if salt.len() > 8 || encoded.len() != 22 {
                    return Err("MD5 hash has the wrong length");
                }
                return Ok(PasswordHash::Md5Crypt {
                    magic,
                    salt: salt.to_string(),
                    encoded: encoded.to_string(),
                });
            }
        }
        if hash.starts_with("$5$") || hash.starts_with("$6$") {
            if hash.split('$').count() < 4 {
                return Err("SHA-crypt hash has no salt");
            }
            if let Some(rounds) = hash[3..].strip_prefix("rounds=") {
                match rounds.split('$').next().map(str::parse::<u32>) {
                    Some(Ok(n)) if n <= MAX_SHA_CRYPT_ROUNDS => {}
                    _ => {
                        return Err(
                            "SHA-crypt rounds are above 1000000 (each check would take seconds)",
                        );
                    }
                }
            }
            return Ok(PasswordHash::ShaCrypt(hash.to_string()));
        }
        if hash.starts_with("{SSHA}") || hash.starts_with("$") {
            return Err("hash scheme is not supported (use bcrypt, $apr1$, $5$, $6$ or {SHA})");
        }
        if hash.starts_with("{PLAIN}") {
            return Err("plain-text passwords are refused (use htpasswd -B)");
        }
        if hash.len() == 13
            && hash
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
        {
            return Err(
                "DES crypt hashes are refused: they keep only 8 characters and are easily reversed (use htpasswd -B)",
            );
        }
        Err("is not a password hash (plain-text passwords are refused; use htpasswd -B)")
    }

    /// Whether `password` matches; the final comparison takes the same time wherever the bytes differ.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            PasswordHash::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            PasswordHash::Md5Crypt {
                magic,
                salt,
                encoded,
            } => md5_crypt(password, magic, salt.as_bytes())
                .as_bytes()
                .ct_eq(encoded.as_bytes())
                .into(),
            PasswordHash::ShaCrypt(hash) => {
                use sha_crypt::PasswordVerifier as _;
                sha_crypt::ShaCrypt::default()
                    .verify_password(password, hash.as_str())
                    .is_ok()
            }
            PasswordHash::Sha1(expected) => {
                let digest = aws_lc_rs::digest::digest(
                    &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
                    password,
                );
                digest.as_ref().ct_eq(expected).into()
            }
        }
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PasswordHash::Bcrypt(_) => "Bcrypt",
            PasswordHash::Md5Crypt { .. } => "Md5Crypt",
            PasswordHash::ShaCrypt(_) => "ShaCrypt",
            PasswordHash::Sha1(_) => "Sha1",
        })
    }
}

/// The encoded digest part of an MD5-crypt hash (Poul-Henning Kamp's algorithm, which Apache's
/// `$apr1$` uses unchanged but for the tag). No maintained crate implements it; it is a fixed
/// composition of MD5, which comes from RustCrypto's `md-5`.
fn md5_crypt(password: &[u8], magic: &str, salt: &[u8]) -> String {
    use md5::{Digest, Md5};
    let salt = &salt[..salt.len().min(8)];
    let alternate = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    let mut ctx = Md5::new()
        .chain_update(password)
        .chain_update(magic.as_bytes())
        .chain_update(salt);
    for chunk in (0..password.len()).step_by(16) {
        ctx.update(&alternate[..(password.len() - chunk).min(16)]);
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut sum = ctx.finalize();
    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 == 1 {
            c.update(password);
        } else {
            c.update(sum);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round & 1 == 1 {
            c.update(sum);
        } else {
            c.update(password);
        }
        sum = c.finalize();
    }
    const ALPHABET: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(22);
    let mut push = |value: u32, chars: usize| {
        let mut v = value;
        for _ in 0..chars {
            out.push(char::from(ALPHABET[(v & 0x3f) as usize]));
            v >>= 6;
        }
    };
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        push(
            u32::from(sum[a]) << 16 | u32::from(sum[b]) << 8 | u32::from(sum[c]),
            4,
        );
    }
    push(u32::from(sum[11]), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made by `htpasswd -nb -B/-m/-s/-2/-5 alice 'open sesame'` and `openssl passwd -1`.
    const BCRYPT: &str = "$2y$05$U80QN4L.b6jL3LpyfWlO0uWrMIQPANFOV9xQvMhc94eMlqfU09sSi";
    const APR1: &str = "$apr1$aWkGiNqZ$ORm1UUd/s7T9p/PzgAj171";
    const MD5: &str = "$1$abcdefgh$9qMkHazuSy1Q8myEum7yb/";
    const SHA1: &str = "{SHA}W8r/fyL/UzygmbNAjq2HbA67qac=";
    const SHA256: &str = "$5$hMks4rbhNb6qCoOu$CalGPkMqq1dYVKdT6jKkno852phdSQWi0X4w/7R7cYD";
    const SHA512: &str = "$6$kXBAVLfmeAKSi7m2$nMGuC5e1Xn22K976cKwcKrUt9K77n9cZYHkAhjrCSBYTVVLmoK7ajWizT.EEvaoidVuDQmXKKszRmwmASWOct.";

    #[test]
    fn every_supported_scheme_accepts_the_right_password_only() {
        for hash in [BCRYPT, APR1, MD5, SHA1, SHA256, SHA512] {
            let h = PasswordHash::parse(hash).unwrap();
            assert!(h.verify(b"open sesame"), "{hash}");
            assert!(!h.verify(b"open sesame!"), "{hash}");
            assert!(!h.verify(b""), "{hash}");
        }
    }

    #[test]
    fn des_plain_and_unknown_schemes_are_refused() {
        let des = PasswordHash::parse("OToCBR9y4/UG.").unwrap_err();
        assert!(des.contains("DES"), "{des}");
        let plain = PasswordHash::parse("open sesame").unwrap_err();
        assert!(plain.contains("plain-text"), "{plain}");
        assert!(PasswordHash::parse("{PLAIN}secret").is_err());
        assert!(PasswordHash::parse("{SSHA}abcd").is_err());
        assert!(PasswordHash::parse("$argon2id$v=19$...").is_err());
        assert!(PasswordHash::parse("$2y$05$short").is_err());
        assert!(PasswordHash::parse("{SHA}not base64!").is_err());
        assert!(PasswordHash::parse("$apr1$nosalt").is_err());
        assert!(PasswordHash::parse("$5$").is_err());
    }

    #[test]
    fn hashes_too_expensive_to_check_are_refused() {
        // htpasswd -B -C 16, and htpasswd -5 -r 2000000.
        let bcrypt16 = "$2y$16$yRWJui3kiaXyjEn7.2d3ou2oJMYA.wlKFr06so4Azri4vQ2rb1J.y";
        assert!(PasswordHash::parse(bcrypt16).unwrap_err().contains("cost"));
        let rounds = "$6$rounds=2000000$U/o3hYYsKUA/IwuP$2OxmaUbvttxNZxknNcMW0.EVEsTEwrYy6dD0C9qSoPFHBfzc0jj4/6uLz.QETzZHqaqlrKJLYAR5WIBcDDpjV1";
        assert!(PasswordHash::parse(rounds).unwrap_err().contains("rounds"));
        assert!(
            PasswordHash::parse("$5$rounds=5000$abc$2GOUVsTgYANOONL7PR2GSo/SGpJd8hiU6JNM8x4vV53")
                .is_ok()
        );
        assert!(
            PasswordHash::parse("$5$rounds=x$abc$2GOUVsTgYANOONL7PR2GSo/SGpJd8hiU6JNM8x4vV53")
                .is_err()
        );
    }

    #[test]
    fn htpasswd_lines_comments_and_duplicates() {
        let text = format!("# team\n\nalice:{APR1}\nbob:{BCRYPT}:a comment\nalice:{SHA1}\n");
        let (c, refused) = Credentials::from_htpasswd(&text).unwrap();
        assert!(refused.is_empty());
        assert!(c.user("alice").unwrap().verify(b"open sesame"));
        assert!(
            matches!(c.user("alice"), Some(PasswordHash::Md5Crypt { .. })),
            "first line wins"
        );
        assert!(c.user("bob").unwrap().verify(b"open sesame"));
        assert!(c.user("carol").is_none());
    }

    #[test]
    fn unusable_hash_locks_out_only_its_user() {
        let text = format!("alice:{APR1}\nbob:OToCBR9y4/UG.\n");
        let (c, refused) = Credentials::from_htpasswd(&text).unwrap();
        assert!(c.user("alice").is_some());
        assert!(c.user("bob").is_none());
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].user, "bob");
    }

    #[test]
    fn files_without_usable_users_are_invalid() {
        assert!(Credentials::from_htpasswd("").is_err());
        assert!(Credentials::from_htpasswd("# only a comment\n").is_err());
        assert!(
            Credentials::from_htpasswd("alice:plain\n")
                .unwrap_err()
                .contains("plain-text")
        );
        assert!(Credentials::from_htpasswd(&format!("alice:{APR1}\njunk\n")).is_err());
        assert!(Credentials::from_htpasswd(&format!(":{APR1}\n")).is_err());
    }

    #[test]
    fn map_entries_and_version_follow_content() {
        let (a, _) = Credentials::from_map([("alice", APR1), ("bob", SHA256)]).unwrap();
        assert!(a.user("bob").unwrap().verify(b"open sesame"));
        let (b, _) = Credentials::from_map([("alice", APR1), ("bob", SHA512)]).unwrap();
        assert_ne!(a.version(), b.version());
        let (c, _) = Credentials::from_map([("alice", APR1), ("bob", SHA256)]).unwrap();
        assert_eq!(a.version(), c.version());
        assert!(Credentials::from_map([("a:b", APR1)]).is_err());
    }
}
