//! The real `openssl` command line in a scratch directory, as an operator would run it: certificates,
//! CAs and revocation lists made by an independent X.509 stack.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Openssl {
    dir: tempfile::TempDir,
}

impl Openssl {
    /// An empty scratch directory.
    pub fn scratch() -> Openssl {
        Openssl {
            dir: tempfile::tempdir().expect("scratch directory for openssl"),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).expect("write an openssl input");
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).expect("read an openssl output")
    }

    /// Runs `openssl` with `args` as typed (split on spaces) and then `extra`, arguments that may
    /// contain spaces.
    pub fn run(&self, args: &str, extra: &[&str]) {
        let output = Command::new("openssl")
            .args(args.split_whitespace())
            .args(extra)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl (.ci/run installs it): {e}"));
        assert!(
            output.status.success(),
            "openssl {args} {extra:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
