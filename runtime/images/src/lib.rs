//! skiff-images: the node's image store. It pulls images from OCI distribution registries, keeps
//! their content in a content-addressed blob store, unpacks each layer once into a snapshot keyed by
//! chain ID, and mounts per-container root filesystems as overlayfs over those snapshots.
//!
//! Modules, in the order data flows through them:
//! - [`reference`]: `busybox` → `docker.io/library/busybox:latest`.
//! - [`registry`] (with [`auth`]): manifests and blobs over HTTP(S); bearer/basic auth; retries.
//! - [`manifest`]: indexes, Docker and OCI manifests, configs; platform selection.
//! - [`blobs`]: `<root>/blobs/sha256/<hex>`, written to a temp file, verified, then renamed in.
//! - [`unpack`]: one layer tar → one overlay-style snapshot directory, rejecting entries that escape.
//! - [`store`]: the store root, snapshots, list/remove/gc; [`pull`](store::Store::pull) ties
//!   registry → blobs → snapshots → [`images`] records.
//! - [`rootfs`]: overlay mount of an image for one container; leases keep gc off its snapshots.
//! - [`layout`]: import/export of OCI image-layout archives.
//!
//! Everything that makes content visible does so with a rename, so a crash or a failed
//! verification leaves only temp files, which `gc` removes.

pub mod auth;
pub mod blobs;
pub mod digest;
pub mod error;
pub mod images;
pub mod layout;
pub mod manifest;
mod pull;
pub mod reference;
pub mod registry;
pub mod rootfs;
pub mod store;
pub mod unpack;

pub use digest::Digest;
pub use error::{Error, Result};
pub use images::ImageRecord;
pub use manifest::Platform;
pub use reference::Reference;
pub use registry::RegistryConfig;
pub use store::{GcReport, RunConfig, Store, StoreOptions};
