//! gpupack end to end.
//!
//! - [`manifests`]: the deployment manifests under `daemonset/`, rendered with
//!   kustomize into typed objects, for the checks in `tests/manifests.rs`.

pub mod manifests;
