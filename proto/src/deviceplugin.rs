//! Kubelet device plugin API v1beta1 (`k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1`).
//!
//! The messages and both services (`Registration`, served by kubelet, and
//! `DevicePlugin`, served by each plugin) are generated from
//! `proto/deviceplugin/v1beta1/api.proto`, whose field numbers are exactly
//! upstream's. prost derives Rust names from the proto names, so the
//! camel-cased upstream fields come out as `available_device_i_ds`,
//! `must_include_device_i_ds` and `device_i_ds`, `Device.ID` as `id`, and the
//! types `NUMANode` and `CDIDevice` as [`NumaNode`] and [`CdiDevice`].

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("v1beta1");

/// Constants of kubelet's `constants.go` for this API version.
pub mod constants {
    /// The API version a plugin registers with.
    pub const VERSION: &str = "v1beta1";
    /// Every API version kubelet accepts in `Register`.
    pub const SUPPORTED_VERSIONS: &[&str] = &[VERSION];
    /// Health string kubelet counts as usable; any other string is unhealthy.
    pub const HEALTHY: &str = "Healthy";
    /// Health string for a device kubelet must not hand out.
    pub const UNHEALTHY: &str = "Unhealthy";
    /// Directory holding kubelet's registration socket and every plugin socket.
    pub const DEVICE_PLUGIN_PATH: &str = "/var/lib/kubelet/device-plugins/";
    /// File name of kubelet's registration socket inside [`DEVICE_PLUGIN_PATH`].
    pub const KUBELET_SOCKET_NAME: &str = "kubelet.sock";
    /// Full path of kubelet's registration socket.
    pub const KUBELET_SOCKET: &str = "/var/lib/kubelet/device-plugins/kubelet.sock";
    /// kubelet's deadline for `PreStartContainer`, in seconds. `Allocate` and
    /// `GetPreferredAllocation` have none, so a plugin must never block in them.
    pub const PRE_START_CONTAINER_TIMEOUT_SECS: u64 = 30;
}
