//! PEM certificate and key loading (`tls::certs::load_pem`): `tls.crt`, a NUL byte, then `tls.key`.
//! Nothing may panic, and no error message may quote the key: no run of 24 base64 characters of the
//! key input may appear in it.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use portcullis::tls::certs::load_pem;
use rustls::crypto::CryptoProvider;

fn provider() -> &'static CryptoProvider {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

fn is_base64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

fuzz_target!(|data: &[u8]| {
    let (cert, key) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Err(e) = load_pem(cert, key, provider()) else {
        return;
    };
    let message = e.to_string();
    const RUN: usize = 24;
    if key.len() >= RUN {
        for window in key.windows(RUN) {
            if window.iter().all(|&b| is_base64(b)) {
                let window = std::str::from_utf8(window).expect("base64 is ASCII");
                assert!(
                    !message.contains(window),
                    "the error {message:?} quotes key material {window:?}"
                );
            }
        }
    }
});
