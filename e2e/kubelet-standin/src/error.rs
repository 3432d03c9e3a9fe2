//! Errors of the stand-in's lifecycle, of waiting, and of pod admission.

use std::path::PathBuf;
use std::time::Duration;

/// Starting, stopping or restarting the stand-in failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket directory could not be created.
    #[error("creating directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The device plugin directory could not be listed or cleaned.
    #[error("cleaning plugin directory {path}: {source}")]
    Cleanup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A socket could not be bound.
    #[error("serving on {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The checkpoint file could not be written.
    #[error("writing checkpoint {path}: {source}")]
    Checkpoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A condition did not hold within the time allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {waited:?} waiting for {what}")]
pub struct WaitTimeout {
    /// What was waited for.
    pub what: String,
    /// How long.
    pub waited: Duration,
}

/// Which device plugin RPC failed during admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    GetPreferredAllocation,
    Allocate,
    PreStartContainer,
}

impl std::fmt::Display for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Rpc::GetPreferredAllocation => "GetPreferredAllocation",
            Rpc::Allocate => "Allocate",
            Rpc::PreStartContainer => "PreStartContainer",
        })
    }
}

/// A pod was not admitted. Nothing of it stays allocated.
///
/// `pod` is `namespace/name`. The messages follow kubelet's device manager.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// The pod spec itself is unusable (e.g. two containers with one name).
    #[error("pod {pod}: {problem}")]
    InvalidPod { pod: String, problem: String },
    /// kubelet is stopped; nothing admits pods.
    #[error("pod {pod}: kubelet is not running")]
    NotRunning { pod: String },
    /// No plugin ever registered the resource (or its grace period ran out).
    #[error("pod {pod}: container {container}: can't allocate unregistered device {resource}")]
    Unregistered {
        pod: String,
        container: String,
        resource: String,
    },
    /// Fewer healthy, free devices than requested.
    #[error(
        "pod {pod}: container {container}: requested number of devices unavailable for {resource}. Requested: {requested}, Available: {available}"
    )]
    Insufficient {
        pod: String,
        container: String,
        resource: String,
        requested: usize,
        available: usize,
    },
    /// The resource's endpoint is stopped (its ListAndWatch stream ended, or
    /// kubelet restarted and the plugin has not registered again).
    #[error("pod {pod}: container {container}: endpoint for {resource} has been stopped")]
    EndpointStopped {
        pod: String,
        container: String,
        resource: String,
    },
    /// A device plugin RPC failed.
    #[error("pod {pod}: container {container}: {resource}: {rpc} failed: {code:?}: {message}")]
    Plugin {
        pod: String,
        container: String,
        resource: String,
        rpc: Rpc,
        code: tonic::Code,
        message: String,
    },
    /// `Allocate` answered without a container response.
    #[error(
        "pod {pod}: container {container}: {resource}: no containers return in allocation response"
    )]
    EmptyAllocateResponse {
        pod: String,
        container: String,
        resource: String,
    },
}

impl AdmitError {
    /// The container the error is about, where there is one.
    pub fn container(&self) -> Option<&str> {
        match self {
            AdmitError::InvalidPod { .. } | AdmitError::NotRunning { .. } => None,
            AdmitError::Unregistered { container, .. }
            | AdmitError::Insufficient { container, .. }
            | AdmitError::EndpointStopped { container, .. }
            | AdmitError::Plugin { container, .. }
            | AdmitError::EmptyAllocateResponse { container, .. } => Some(container),
        }
    }

    /// The resource the error is about, where there is one.
    pub fn resource(&self) -> Option<&str> {
        match self {
            AdmitError::InvalidPod { .. } | AdmitError::NotRunning { .. } => None,
            AdmitError::Unregistered { resource, .. }
            | AdmitError::Insufficient { resource, .. }
            | AdmitError::EndpointStopped { resource, .. }
            | AdmitError::Plugin { resource, .. }
            | AdmitError::EmptyAllocateResponse { resource, .. } => Some(resource),
        }
    }
}
