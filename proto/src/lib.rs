//! Every contract between gpupack's parts, in one crate so that no two parts
//! can disagree on a name, a field or a number.
//!
//! - [`deviceplugin`]: kubelet's device plugin API v1beta1 (gRPC), which the
//!   device plugin serves and kubelet calls.
//! - [`podresources`]: kubelet's PodResources API v1, which the device plugin
//!   reads to verify what each container received.
//! - [`resources`]: the extended resource names (`gpupack.io/gpu`,
//!   `gpupack.io/gpu-memory`, `gpupack.io/mig-<profile>`), device IDs and the
//!   `GPUPACK_*` variables set in containers.
//! - [`inventory`]: the node GPU inventory (`GpuNodeInventory`, `gpupack.io/v1`)
//!   the device plugin publishes and the scheduler extender reads.
//! - [`assignment`]: the per-container GPU assignment (`gpupack.io/assignment`,
//!   v1) the extender writes on a pod and the device plugin honours, and the
//!   name of the extender's pending reservations on a `GpuNodeInventory`.
//! - [`annotations`]: the model annotations an LLM pod may carry.
//! - [`pod`]: when a pod's devices are free again, and the Binding that
//!   places a pod with its assignment.
//! - [`quantity`]: Kubernetes quantities read and written as the API server
//!   does; every part counts extended resources through it.
//! - [`extender`]: kube-scheduler's HTTP extender API v1 (filter, prioritize,
//!   bind, preempt), as kube-scheduler puts it on the wire.
//! - [`clip`]: the bounded form of input-derived text in logs and messages.
//!
//! gpupack's own formats are versioned and parsed strictly: an unknown
//! version, a missing field, an implausible size or a duplicate UUID is
//! rejected with a [`FormatError`] that names the field.

pub mod annotations;
pub mod assignment;
pub mod clip;
pub mod deviceplugin;
mod error;
pub mod extender;
pub mod inventory;
pub mod pod;
pub mod podresources;
pub mod quantity;
pub mod resources;

pub use error::FormatError;
