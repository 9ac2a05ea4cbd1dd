//! Manifest files as the manifest source reads them: YAML documents decoded into objects
//! (`parse_documents`), then the whole translation (`build`) over the result. Nothing may panic, loop
//! or blow up memory, and every problem must be printable and name its file or object.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use portcullis::model::{BuildOptions, Snapshot, build};
use portcullis::settings::Settings;
use portcullis::source::manifests::parse_documents;
use portcullis::tls::{CertStore, generate_default_cert};
use rustls::crypto::CryptoProvider;

struct Fixed {
    provider: Arc<CryptoProvider>,
    options: BuildOptions,
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let default_cert = generate_default_cert(&provider).expect("default certificate");
        Fixed {
            options: BuildOptions {
                ingress_class: "portcullis".into(),
                watch_without_class: true,
                default_cert,
                settings: Arc::new(Settings::default()),
            },
            provider,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    // The manifest source refuses files that are not UTF-8 before parsing them.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let fixed = fixed();
    let file: Arc<str> = Arc::from("fuzz.yaml");
    let (objects, problems) = parse_documents(text, &file);
    for p in &problems {
        assert!(p.file.is_some(), "a parse problem names its file: {p}");
    }
    let mut snapshot = Snapshot {
        problems,
        ..Snapshot::default()
    };
    for object in objects {
        snapshot.push(object);
    }
    let mut certs = CertStore::new(fixed.provider.clone());
    let config = build(&snapshot, &fixed.options, &mut certs, 1_750_000_000, 1);
    for p in &config.problems {
        assert!(
            p.object.is_some() || p.file.is_some(),
            "every problem names an object or a file: {p}"
        );
        let _ = p.to_string();
    }
    // Lookups on whatever was built must work too.
    for (host, path) in [
        ("a.example.com", "/"),
        ("", "/x/y"),
        ("EXAMPLE.com:80", "/a/"),
    ] {
        let _ = config.routes.lookup(host, path);
    }
});
