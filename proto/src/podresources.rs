//! Kubelet PodResources API v1 (`k8s.io/kubelet/pkg/apis/podresources/v1`).
//!
//! Maps the device IDs a plugin advertised to the pods and containers kubelet
//! gave them to; gpupack uses it to verify that every container received the
//! GPUs the scheduler assigned.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("v1");

/// Where kubelet serves the PodResources API, and how clients should talk to it.
pub mod constants {
    /// kubelet's PodResources socket.
    pub const SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";
    /// Receive limit clients commonly use (kubelet's own e2e tests use 16 MiB);
    /// the default 4 MiB is too small for busy nodes.
    pub const MAX_RECV_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
    /// kubelet rate-limits the API to this many queries per second (burst 10);
    /// beyond it calls fail with `ResourceExhausted`.
    pub const RATE_LIMIT_QPS: u32 = 100;
}
