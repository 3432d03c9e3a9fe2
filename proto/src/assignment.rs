//! The per-container GPU assignment, annotation [`ANNOTATION`] on a pod.
//!
//! The scheduler extender writes it into the Binding's annotations, so the
//! API server sets `spec.nodeName` and the assignment on the pod in one write:
//! a pod is never bound without its assignment. The device plugin reads it to
//! hand each container exactly these GPUs.
//!
//! ```
//! let text = r#"{
//!   "version": "v1",
//!   "node": "gpu-node-1",
//!   "containers": [
//!     { "name": "vllm",
//!       "gpus": [
//!         { "uuid": "GPU-5c1e2b9a-0000-4000-8000-000000000000", "index": 0, "memoryBytes": 40802189312 },
//!         { "uuid": "GPU-5c1e2b9a-0000-4000-8000-000000000001", "index": 1, "memoryBytes": 40802189312 }
//!       ] },
//!     { "name": "embedder", "mig": [ { "uuid": "MIG-a100-0-1g", "parentUuid": "GPU-a100-0", "profile": "1g.10gb" } ] }
//!   ]
//! }"#;
//! let a = proto::assignment::PodAssignment::from_json(text).unwrap();
//! assert_eq!(a.container("vllm").unwrap().gpus.len(), 2);
//! assert_eq!(a.to_json(), proto::assignment::PodAssignment::from_json(&a.to_json()).unwrap().to_json());
//! ```

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::error::{FormatError, from_json};
use crate::inventory::MAX_GPU_MEMORY_BYTES;

const DOC: &str = "assignment";

/// Pod annotation holding the JSON assignment.
pub const ANNOTATION: &str = "gpupack.io/assignment";
/// The version this build writes and reads.
pub const VERSION: &str = "v1";
/// Annotation on a node's `GpuNodeInventory` object (not on a pod): the
/// scheduler extender's bookings on that node, assignments by pod UID,
/// written before each Binding (and for each preemption's nomination) so
/// that replicas serialise their decisions per node. Only the extender writes it; the device plugin owns
/// the object's spec and leaves the annotation alone.
pub const RESERVATIONS_ANNOTATION: &str = "gpupack.io/reservations";
/// Annotation the extender sets on a pending pod that kube-scheduler failed
/// while the extender was unreachable, once it is back: the update moves
/// the pod out of kube-scheduler's unschedulable pool at once, instead of
/// after its five-minute flush. The value is when.
pub const REQUEUED_ANNOTATION: &str = "gpupack.io/requeued-at";
/// Annotation the extender sets on a pending pod for which it preempts
/// lower-priority pods: the node and the victims, and when. Written with
/// the pod's resourceVersion as a precondition, so that of several replicas
/// only one preempts for a pod.
pub const PREEMPTION_ANNOTATION: &str = "gpupack.io/preemption";

/// Which GPUs each container of a pod gets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodAssignment {
    /// Format version, [`VERSION`].
    pub version: String,
    /// The node the pod is bound to.
    pub node: String,
    /// Containers (init or regular; names are unique in a pod) that use gpupack resources.
    pub containers: Vec<ContainerAssignment>,
}

/// The GPUs of one container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerAssignment {
    /// Container name.
    pub name: String,
    /// Whole-GPU shares: one slice and some memory on each GPU.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<AssignedGpu>,
    /// MIG instances.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mig: Vec<AssignedMig>,
    /// Set when the container's memory was sized from the pod's model
    /// annotations: how its engine should size itself within the grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineSizing>,
}

/// What the extender sized a model server for. The device plugin passes it
/// to the container ([`crate::resources::env`]), so that the engine holds
/// the grant and no more: a memory flag set to the grant's share of the GPU
/// would let the engine allocate its CUDA context and graphs on top.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct EngineSizing {
    /// The engine's memory flag (`--gpu-memory-utilization`,
    /// `--mem-fraction-static`, `--cuda-memory-fraction`) for this grant on
    /// these GPUs, in ten-thousandths: 1 to 10000.
    pub memory_flag: u32,
    /// The KV-cache bytes per GPU the estimate planned (vLLM's
    /// `--kv-cache-memory-bytes`).
    pub kv_cache_bytes: u64,
}

/// A share of one physical GPU.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AssignedGpu {
    /// GPU UUID.
    pub uuid: String,
    /// NVML index on the node (for people; the UUID is authoritative).
    pub index: u32,
    /// Memory reserved for the container on this GPU.
    pub memory_bytes: u64,
}

/// One MIG instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AssignedMig {
    /// MIG UUID.
    pub uuid: String,
    /// UUID of the parent GPU.
    pub parent_uuid: String,
    /// MIG profile.
    pub profile: String,
}

impl ContainerAssignment {
    /// Whether two containers hold the very same devices: the same GPUs
    /// with the same memory on each, and the same MIG instances, sized for
    /// the same engine settings (which the plugin hands over with them).
    /// The device plugin cannot tell such containers apart and need not:
    /// either may take either's devices. The extender's bind and the
    /// plugin's handoff both rely on this one definition.
    pub fn interchangeable_with(&self, other: &ContainerAssignment) -> bool {
        fn held(c: &ContainerAssignment) -> (Vec<(&str, u64)>, Vec<&str>) {
            let mut gpus: Vec<(&str, u64)> = c
                .gpus
                .iter()
                .map(|g| (g.uuid.as_str(), g.memory_bytes))
                .collect();
            gpus.sort_unstable();
            let mut mig: Vec<&str> = c.mig.iter().map(|m| m.uuid.as_str()).collect();
            mig.sort_unstable();
            (gpus, mig)
        }
        self.engine == other.engine && held(self) == held(other)
    }

    /// Whether the device plugin could mistake one container for the other
    /// while both wait for kubelet: not interchangeable, yet asking for the
    /// same number of GPUs, the same total memory or the same MIG profiles
    /// (kubelet's calls carry only amounts and device IDs). The extender
    /// never binds such a pod while the other is unadmitted on the node,
    /// and the device plugin refuses devices that match both.
    pub fn confusable_with(&self, other: &ContainerAssignment) -> bool {
        fn amounts(c: &ContainerAssignment) -> (usize, u64, Vec<&str>) {
            let memory: u64 = c.gpus.iter().map(|g| g.memory_bytes).sum();
            let mut profiles: Vec<&str> = c.mig.iter().map(|m| m.profile.as_str()).collect();
            profiles.sort_unstable();
            (c.gpus.len(), memory, profiles)
        }
        if self.interchangeable_with(other) {
            return false;
        }
        let (ga, ma, pa) = amounts(self);
        let (gb, mb, pb) = amounts(other);
        (ga > 0 && ga == gb) || (ma > 0 && ma == mb) || (!pa.is_empty() && pa == pb)
    }
}

impl PodAssignment {
    /// Parses and validates an annotation value.
    pub fn from_json(text: &str) -> Result<PodAssignment, FormatError> {
        #[derive(Deserialize)]
        struct Header {
            version: String,
        }
        let header: Header = from_json(DOC, text)?;
        if header.version != VERSION {
            return Err(FormatError::Version {
                document: DOC,
                field: "version",
                found: header.version,
                expected: VERSION,
            });
        }
        let a: PodAssignment = from_json(DOC, text)?;
        a.validate()?;
        Ok(a)
    }

    /// The annotation value.
    pub fn to_json(&self) -> String {
        // Serializing plain strings and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The assignment of one container.
    pub fn container(&self, name: &str) -> Option<&ContainerAssignment> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// Checks every rule of the format.
    pub fn validate(&self) -> Result<(), FormatError> {
        let bad = |field: String, problem: &str| Err(FormatError::invalid(DOC, field, problem));
        if self.version != VERSION {
            return Err(FormatError::Version {
                document: DOC,
                field: "version",
                found: self.version.clone(),
                expected: VERSION,
            });
        }
        if self.node.is_empty() {
            return bad("node".into(), "must name the node");
        }
        if self.containers.is_empty() {
            return bad("containers".into(), "must list at least one container");
        }
        let mut names = HashSet::new();
        for (i, c) in self.containers.iter().enumerate() {
            if c.name.is_empty() {
                return bad(format!("containers[{i}].name"), "must not be empty");
            }
            if !names.insert(c.name.as_str()) {
                return bad(format!("containers[{i}].name"), "duplicate container name");
            }
            if c.gpus.is_empty() && c.mig.is_empty() {
                return bad(
                    format!("containers[{i}]"),
                    "assigns neither GPUs nor MIG instances",
                );
            }
            if let Some(e) = &c.engine {
                let f = |n: &str| format!("containers[{i}].engine.{n}");
                if c.gpus.is_empty() {
                    return bad(f("memoryFlag"), "is for a container with GPUs");
                }
                if e.memory_flag == 0 || e.memory_flag > 10_000 {
                    return bad(f("memoryFlag"), "must be 1 to 10000 ten-thousandths");
                }
                if e.kv_cache_bytes > MAX_GPU_MEMORY_BYTES {
                    return bad(f("kvCacheBytes"), "must be at most 1 TiB");
                }
            }
            let mut uuids = HashSet::new();
            for (j, g) in c.gpus.iter().enumerate() {
                let f = |n: &str| format!("containers[{i}].gpus[{j}].{n}");
                if !g.uuid.starts_with("GPU-") {
                    return bad(f("uuid"), "must be a GPU UUID (GPU-…)");
                }
                if !uuids.insert(g.uuid.as_str()) {
                    return bad(f("uuid"), "a container's GPUs must be distinct");
                }
                if g.memory_bytes == 0 || g.memory_bytes > MAX_GPU_MEMORY_BYTES {
                    return bad(f("memoryBytes"), "must be 1 byte to 1 TiB");
                }
            }
            for (j, m) in c.mig.iter().enumerate() {
                let f = |n: &str| format!("containers[{i}].mig[{j}].{n}");
                if !m.uuid.starts_with("MIG-") {
                    return bad(f("uuid"), "must be a MIG UUID (MIG-…)");
                }
                if !uuids.insert(m.uuid.as_str()) {
                    return bad(f("uuid"), "a container's MIG instances must be distinct");
                }
                if m.profile.is_empty() {
                    return bad(f("profile"), "must not be empty");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PodAssignment {
        PodAssignment {
            version: VERSION.into(),
            node: "n1".into(),
            containers: vec![ContainerAssignment {
                name: "server".into(),
                gpus: vec![AssignedGpu {
                    uuid: "GPU-1".into(),
                    index: 0,
                    memory_bytes: 20 << 30,
                }],
                mig: vec![],
                engine: None,
            }],
        }
    }

    #[test]
    fn round_trip() {
        let a = sample();
        let text = a.to_json();
        assert!(text.contains(r#""memoryBytes":21474836480"#));
        assert!(!text.contains("mig"), "empty lists are omitted: {text}");
        assert_eq!(PodAssignment::from_json(&text).unwrap(), a);
    }

    #[test]
    fn rejections_name_the_field() {
        let err =
            PodAssignment::from_json(r#"{"version":"v9","node":"n","containers":[]}"#).unwrap_err();
        assert!(matches!(err, FormatError::Version { .. }), "{err}");

        let err = PodAssignment::from_json(r#"{"version":"v1","containers":[]}"#).unwrap_err();
        assert!(err.to_string().contains("node"), "{err}");

        let mut a = sample();
        a.containers.push(a.containers[0].clone());
        let err = PodAssignment::from_json(&a.to_json()).unwrap_err();
        assert!(err.to_string().contains("containers[1].name"), "{err}");

        let mut a = sample();
        let first = a.containers[0].gpus[0].clone();
        a.containers[0].gpus.push(first);
        assert!(
            a.validate()
                .unwrap_err()
                .to_string()
                .contains("gpus[1].uuid")
        );

        let mut a = sample();
        a.containers[0].gpus[0].memory_bytes = 0;
        assert!(
            a.validate()
                .unwrap_err()
                .to_string()
                .contains("gpus[0].memoryBytes")
        );

        let err = PodAssignment::from_json(
            r#"{"version":"v1","node":"n","containers":[{"name":"c","gpus":[{"uuid":"GPU-1","index":0,"memoryBytes":-5}]}]}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("containers[0].gpus[0].memoryBytes"),
            "{err}"
        );

        let err = PodAssignment::from_json("not json").unwrap_err();
        assert!(matches!(err, FormatError::Syntax { .. }));
    }

    #[test]
    fn interchangeable_means_the_same_devices_whatever_the_order_or_name() {
        let gpu = |uuid: &str, gib: u64| AssignedGpu {
            uuid: uuid.into(),
            index: 0,
            memory_bytes: gib << 30,
        };
        let c = |name: &str, gpus: Vec<AssignedGpu>| ContainerAssignment {
            name: name.into(),
            gpus,
            mig: vec![],
            engine: None,
        };
        let a = c("a", vec![gpu("GPU-1", 20), gpu("GPU-2", 20)]);
        assert!(a.interchangeable_with(&c("b", vec![gpu("GPU-2", 20), gpu("GPU-1", 20)])));
        assert!(!a.interchangeable_with(&c("a", vec![gpu("GPU-1", 20), gpu("GPU-3", 20)])));
        assert!(!a.interchangeable_with(&c("a", vec![gpu("GPU-1", 20), gpu("GPU-2", 21)])));
        assert!(!a.interchangeable_with(&c("a", vec![gpu("GPU-1", 20)])));
        // Sized for another engine setting: the same devices, but the
        // plugin would hand over the wrong settings.
        let mut sized = c("b", vec![gpu("GPU-2", 20), gpu("GPU-1", 20)]);
        sized.engine = Some(EngineSizing {
            memory_flag: 2300,
            kv_cache_bytes: 1 << 30,
        });
        assert!(!a.interchangeable_with(&sized));
        assert!(a.confusable_with(&sized));
        assert!(sized.interchangeable_with(&sized.clone()));
    }

    #[test]
    fn engine_sizing_round_trips_and_is_checked() {
        let mut a = sample();
        a.containers[0].engine = Some(EngineSizing {
            memory_flag: 2318,
            kv_cache_bytes: 5 << 30,
        });
        let text = a.to_json();
        assert!(
            text.contains(r#""engine":{"memoryFlag":2318,"kvCacheBytes":5368709120}"#),
            "{text}"
        );
        assert_eq!(PodAssignment::from_json(&text).unwrap(), a);
        // Readers of an assignment without it (written before) see none.
        assert_eq!(
            PodAssignment::from_json(&sample().to_json())
                .unwrap()
                .containers[0]
                .engine,
            None
        );
        for (flag, kv, field) in [
            (0, 0, "engine.memoryFlag"),
            (10_001, 0, "engine.memoryFlag"),
            (5000, MAX_GPU_MEMORY_BYTES + 1, "engine.kvCacheBytes"),
        ] {
            let mut bad = a.clone();
            bad.containers[0].engine = Some(EngineSizing {
                memory_flag: flag,
                kv_cache_bytes: kv,
            });
            let err = bad.validate().unwrap_err().to_string();
            assert!(err.contains(&format!("containers[0].{field}")), "{err}");
        }
        let mut mig_only = a.clone();
        mig_only.containers[0].gpus.clear();
        mig_only.containers[0].mig.push(AssignedMig {
            uuid: "MIG-1".into(),
            parent_uuid: "GPU-1".into(),
            profile: "1g.10gb".into(),
        });
        let err = mig_only.validate().unwrap_err().to_string();
        assert!(err.contains("engine.memoryFlag"), "{err}");
    }
}
