//! What a run is made of: the simulated nodes and the pods. The default
//! cluster and workload are embedded so the demo and the tests need no
//! files; the node descriptions are the device plugin's own simulated files.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ObjectMeta, PostParams};
use proto::annotations;
use proto::resources::{GPU, GPU_MEMORY, mig_resource_name};

/// The scheduler name of gpupack's profile.
pub const SCHEDULER_NAME: &str = "gpupack-scheduler";
/// Namespace of the workload pods.
pub const NAMESPACE: &str = "llm";

/// Creates the pods in [`NAMESPACE`], in order.
pub async fn create_pods(client: &kube::Client, pods: &[PodBuilder]) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    for p in pods {
        api.create(&PostParams::default(), &p.build())
            .await
            .with_context(|| format!("creating pod {}", p.name()))?;
    }
    Ok(())
}

/// 8× H100 SXM, NVSwitch.
pub const H100_NVSWITCH: &str =
    include_str!("../../device-plugin/simulated/h100-sxm-8x-nvswitch.yaml");
/// 4× L40S, PCIe, two sockets.
pub const L40S_PCIE: &str = include_str!("../../device-plugin/simulated/l40s-pcie-4x-2socket.yaml");
/// 2× A100, GPU 0 in MIG mode.
pub const A100_MIG: &str = include_str!("../../device-plugin/simulated/a100-mig.yaml");

/// One simulated node.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    /// The device plugin's simulated node file (YAML).
    pub simulated: String,
}

impl NodeSpec {
    pub fn new(name: &str, simulated: &str) -> NodeSpec {
        NodeSpec {
            name: name.to_string(),
            simulated: simulated.to_string(),
        }
    }
}

/// 2× 8×H100 NVSwitch, 1× 4×L40S PCIe over two sockets, 1× A100 with MIG.
pub fn default_cluster() -> Vec<NodeSpec> {
    vec![
        NodeSpec::new("h100-a", H100_NVSWITCH),
        NodeSpec::new("h100-b", H100_NVSWITCH),
        NodeSpec::new("l40s-a", L40S_PCIE),
        NodeSpec::new("a100-mig", A100_MIG),
    ]
}

/// A workload pod, built up in steps.
#[derive(Debug, Clone)]
pub struct PodBuilder {
    name: String,
    annotations: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    limits: BTreeMap<String, String>,
    scheduler: String,
    priority_class: Option<String>,
    node_selector: BTreeMap<String, String>,
}

impl PodBuilder {
    pub fn new(name: &str) -> PodBuilder {
        PodBuilder {
            name: name.to_string(),
            annotations: BTreeMap::new(),
            labels: BTreeMap::from([(
                "app.kubernetes.io/part-of".to_string(),
                "gpupack-e2e".to_string(),
            )]),
            limits: BTreeMap::new(),
            scheduler: SCHEDULER_NAME.to_string(),
            priority_class: None,
            node_selector: BTreeMap::new(),
        }
    }

    /// A model server sized by annotations: `tp` GPUs of `gpupack.io/gpu`.
    pub fn model(name: &str, model: &str, tp: u32, max_model_len: u64) -> PodBuilder {
        let mut p = PodBuilder::new(name)
            .annotation(annotations::MODEL, model)
            .annotation(annotations::MAX_MODEL_LEN, &max_model_len.to_string())
            .annotation(annotations::MAX_NUM_SEQS, "16")
            .annotation(annotations::ENGINE, "vllm")
            .limit(GPU, &tp.to_string());
        if tp > 1 {
            p = p.annotation(annotations::TENSOR_PARALLEL_SIZE, &tp.to_string());
        }
        p
    }

    /// Explicit requests: `gpus` GPUs with `gib` GiB in total.
    pub fn explicit(name: &str, gpus: u32, gib: u32) -> PodBuilder {
        PodBuilder::new(name)
            .limit(GPU, &gpus.to_string())
            .limit(GPU_MEMORY, &gib.to_string())
    }

    /// One MIG instance of `profile`.
    pub fn mig(name: &str, profile: &str) -> PodBuilder {
        PodBuilder::new(name).limit(&mig_resource_name(profile), "1")
    }

    pub fn annotation(mut self, key: &str, value: &str) -> PodBuilder {
        self.annotations.insert(key.to_string(), value.to_string());
        self
    }

    pub fn limit(mut self, resource: &str, value: &str) -> PodBuilder {
        self.limits.insert(resource.to_string(), value.to_string());
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> PodBuilder {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }

    /// `priorityClassName`: admission sets the priority and preemption policy.
    pub fn priority_class(mut self, class: &str) -> PodBuilder {
        self.priority_class = Some(class.to_string());
        self
    }

    /// Keeps the pod to the node named `node` (`nodeSelector` on
    /// `kubernetes.io/hostname`).
    pub fn on_node(mut self, node: &str) -> PodBuilder {
        self.node_selector
            .insert("kubernetes.io/hostname".to_string(), node.to_string());
        self
    }

    pub fn scheduler(mut self, name: &str) -> PodBuilder {
        self.scheduler = name.to_string();
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pod object. Extended resources go in limits and requests alike
    /// (the API server defaults requests from limits; the stand-in does not
    /// default, so both are written). The container prints its `GPUPACK_*`
    /// variables, which is how the cluster target reads them back.
    pub fn build(&self) -> Pod {
        let quantities: BTreeMap<String, Quantity> = self
            .limits
            .iter()
            .map(|(k, v)| (k.clone(), Quantity(v.clone())))
            .collect();
        Pod {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(NAMESPACE.to_string()),
                annotations: (!self.annotations.is_empty()).then(|| self.annotations.clone()),
                labels: Some(self.labels.clone()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                scheduler_name: Some(self.scheduler.clone()),
                priority_class_name: self.priority_class.clone(),
                node_selector: (!self.node_selector.is_empty()).then(|| self.node_selector.clone()),
                restart_policy: Some("Never".to_string()),
                termination_grace_period_seconds: Some(0),
                containers: vec![Container {
                    name: "server".to_string(),
                    image: Some("docker.io/library/busybox:1.37".to_string()),
                    command: Some(vec![
                        "sh".to_string(),
                        "-c".to_string(),
                        "env | grep -E '^(GPUPACK_|NVIDIA_VISIBLE_DEVICES)' | sort; sleep 3600"
                            .to_string(),
                    ]),
                    resources: Some(ResourceRequirements {
                        limits: Some(quantities.clone()),
                        requests: Some(quantities),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        }
    }
}

/// The LLM mix: models by annotation (8B, 70B at TP=4, Mixtral at TP=2,
/// small models), explicit GPU and memory requests, and MIG instances.
pub fn default_workload() -> Vec<PodBuilder> {
    let mut pods = vec![
        PodBuilder::model(
            "llama-70b-tp4-a",
            "meta-llama/Llama-3.1-70B-Instruct",
            4,
            16384,
        ),
        PodBuilder::model(
            "llama-70b-tp4-b",
            "meta-llama/Llama-3.1-70B-Instruct",
            4,
            16384,
        ),
        PodBuilder::model(
            "mixtral-tp2-a",
            "mistralai/Mixtral-8x7B-Instruct-v0.1",
            2,
            8192,
        ),
        PodBuilder::model(
            "mixtral-tp2-b",
            "mistralai/Mixtral-8x7B-Instruct-v0.1",
            2,
            8192,
        ),
    ];
    for i in 0..4 {
        pods.push(PodBuilder::model(
            &format!("llama-8b-{i}"),
            "meta-llama/Llama-3.1-8B-Instruct",
            1,
            8192,
        ));
    }
    for (i, m) in [
        "Qwen/Qwen2.5-0.5B-Instruct",
        "meta-llama/Llama-3.2-1B-Instruct",
        "meta-llama/Llama-3.2-3B-Instruct",
        "microsoft/Phi-3-mini-4k-instruct",
        "Qwen/Qwen3-0.6B",
        "Qwen/Qwen2.5-7B-Instruct",
    ]
    .iter()
    .enumerate()
    {
        pods.push(PodBuilder::model(&format!("small-{i}"), m, 1, 4096));
    }
    for i in 0..4 {
        pods.push(PodBuilder::explicit(&format!("explicit-20g-{i}"), 1, 20));
    }
    pods.push(PodBuilder::explicit("explicit-2x30g", 2, 60));
    pods.push(PodBuilder::mig("mig-1g-a", "1g.10gb"));
    pods.push(PodBuilder::mig("mig-1g-b", "1g.10gb"));
    pods.push(PodBuilder::mig("mig-3g", "3g.40gb"));
    pods
}

/// PriorityClasses of the preemption scenarios: `gpupack-e2e-batch` (0),
/// `gpupack-e2e-serving` (100000) and `gpupack-e2e-serving-polite`
/// (100000, never preempts).
pub async fn create_priority_classes(client: &kube::Client) -> Result<()> {
    use k8s_openapi::api::scheduling::v1::PriorityClass;
    let api: Api<PriorityClass> = Api::all(client.clone());
    for (name, value, policy) in [
        (BATCH_CLASS, 0, "PreemptLowerPriority"),
        (SERVING_CLASS, 100_000, "PreemptLowerPriority"),
        (POLITE_CLASS, 100_000, "Never"),
    ] {
        let pc = PriorityClass {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            value,
            preemption_policy: Some(policy.to_string()),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &pc).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

pub const BATCH_CLASS: &str = "gpupack-e2e-batch";
pub const SERVING_CLASS: &str = "gpupack-e2e-serving";
pub const POLITE_CLASS: &str = "gpupack-e2e-serving-polite";
