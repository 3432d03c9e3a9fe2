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

/// Whether kubelet has admitted the pod, and so has already asked the
/// device plugin for every container's devices (kubelet allocates them at
/// admission). Until then only the scheduler has written the pod's status
/// (the `PodScheduled` condition); kubelet's first status write after
/// admission adds container statuses, its own conditions (`Initialized`,
/// `PodReadyToStartContainers`, ...) or a phase. Such a pod's device
/// requests are never pending, even to a device plugin that has just
/// started, and the extender need not keep alike pods off its node.
pub fn is_admitted(pod: &Pod) -> bool {
    let Some(s) = &pod.status else {
        return false;
    };
    s.phase.as_deref().is_some_and(|p| p != "Pending")
        || s.container_statuses.as_ref().is_some_and(|c| !c.is_empty())
        || s.init_container_statuses
            .as_ref()
            .is_some_and(|c| !c.is_empty())
        || s.conditions
            .iter()
            .flatten()
            .any(|c| c.type_ != "PodScheduled")
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodStatus};

    #[test]
    fn admission_is_read_from_kubelet_status() {
        let mut pod = Pod::default();
        assert!(!is_admitted(&pod));
        pod.status = Some(PodStatus {
            phase: Some("Pending".into()),
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert!(!is_admitted(&pod));
        let mut initialized = pod.clone();
        if let Some(s) = initialized.status.as_mut() {
            s.conditions.get_or_insert_default().push(PodCondition {
                type_: "Initialized".into(),
                status: "True".into(),
                ..Default::default()
            });
        }
        assert!(is_admitted(&initialized));
        let mut creating = pod.clone();
        if let Some(s) = creating.status.as_mut() {
            s.container_statuses = Some(vec![ContainerStatus {
                name: "server".into(),
                ..Default::default()
            }]);
        }
        assert!(is_admitted(&creating));
        let mut running = pod;
        if let Some(s) = running.status.as_mut() {
            s.phase = Some("Running".into());
        }
        assert!(is_admitted(&running));
    }
}
