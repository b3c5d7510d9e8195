//! placeholder
pub mod auth;
pub mod blobs;
pub mod digest;
pub mod reference;
pub mod unpack;
