//! The small shared vocabulary every layer speaks: object names, durations, host names and request
//! facts. It depends on nothing else in the crate, so any module may use it.

pub mod duration;
pub mod hosts;
pub mod names;
pub mod request;

pub use duration::parse_duration;
pub use names::{NamespacedName, parse_reference};
