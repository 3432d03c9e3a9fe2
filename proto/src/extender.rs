//! kube-scheduler's HTTP extender API (`k8s.io/kube-scheduler/extender/v1`).
//!
//! The Go structs carry no `json` tags, so the keys on the wire are the Go
//! field names in PascalCase (`Pod`, `NodeNames`, `PodUID`), and nil slices,
//! maps and pointers are sent as `null`. The objects inside (`Pod`, `Nodes`)
//! are ordinary Kubernetes JSON. kube-scheduler reads replies
//! case-insensitively; these types write PascalCase, as Go would.
//!
//! Two rules of kube-scheduler are easy to break and are encoded here:
//! - with `nodeCacheCapable: true`, a filter reply whose `NodeNames` is
//!   `null` means *no* node fits, never "all"; [`ExtenderFilterResult`]
//!   therefore always serializes a list;
//! - with `nodeCacheCapable: false`, only `Nodes` is read, so the reply must
//!   carry the full `NodeList` of the nodes that fit.
//!
//! ```
//! let body = r#"{"Pod":{"metadata":{"name":"p","namespace":"default","uid":"u"},"spec":{"containers":[]}},
//!                "Nodes":null,"NodeNames":["node-a","node-b"]}"#;
//! let args: proto::extender::ExtenderArgs = serde_json::from_str(body).unwrap();
//! assert_eq!(args.node_names(), vec!["node-a", "node-b"]);
//!
//! let reply = proto::extender::ExtenderFilterResult::from_args(&args, vec!["node-a".to_string()],
//!     [("node-b".to_string(), "needs 2 GPUs with 38 GiB free; largest free: 1".to_string())].into(),
//!     Default::default());
//! let json = serde_json::to_value(&reply).unwrap();
//! assert_eq!(json["NodeNames"], serde_json::json!(["node-a"]));
//! assert_eq!(json["Nodes"], serde_json::Value::Null);
//! ```

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde::{Deserialize, Serialize};

/// `v1.NodeList` as kube-scheduler sends it (without `kind`/`apiVersion`).
pub type NodeList = k8s_openapi::List<Node>;

/// Lowest score an extender may give.
pub const MIN_EXTENDER_PRIORITY: i64 = 0;
/// Highest score an extender may give; kube-scheduler multiplies by
/// `weight × 10` and does not clamp, so stay within range.
pub const MAX_EXTENDER_PRIORITY: i64 = 10;

/// Body of `filter` and `prioritize` calls.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderArgs {
    /// The pod being scheduled.
    pub pod: Pod,
    /// Candidate nodes, when `nodeCacheCapable` is false.
    #[serde(default)]
    pub nodes: Option<NodeList>,
    /// Candidate node names, when `nodeCacheCapable` is true.
    #[serde(default)]
    pub node_names: Option<Vec<String>>,
}

impl ExtenderArgs {
    /// The candidate node names, whichever way they were sent.
    pub fn node_names(&self) -> Vec<&str> {
        match (&self.node_names, &self.nodes) {
            (Some(names), _) => names.iter().map(String::as_str).collect(),
            (None, Some(list)) => list
                .items
                .iter()
                .filter_map(|n| n.metadata.name.as_deref())
                .collect(),
            (None, None) => Vec::new(),
        }
    }

    /// Whether the scheduler sent names only (`nodeCacheCapable: true`).
    pub fn node_cache_capable(&self) -> bool {
        self.nodes.is_none()
    }
}

/// Reply to `filter`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderFilterResult {
    /// Nodes that fit, when the scheduler sent `Nodes`.
    #[serde(default)]
    pub nodes: Option<NodeList>,
    /// Names of nodes that fit, when the scheduler sent `NodeNames`.
    #[serde(default)]
    pub node_names: Option<Vec<String>>,
    /// Nodes that do not fit now, with a reason a person understands.
    #[serde(default)]
    pub failed_nodes: BTreeMap<String, String>,
    /// Nodes that cannot fit however other pods move (preemption skips them).
    #[serde(default)]
    pub failed_and_unresolvable_nodes: BTreeMap<String, String>,
    /// A non-empty error fails the scheduling cycle.
    #[serde(default)]
    pub error: String,
}

impl ExtenderFilterResult {
    /// Builds the reply in the form the request asked for: `NodeNames` when
    /// names were sent, the matching `Nodes` items otherwise. The list is
    /// always present (possibly empty), never `null`.
    pub fn from_args(
        args: &ExtenderArgs,
        feasible: Vec<String>,
        failed: BTreeMap<String, String>,
        unresolvable: BTreeMap<String, String>,
    ) -> ExtenderFilterResult {
        let (nodes, node_names) = match &args.nodes {
            Some(list) if args.node_names.is_none() => {
                let items: Vec<Node> = list
                    .items
                    .iter()
                    .filter(|n| {
                        n.metadata
                            .name
                            .as_ref()
                            .is_some_and(|name| feasible.contains(name))
                    })
                    .cloned()
                    .collect();
                (
                    Some(NodeList {
                        items,
                        metadata: Default::default(),
                    }),
                    None,
                )
            }
            _ => (None, Some(feasible)),
        };
        ExtenderFilterResult {
            nodes,
            node_names,
            failed_nodes: failed,
            failed_and_unresolvable_nodes: unresolvable,
            error: String::new(),
        }
    }

    /// A reply that fails the call with a message.
    pub fn error(message: impl Into<String>) -> ExtenderFilterResult {
        ExtenderFilterResult {
            node_names: Some(Vec::new()),
            error: message.into(),
            ..Default::default()
        }
    }
}

/// One node's score; `prioritize` replies with a bare JSON array of these.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct HostPriority {
    /// Node name.
    pub host: String,
    /// Score in `MIN_EXTENDER_PRIORITY..=MAX_EXTENDER_PRIORITY`.
    pub score: i64,
}

/// Reply to `prioritize`.
pub type HostPriorityList = Vec<HostPriority>;

/// Body of `bind`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ExtenderBindingArgs {
    /// Pod name.
    #[serde(rename = "PodName")]
    pub pod_name: String,
    /// Pod namespace.
    #[serde(rename = "PodNamespace")]
    pub pod_namespace: String,
    /// Pod UID (a precondition for the Binding).
    #[serde(rename = "PodUID")]
    pub pod_uid: String,
    /// The node kube-scheduler chose.
    #[serde(rename = "Node")]
    pub node: String,
}

/// Reply to `bind`: an empty `Error` means success.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderBindingResult {
    /// Why binding failed; kube-scheduler requeues the pod.
    #[serde(default)]
    pub error: String,
}

/// Body of `preempt`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderPreemptionArgs {
    /// The pod that needs room.
    pub pod: Pod,
    /// Victims per node, when `nodeCacheCapable` is false.
    #[serde(default)]
    pub node_name_to_victims: Option<BTreeMap<String, Victims>>,
    /// Victims per node by UID, when `nodeCacheCapable` is true.
    #[serde(default)]
    pub node_name_to_meta_victims: Option<BTreeMap<String, MetaVictims>>,
}

/// Reply to `preempt`: the nodes still worth preempting on, with victims.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderPreemptionResult {
    /// Victims per node, by UID.
    #[serde(default)]
    pub node_name_to_meta_victims: BTreeMap<String, MetaVictims>,
}

/// Full victim pods on a node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Victims {
    /// Pods to evict.
    #[serde(default)]
    pub pods: Vec<Pod>,
    /// PodDisruptionBudget violations this would cause.
    #[serde(default, rename = "NumPDBViolations")]
    pub num_pdb_violations: i64,
}

/// Victim pods on a node, by UID.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct MetaVictims {
    /// Pods to evict.
    #[serde(default)]
    pub pods: Vec<MetaPod>,
    /// PodDisruptionBudget violations this would cause.
    #[serde(default, rename = "NumPDBViolations")]
    pub num_pdb_violations: i64,
}

/// A pod named by UID.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct MetaPod {
    /// Pod UID.
    #[serde(rename = "UID")]
    pub uid: String,
}
