//! Rules about pods that more than one part applies: when a pod's devices
//! are free again, and the Binding that places a pod with its assignment.

use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::assignment::{ANNOTATION, PodAssignment};

/// Whether the pod has finished (`Succeeded` or `Failed`): kubelet has
/// stopped its containers, so its GPUs count as free again, in the
/// extender's ledger and in the device plugin's handoff alike.
pub fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whether kubelet has admitted the pod: it reports container statuses (or
/// a running phase) only after admission, and it allocates every
/// container's devices at admission. Such a pod's device requests are never
/// pending, even to a device plugin that has just started.
pub fn is_admitted(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        matches!(s.phase.as_deref(), Some("Running"))
            || s.container_statuses.as_ref().is_some_and(|c| !c.is_empty())
            || s.init_container_statuses
                .as_ref()
                .is_some_and(|c| !c.is_empty())
    })
}

/// The Binding that places a pod on `node`, as kube-scheduler posts it to
/// `pods/<name>/binding`. The UID is a precondition (a re-created pod of the
/// same name is refused); the assignment, when given, is written into the
/// pod's annotations in the same atomic step.
pub fn binding(
    namespace: &str,
    name: &str,
    uid: &str,
    node: &str,
    assignment: Option<&PodAssignment>,
) -> Binding {
    Binding {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            uid: Some(uid.to_string()),
            annotations: assignment.map(|a| [(ANNOTATION.to_string(), a.to_json())].into()),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_string()),
            ..Default::default()
        },
    }
}
