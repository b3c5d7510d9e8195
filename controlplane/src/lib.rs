//! Skiff's control plane.
//!
//! Layout:
//! - [`store`]: the revisioned key-value store (trait, SQLite implementation, conformance suite).
//! - [`api`]: Kubernetes object handling that needs no I/O: the resource registry, selectors, patches,
//!   defaulting, validation, tables, protobuf decoding.
//! - [`apiserver`]: the HTTP server that speaks the Kubernetes REST API on top of a [`store::Store`].
//! - [`auth`]: the cluster CA, TLS, authentication and authorization (node authorizer, RBAC).
//!
//! Data flow of a write: HTTP request → `apiserver` decodes the body (JSON, YAML or protobuf) → `api` defaults
//! and validates it → `store` commits it under the next revision → watchers of that prefix get the event.
#![forbid(unsafe_code)]

pub mod api;
pub mod apiserver;
pub mod auth;
pub mod cloud;
pub mod controllers;
pub mod scheduler;
pub mod store;
