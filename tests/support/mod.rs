//! Harness shared by the integration suites: the real `portcullis` binary on its own loopback address,
//! real backends, real TLS and HTTP clients, and Kubernetes objects written as manifests.
//!
//! The process, TLS, client and backend parts know nothing about manifest mode, so a cluster suite can
//! reuse them and only swap how objects reach the controller.
//!
//! Every wait in here is bounded: helpers poll with [`wait::eventually`] and panic with the last
//! observation when time runs out, so a broken controller fails a test instead of hanging it.

// Each test crate compiles this module and uses a different part of it.
#![allow(dead_code)]

pub mod backend;
pub mod client;
pub mod controller;
pub mod grpc;
pub mod manifests;
pub mod openssl;
pub mod pebble;
pub mod pki;
pub mod tools;
pub mod wait;

// Re-exported for convenience; not every test crate uses all of them.
#[allow(unused_imports)]
pub use backend::{EchoIdentity, EchoServer};
#[allow(unused_imports)]
pub use client::{Captured, EchoReply, Sender, TlsClient, request};
#[allow(unused_imports)]
pub use controller::Controller;
#[allow(unused_imports)]
pub use manifests::{IngressBuilder, ManifestDir};
#[allow(unused_imports)]
pub use pki::TestCert;
#[allow(unused_imports)]
pub use wait::eventually;
