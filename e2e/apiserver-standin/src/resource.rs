//! What the server serves: resource types (built-in and registered custom
//! resources) and the per-type rules the real API server applies to them
//! (field selector labels, what happens to `.status` on create).

use std::borrow::Cow;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::{ClusterResourceScope, NamespaceResourceScope, Resource};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ApiError, Details};

/// One served resource: `group/version`, plural, kind, scope, and whether it
/// has a `/status` subresource (which makes writes to the main resource
/// leave `.status` alone, as on a real cluster).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub kind: String,
    pub namespaced: bool,
    pub status_subresource: bool,
}

impl ResourceType {
    pub fn namespaced(group: &str, version: &str, plural: &str, kind: &str) -> Self {
        Self {
            group: group.to_string(),
            version: version.to_string(),
            plural: plural.to_string(),
            kind: kind.to_string(),
            namespaced: true,
            status_subresource: false,
        }
    }

    pub fn cluster(group: &str, version: &str, plural: &str, kind: &str) -> Self {
        Self {
            namespaced: false,
            ..Self::namespaced(group, version, plural, kind)
        }
    }

    /// Gives the type a `/status` subresource.
    pub fn with_status(mut self) -> Self {
        self.status_subresource = true;
        self
    }

    /// The type of a kube-rs resource (a k8s-openapi type or a
    /// `#[derive(CustomResource)]` one). Without a status subresource; add
    /// one with [`ResourceType::with_status`] where the CRD declares it.
    pub fn of<K>() -> Self
    where
        K: Resource<DynamicType = ()>,
        K::Scope: Scope,
    {
        let rt = Self::namespaced(
            &K::group(&()),
            &K::version(&()),
            &K::plural(&()),
            &K::kind(&()),
        );
        Self {
            namespaced: <K::Scope as Scope>::NAMESPACED,
            ..rt
        }
    }

    /// From a `CustomResourceDefinition`, as a cluster learns it from the
    /// manifest. Every served version is one [`ResourceType`].
    pub fn from_crd(crd: &CustomResourceDefinition) -> Result<Vec<Self>, ApiError> {
        let spec = &crd.spec;
        let namespaced = match spec.scope.as_str() {
            "Namespaced" => true,
            "Cluster" => false,
            other => {
                return Err(ApiError::bad_request(format!(
                    "CustomResourceDefinition spec.scope: unsupported value {other:?} (expected Namespaced or Cluster)"
                )));
            }
        };
        if spec.names.plural.is_empty() || spec.names.kind.is_empty() || spec.group.is_empty() {
            return Err(ApiError::bad_request(
                "CustomResourceDefinition needs spec.group, spec.names.plural and spec.names.kind",
            ));
        }
        let types: Vec<Self> = spec
            .versions
            .iter()
            .filter(|v| v.served)
            .map(|v| Self {
                group: spec.group.clone(),
                version: v.name.clone(),
                plural: spec.names.plural.clone(),
                kind: spec.names.kind.clone(),
                namespaced,
                status_subresource: v.subresources.as_ref().is_some_and(|s| s.status.is_some()),
            })
            .collect();
        if types.is_empty() {
            return Err(ApiError::bad_request(format!(
                "CustomResourceDefinition {}.{} serves no version",
                spec.names.plural, spec.group
            )));
        }
        Ok(types)
    }

    /// gpupack's node inventory CRD (`gpunodeinventories.gpupack.io/v1`),
    /// cluster-scoped, one object per node named after the node.
    pub fn gpu_node_inventory() -> Self {
        Self::cluster("gpupack.io", "v1", "gpunodeinventories", "GpuNodeInventory")
    }

    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` or `leases.coordination.k8s.io`, as error messages name it.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    pub(crate) fn is_core(&self, plural: &str) -> bool {
        self.group.is_empty() && self.plural == plural
    }

    pub(crate) fn is_custom(&self) -> bool {
        !BUILTIN_GROUPS.contains(&self.group.as_str())
    }

    /// The value of a field selector label on `obj`, or a 400 naming the
    /// label where the real API server does not support it for this type.
    pub fn field_value<'a>(&self, obj: &'a Value, label: &str) -> Result<Cow<'a, str>, ApiError> {
        let supported = match (self.group.as_str(), self.plural.as_str()) {
            (_, _) if label == "metadata.name" || label == "metadata.namespace" => true,
            ("", "pods") => POD_FIELDS.contains(&label),
            ("", "nodes") => label == "spec.unschedulable",
            ("", "events") => CORE_EVENT_FIELDS.contains(&label),
            ("events.k8s.io", "events") => EVENTS_V1_FIELDS.contains(&label),
            _ => false,
        };
        if !supported {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {label}"
            )));
        }
        // Where a label is a shorthand for a nested field, map it.
        let path = match (self.plural.as_str(), label) {
            ("events", "source") => "source.component",
            _ => label,
        };
        let mut cur = obj;
        for part in path.split('.') {
            match cur.get(part) {
                Some(v) => cur = v,
                None => {
                    // Booleans the API renders with fmt.Sprint default to "false".
                    let default = if BOOL_FIELDS.contains(&label) {
                        "false"
                    } else {
                        ""
                    };
                    return Ok(Cow::Borrowed(default));
                }
            }
        }
        Ok(match cur {
            Value::String(s) => Cow::Borrowed(s.as_str()),
            Value::Null => Cow::Borrowed(""),
            other => Cow::Owned(other.to_string()),
        })
    }

    /// What the real API server does to `.status` on create.
    pub(crate) fn status_on_create(&self) -> StatusOnCreate {
        if self.is_core("pods") {
            StatusOnCreate::Reset(serde_json::json!({ "phase": "Pending" }))
        } else if self.status_subresource
            && (self.is_custom()
                || STATUS_CLEARED_ON_CREATE.contains(&(self.group.as_str(), self.plural.as_str())))
        {
            StatusOnCreate::Drop
        } else {
            StatusOnCreate::Keep
        }
    }
}

pub(crate) enum StatusOnCreate {
    Keep,
    Drop,
    Reset(Value),
}

/// Whether a kube-rs scope marker is namespaced.
pub trait Scope {
    const NAMESPACED: bool;
}
impl Scope for NamespaceResourceScope {
    const NAMESPACED: bool = true;
}
impl Scope for ClusterResourceScope {
    const NAMESPACED: bool = false;
}

const BUILTIN_GROUPS: &[&str] = &[
    "",
    "events.k8s.io",
    "coordination.k8s.io",
    "apiextensions.k8s.io",
    "policy",
    "scheduling.k8s.io",
];

/// Built-in types whose registry strategy clears `.status` on create (its
/// owner's controller writes it through the status subresource); upstream:
/// `pkg/registry/policy/poddisruptionbudget/strategy.go`, `PrepareForCreate`.
const STATUS_CLEARED_ON_CREATE: &[(&str, &str)] = &[("policy", "poddisruptionbudgets")];

const POD_FIELDS: &[&str] = &[
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];

const CORE_EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

const EVENTS_V1_FIELDS: &[&str] = &[
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "reason",
    "reportingController",
    "type",
];

const BOOL_FIELDS: &[&str] = &["spec.unschedulable", "spec.hostNetwork"];

/// The types every server serves from the start.
pub fn builtin_types() -> Vec<ResourceType> {
    vec![
        ResourceType::namespaced("", "v1", "pods", "Pod").with_status(),
        ResourceType::cluster("", "v1", "nodes", "Node").with_status(),
        ResourceType::cluster("", "v1", "namespaces", "Namespace").with_status(),
        ResourceType::namespaced("", "v1", "events", "Event"),
        ResourceType::namespaced("", "v1", "configmaps", "ConfigMap"),
        ResourceType::namespaced("events.k8s.io", "v1", "events", "Event"),
        ResourceType::namespaced("coordination.k8s.io", "v1", "leases", "Lease"),
        ResourceType::namespaced(
            "policy",
            "v1",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
        )
        .with_status(),
        ResourceType::cluster(
            "scheduling.k8s.io",
            "v1",
            "priorityclasses",
            "PriorityClass",
        ),
        ResourceType::cluster(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
        )
        .with_status(),
    ]
}

/// API errors about an object of a served type, worded as the API server
/// words them.
impl ApiError {
    pub(crate) fn about(mut self, rt: &ResourceType, name: &str) -> Self {
        self.details = Some(Details {
            name: name.to_string(),
            group: rt.group.clone(),
            kind: rt.plural.clone(),
        });
        self
    }

    /// `pods "x" not found`.
    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", rt.qualified_plural()),
        )
        .about(rt, name)
    }

    /// `pods "x" already exists`.
    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", rt.qualified_plural()),
        )
        .about(rt, name)
    }

    /// `Operation cannot be fulfilled on pods "x": <why>`.
    pub fn conflict(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                rt.qualified_plural()
            ),
        )
        .about(rt, name)
    }

    /// The optimistic-concurrency failure: the caller's resourceVersion is stale.
    pub fn stale(rt: &ResourceType, name: &str) -> Self {
        Self::conflict(
            rt,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// `Pod "x" is invalid: <field>: <what>`.
    /// An admission plugin's refusal: `pods "x" is forbidden: <why>`.
    pub fn forbidden(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(
            403,
            "Forbidden",
            format!("{} \"{name}\" is forbidden: {why}", rt.qualified_plural()),
        )
        .about(rt, name)
    }

    pub fn invalid(rt: &ResourceType, name: &str, what: &str) -> Self {
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {what}", rt.kind),
        );
        e.details = Some(Details {
            name: name.to_string(),
            group: rt.group.clone(),
            kind: rt.kind.clone(),
        });
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::json;

    #[test]
    fn of_reads_scope_and_names() {
        let p = ResourceType::of::<Pod>();
        assert_eq!(
            (p.group.as_str(), p.plural.as_str(), p.namespaced),
            ("", "pods", true)
        );
        let n = ResourceType::of::<Node>();
        assert!(!n.namespaced);
        assert_eq!(n.api_version(), "v1");
    }

    #[test]
    fn pod_field_values() {
        let pods = ResourceType::of::<Pod>();
        let pod =
            json!({"metadata":{"name":"a"},"spec":{"nodeName":"n1"},"status":{"phase":"Running"}});
        assert_eq!(pods.field_value(&pod, "spec.nodeName").unwrap(), "n1");
        assert_eq!(pods.field_value(&pod, "status.phase").unwrap(), "Running");
        assert_eq!(pods.field_value(&pod, "spec.hostNetwork").unwrap(), "false");
        let unbound = json!({"metadata":{"name":"b"},"spec":{}});
        assert_eq!(pods.field_value(&unbound, "spec.nodeName").unwrap(), "");
        let err = pods.field_value(&pod, "spec.priority").unwrap_err();
        assert_eq!(err.code, 400);
        assert!(err.message.contains("spec.priority"));
    }

    #[test]
    fn custom_types_support_only_metadata_fields() {
        let inv = ResourceType::gpu_node_inventory();
        let obj = json!({"metadata":{"name":"node-a"}});
        assert_eq!(inv.field_value(&obj, "metadata.name").unwrap(), "node-a");
        assert!(inv.field_value(&obj, "spec.nodeName").is_err());
    }
}
