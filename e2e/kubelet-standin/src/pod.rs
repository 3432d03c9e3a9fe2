//! The part of a pod spec kubelet's device manager looks at.

use std::collections::BTreeMap;

use crate::resource_name::is_extended_resource_name;

/// A pod as kubelet's device manager sees it: identity, and per container the
/// counts of extended resources it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// Run first, in order; kubelet allocates their devices first.
    pub init_containers: Vec<Container>,
    pub containers: Vec<Container>,
}

/// One container and the extended resources it requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub name: String,
    /// Resource name → device count. Zero counts are ignored, as by kubelet.
    pub requests: BTreeMap<String, u32>,
    /// An init container with `restartPolicy: Always` (a sidecar). It keeps
    /// its devices for the pod's life, so later containers cannot reuse them.
    pub restartable: bool,
}

/// Whether a container is an init container, a sidecar or an app container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerKind {
    Init,
    Sidecar,
    App,
}

impl Pod {
    /// A pod without containers; add them with [`Pod::init_container`] and
    /// [`Pod::container`].
    pub fn new(
        uid: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Pod {
        Pod {
            uid: uid.into(),
            namespace: namespace.into(),
            name: name.into(),
            init_containers: Vec::new(),
            containers: Vec::new(),
        }
    }

    pub fn init_container(mut self, container: Container) -> Pod {
        self.init_containers.push(container);
        self
    }

    pub fn container(mut self, container: Container) -> Pod {
        self.containers.push(container);
        self
    }

    /// `namespace/name`, as errors and logs name the pod.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Containers in the order kubelet admits them: init containers first.
    pub fn containers_in_admission_order(
        &self,
    ) -> impl Iterator<Item = (&Container, ContainerKind)> {
        let init = self.init_containers.iter().map(|c| {
            let kind = if c.restartable {
                ContainerKind::Sidecar
            } else {
                ContainerKind::Init
            };
            (c, kind)
        });
        init.chain(self.containers.iter().map(|c| (c, ContainerKind::App)))
    }

    /// Reads a Kubernetes pod the way kubelet's device manager does: the
    /// extended resources in each container's `limits` (extended resources
    /// cannot be overcommitted, so limits equal requests).
    pub fn from_k8s(pod: &k8s_openapi::api::core::v1::Pod) -> Result<Pod, PodSpecError> {
        let meta = &pod.metadata;
        let name = meta.name.clone().unwrap_or_default();
        let namespace = meta
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let key = format!("{namespace}/{name}");
        let uid = meta.uid.clone().ok_or_else(|| PodSpecError {
            pod: key.clone(),
            problem: "metadata.uid is missing".to_string(),
        })?;
        let spec = pod.spec.as_ref().ok_or_else(|| PodSpecError {
            pod: key.clone(),
            problem: "spec is missing".to_string(),
        })?;
        let convert = |c: &k8s_openapi::api::core::v1::Container, field: &str| {
            let mut requests = BTreeMap::new();
            let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
            for (resource, quantity) in limits.into_iter().flatten() {
                if !is_extended_resource_name(resource) {
                    continue;
                }
                let count =
                    proto::quantity::extended_count_u32(&quantity.0).map_err(|e| PodSpecError {
                        pod: key.clone(),
                        problem: format!("{field} {:?}: limits[{resource:?}]: {e}", c.name),
                    })?;
                requests.insert(resource.clone(), count);
            }
            Ok(Container {
                name: c.name.clone(),
                requests,
                restartable: c.restart_policy.as_deref() == Some("Always"),
            })
        };
        let init_containers = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| convert(c, "initContainer"))
            .collect::<Result<_, _>>()?;
        let containers = spec
            .containers
            .iter()
            .map(|c| convert(c, "container"))
            .collect::<Result<_, _>>()?;
        Ok(Pod {
            uid,
            namespace,
            name,
            init_containers,
            containers,
        })
    }
}

impl Container {
    pub fn new(name: impl Into<String>) -> Container {
        Container {
            name: name.into(),
            requests: BTreeMap::new(),
            restartable: false,
        }
    }

    /// Asks for `count` devices of `resource`.
    pub fn request(mut self, resource: impl Into<String>, count: u32) -> Container {
        self.requests.insert(resource.into(), count);
        self
    }

    /// Marks an init container as a sidecar (`restartPolicy: Always`).
    pub fn restartable(mut self) -> Container {
        self.restartable = true;
        self
    }
}

/// A Kubernetes pod that cannot be read as a [`Pod`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pod {pod}: {problem}")]
pub struct PodSpecError {
    pub pod: String,
    pub problem: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_extended_limits_and_sidecars_from_a_kubernetes_pod() {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "llm", "namespace": "ml", "uid": "u1"},
            "spec": {
                "initContainers": [
                    {"name": "warm", "resources": {"limits": {"gpupack.io/gpu": "1"}}},
                    {"name": "proxy", "restartPolicy": "Always"}
                ],
                "containers": [{"name": "server", "resources": {"limits": {
                    "gpupack.io/gpu": "2", "gpupack.io/gpu-memory": "80", "cpu": "4", "memory": "1Gi"
                }}}]
            }
        }))
        .unwrap();
        let pod = Pod::from_k8s(&pod).unwrap();
        assert_eq!(pod.uid, "u1");
        assert_eq!(pod.key(), "ml/llm");
        assert_eq!(pod.init_containers[0].requests["gpupack.io/gpu"], 1);
        assert!(pod.init_containers[1].restartable);
        let server = &pod.containers[0];
        assert_eq!(server.requests.len(), 2);
        assert_eq!(server.requests["gpupack.io/gpu-memory"], 80);
        let kinds: Vec<_> = pod
            .containers_in_admission_order()
            .map(|(_, k)| k)
            .collect();
        assert_eq!(
            kinds,
            [
                ContainerKind::Init,
                ContainerKind::Sidecar,
                ContainerKind::App
            ]
        );
    }

    #[test]
    fn rejects_a_fractional_device_count_naming_the_container() {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u"},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"gpupack.io/gpu": "500m"}}}]}
        }))
        .unwrap();
        let err = Pod::from_k8s(&pod).unwrap_err();
        assert!(err.to_string().contains("container \"c\""), "{err}");
        assert!(err.to_string().contains("gpupack.io/gpu"), "{err}");
    }
}
