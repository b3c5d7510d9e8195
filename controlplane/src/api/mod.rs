//! Kubernetes object handling without I/O: which resources exist, selectors, patches, defaulting,
//! validation, server-side tables and protobuf decoding. The API server calls into these; each is tested on
//! its own.

pub mod resources;
pub mod selectors;
pub mod defaults;
pub mod strategy;
pub mod validation;
pub mod protobuf;
pub mod quota;
pub mod strategic;
pub mod tables;
pub mod typed;
pub mod time;
