//! Pods whose model is outside the catalog: the filter answers at once while
//! the model is fetched in the background, the next attempt is sized from
//! the model's own files, and failures say what to set.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hub_standin::checkpoint::{Scheme, llama_tensors, stored_bytes};
use hub_standin::{HubStandin, Repo, checkpoint_files};
use k8s_openapi::api::core::v1::Pod;
use model_source::{Hub, HubSettings, ModelLookup, Registry, RegistrySettings};
use placement::Policy;
use scheduler_ext::ClusterState;
use scheduler_ext::demand::{MemoryPerGpu, PodNeeds};
use scheduler_ext::events::Events;
use scheduler_ext::http::{App, filter_reply};
use scheduler_ext::metrics::Metrics;
use scheduler_ext::watch::Readiness;
use serde_json::{Value, json};

const FINE_TUNE: &str = "NousResearch/Hermes-3-Llama-3.1-8B";
const GATED: &str = "meta-llama/Llama-Guard-3-8B";

fn config(repo: &str) -> String {
    let path = format!(
        "{}/../model-source/tests/fixtures/hub/{repo}/config.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn repo(name: &str) -> Repo {
    let text = config(name);
    let tensors = llama_tensors(&serde_json::from_str(&text).unwrap(), Scheme::Bf16);
    Repo::default()
        .file("config.json", text)
        .files(checkpoint_files(&tensors, 2))
}

async fn standin() -> HubStandin {
    let mut repos = BTreeMap::new();
    repos.insert(
        FINE_TUNE.to_string(),
        repo(FINE_TUNE).delayed(Duration::from_millis(300)),
    );
    repos.insert(GATED.to_string(), repo(GATED).gated("hf_secret"));
    HubStandin::start(repos).await.unwrap()
}

fn app(models: Arc<dyn ModelLookup>) -> App {
    let app = App {
        state: Arc::new(RwLock::new(ClusterState::new(Policy::Gpupack))),
        binder: None,
        events: Events::disabled(),
        metrics: Arc::new(Metrics::new()),
        readiness: Arc::new(Readiness::default()),
        models,
        preemptor: None,
    };
    app.readiness.set_ready();
    app
}

fn registry(endpoint: &str) -> Registry {
    let hub = Hub::new(HubSettings {
        endpoint: endpoint.to_string(),
        token: None,
        revision: "main".into(),
        timeout: Duration::from_secs(2),
        cache: None,
    })
    .unwrap();
    Registry::new(hub, RegistrySettings::default())
}

fn llm_pod(model: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "llm", "namespace": "ml", "uid": "u1", "annotations": {
            "gpupack.io/model": model,
            "gpupack.io/tensor-parallel-size": "2",
            "gpupack.io/max-model-len": "8192",
        }},
        "spec": {"containers": [{"name": "vllm"}]}
    }))
    .unwrap()
}

fn filter(app: &App, pod: &Pod) -> (Value, &'static str, Duration) {
    let body = serde_json::to_vec(&json!({"Pod": pod, "NodeNames": ["node-a", "node-b"]})).unwrap();
    let started = Instant::now();
    let (reply, outcome) = filter_reply(app, &body);
    (
        serde_json::to_value(reply).unwrap(),
        outcome,
        started.elapsed(),
    )
}

#[tokio::test]
async fn the_filter_answers_at_once_and_the_next_attempt_is_sized() {
    let s = standin().await;
    let registry = registry(&s.endpoint());
    let app = app(Arc::new(registry.clone()));
    let pod = llm_pod(FINE_TUNE);

    let (reply, outcome, took) = filter(&app, &pod);
    assert!(took < Duration::from_millis(100), "{took:?}");
    assert_eq!(outcome, "model_pending");
    let reason = reply["FailedNodes"]["node-a"].as_str().unwrap();
    assert!(
        reason.contains(&format!("sizing model {FINE_TUNE}: fetching its config")),
        "{reason}"
    );
    // Retriable: not among the nodes that can never fit.
    assert!(
        reply["FailedAndUnresolvableNodes"]
            .as_object()
            .is_none_or(|m| m.is_empty()),
        "{reply}"
    );

    let spec = registry.resolve(FINE_TUNE).await.unwrap();
    let (_, outcome, _) = filter(&app, &pod);
    assert_ne!(outcome, "model_pending");
    let needs = PodNeeds::from_pod_with(&pod, &registry).unwrap();
    assert_eq!(needs.containers[0].gpus, 2);
    let MemoryPerGpu::Estimated { bytes, .. } = needs.containers[0].memory else {
        panic!("{needs:?}")
    };
    let params = estimator::ServingParams {
        tensor_parallel_size: 2,
        max_model_len: Some(8192),
        ..Default::default()
    };
    let expected = estimator::estimate(&spec, &params).unwrap();
    assert_eq!(bytes, expected.total_bytes());
    let tensors = llama_tensors(
        &serde_json::from_str(&config(FINE_TUNE)).unwrap(),
        Scheme::Bf16,
    );
    assert_eq!(expected.checkpoint_bytes, Some(stored_bytes(&tensors)));
}

#[tokio::test]
async fn a_gated_model_without_a_token_says_to_set_hf_token() {
    let s = standin().await;
    let registry = registry(&s.endpoint());
    let app = app(Arc::new(registry.clone()));
    let pod = llm_pod(GATED);
    let (_, outcome, _) = filter(&app, &pod);
    assert_eq!(outcome, "model_pending");
    assert!(registry.resolve(GATED).await.is_err());
    let (reply, outcome, _) = filter(&app, &pod);
    assert_eq!(outcome, "model_pending");
    let reason = reply["FailedNodes"]["node-b"].as_str().unwrap();
    assert!(
        reason.contains("gated") && reason.contains("HF_TOKEN") && reason.contains("retrying in"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_quantized_name_without_its_config_names_the_quantization_annotation() {
    // Offline: the catalog knows Qwen2.5-72B, but not how this re-upload stores it.
    let app = app(Arc::new(model_source::Offline));
    let (reply, outcome, _) = filter(&app, &llm_pod("Qwen/Qwen2.5-72B-Instruct-AWQ"));
    assert_eq!(outcome, "bad_request");
    let reason = reply["FailedAndUnresolvableNodes"]["node-a"]
        .as_str()
        .unwrap();
    assert!(
        reason.contains("AWQ") && reason.contains("gpupack.io/quantization"),
        "{reason}"
    );
    // With the annotation it is sized from the catalog at once.
    let mut pod = llm_pod("Qwen/Qwen2.5-72B-Instruct-AWQ");
    pod.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("gpupack.io/quantization".into(), "awq".into());
    let needs = PodNeeds::from_pod(&pod).unwrap();
    assert_eq!(needs.containers[0].gpus, 2);
}
