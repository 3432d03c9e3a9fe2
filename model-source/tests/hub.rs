//! Resolution against the Hub stand-in: fine-tunes, quantized re-uploads,
//! gated repos, and every failure with its message.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use estimator::{Quantization, ServingParams};
use hub_standin::checkpoint::{Scheme, Tensor, llama_tensors, llava_next_tensors, stored_bytes};
use hub_standin::{HubStandin, Repo, checkpoint_files};
use model_source::{Hub, HubSettings, Lookup, ModelLookup, Registry, RegistrySettings};

const FINE_TUNE: &str = "NousResearch/Hermes-3-Llama-3.1-8B";
const AWQ: &str = "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4";
const FP8: &str = "neuralmagic/Meta-Llama-3.1-8B-Instruct-FP8-dynamic";
const GATED: &str = "meta-llama/Llama-Guard-3-8B";
const VLM: &str = "llava-hf/llava-v1.6-mistral-7b-hf";
const TOKEN: &str = "hf_standin_token";

fn fixture(repo: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hub")
        .join(repo)
        .join("config.json");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn tensors(repo: &str, scheme: Scheme) -> Vec<Tensor> {
    llama_tensors(&serde_json::from_str(&fixture(repo)).unwrap(), scheme)
}

fn vlm_tensors() -> Vec<Tensor> {
    llava_next_tensors(&serde_json::from_str(&fixture(VLM)).unwrap())
}

fn checkpoint(repo: &str, scheme: Scheme, shards: usize) -> Repo {
    Repo::default()
        .file("config.json", fixture(repo))
        .files(checkpoint_files(&tensors(repo, scheme), shards))
}

async fn standin() -> HubStandin {
    let mut repos = BTreeMap::new();
    repos.insert(FINE_TUNE.into(), checkpoint(FINE_TUNE, Scheme::Bf16, 4));
    repos.insert(
        AWQ.into(),
        checkpoint(AWQ, Scheme::Awq { group_size: 128 }, 2),
    );
    repos.insert(FP8.into(), checkpoint(FP8, Scheme::Fp8, 2));
    repos.insert(
        GATED.into(),
        checkpoint(GATED, Scheme::Bf16, 4).gated(TOKEN),
    );
    repos.insert(
        VLM.into(),
        Repo::default()
            .file("config.json", fixture(VLM))
            .files(checkpoint_files(&vlm_tensors(), 4)),
    );
    repos.insert(
        "someorg/slow-model".into(),
        checkpoint(FINE_TUNE, Scheme::Bf16, 1).delayed(Duration::from_secs(30)),
    );
    repos.insert(
        "someorg/broken-config".into(),
        Repo::default().file("config.json", r#"{"model_type": "llama", "hidden_size": "#),
    );
    repos.insert(
        "someorg/gguf-only".into(),
        Repo::default().file("model-Q4_K_M.gguf", "GGUF"),
    );
    HubStandin::start(repos).await.unwrap()
}

fn hub(endpoint: &str, token: Option<&str>) -> Hub {
    Hub::new(HubSettings {
        endpoint: endpoint.to_string(),
        token: token.map(str::to_string),
        revision: "main".into(),
        timeout: Duration::from_millis(500),
        cache: None,
    })
    .unwrap()
}

async fn resolve(hub: &Hub, repo: &str) -> Result<estimator::ModelSpec, model_source::SourceError> {
    model_source::resolve(&hub.repo(repo)?, repo).await
}

fn params(tp: u32) -> ServingParams {
    ServingParams {
        tensor_parallel_size: tp,
        max_model_len: Some(8192),
        ..ServingParams::default()
    }
}

#[tokio::test]
async fn a_fine_tune_outside_the_catalog_resolves_as_its_architecture() {
    let s = standin().await;
    assert!(estimator::lookup(FINE_TUNE).is_err(), "not a catalog model");
    let spec = resolve(&hub(&s.endpoint(), None), FINE_TUNE).await.unwrap();
    let llama = estimator::lookup("Llama-3.1-8B").unwrap().spec();
    assert_eq!(spec.arch, llama.arch);
    assert_eq!(spec.weights.quantization, Quantization::None);
    let stored = stored_bytes(&tensors(FINE_TUNE, Scheme::Bf16));
    let c = spec.checkpoint.as_ref().unwrap();
    assert_eq!(c.total_bytes(), stored);
    assert_eq!(c.by_dtype.keys().collect::<Vec<_>>(), ["BF16"]);
    // The architecture formula and the checkpoint agree on a plain Llama.
    let measured = estimator::estimate(&spec, &params(2)).unwrap();
    let computed = estimator::estimate(&llama, &params(2)).unwrap();
    assert_eq!(measured.checkpoint_bytes, Some(stored));
    let ratio = measured.per_gpu.weights_bytes as f64 / computed.per_gpu.weights_bytes as f64;
    assert!((ratio - 1.0).abs() < 0.01, "{ratio}");
}

/// A vision-language model: its tower is read from `vision_config` and its
/// stored bytes (tower included) stand for the weights.
#[tokio::test]
async fn a_vision_language_model_resolves_with_its_vision_tower() {
    let s = standin().await;
    let spec = resolve(&hub(&s.endpoint(), None), VLM).await.unwrap();
    let vision = spec.arch.vision.expect("the CLIP tower");
    assert_eq!(vision.hidden_size, 1024);
    let stored = stored_bytes(&vlm_tensors());
    assert_eq!(spec.checkpoint.as_ref().unwrap().total_bytes(), stored);
    assert_eq!(
        spec.checkpoint
            .as_ref()
            .unwrap()
            .by_dtype
            .keys()
            .collect::<Vec<_>>(),
        ["F16"]
    );
    let e = estimator::estimate(&spec, &params(1)).unwrap();
    assert!(e.weights_detail.vision > 0);
    let weights = e.per_gpu.weights_bytes - e.weights_detail.rotary_cache;
    // The whole checkpoint on one rank, plus vocabulary padding.
    assert!(
        weights >= stored && weights < stored + stored / 100,
        "{weights} vs {stored}"
    );
    // The catalog's entry for the same model agrees, and the language model
    // alone is smaller by about the tower.
    let catalog = estimator::estimate(&estimator::lookup(VLM).unwrap().spec(), &params(1)).unwrap();
    let ratio = e.per_gpu.weights_bytes as f64 / catalog.per_gpu.weights_bytes as f64;
    assert!((ratio - 1.0).abs() < 0.005, "{ratio}");
    let mut text_only = spec.clone();
    text_only.arch.vision = None;
    text_only.checkpoint = None;
    let text = estimator::estimate(&text_only, &params(1)).unwrap();
    assert!(text.per_gpu.weights_bytes + e.weights_detail.vision / 2 < e.per_gpu.weights_bytes);
}

#[tokio::test]
async fn quantized_re_uploads_are_sized_from_their_stored_bytes() {
    let s = standin().await;
    let hub = hub(&s.endpoint(), None);
    let bf16 = estimator::estimate(
        &estimator::lookup("Llama-3.1-8B").unwrap().spec(),
        &params(1),
    )
    .unwrap();
    for (repo, scheme, quant) in [
        (
            AWQ,
            Scheme::Awq { group_size: 128 },
            Quantization::Awq { group_size: 128 },
        ),
        (FP8, Scheme::Fp8, Quantization::Fp8 { block: None }),
    ] {
        let spec = resolve(&hub, repo).await.unwrap();
        assert_eq!(spec.weights.quantization, quant, "{repo}");
        let stored = stored_bytes(&tensors(repo, scheme));
        assert_eq!(
            spec.checkpoint.as_ref().unwrap().total_bytes(),
            stored,
            "{repo}"
        );
        let e = estimator::estimate(&spec, &params(1)).unwrap();
        let weights = e.per_gpu.weights_bytes - e.weights_detail.rotary_cache;
        // One rank of TP 1 holds the whole checkpoint, plus vocabulary padding.
        assert!(
            weights >= stored && weights < stored + stored / 100,
            "{repo}: {weights} vs {stored}"
        );
        let saved = bf16.per_gpu.weights_bytes as f64 / e.per_gpu.weights_bytes as f64;
        assert!(saved > 1.5, "{repo}: only {saved:.2}x less than BF16");
    }
}

#[tokio::test]
async fn a_gated_repo_needs_hf_token() {
    let s = standin().await;
    let e = resolve(&hub(&s.endpoint(), None), GATED)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("gated") && e.contains("401") && e.contains("HF_TOKEN"),
        "{e}"
    );
    let e = resolve(&hub(&s.endpoint(), Some("hf_wrong")), GATED)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("403"), "{e}");
    let spec = resolve(&hub(&s.endpoint(), Some(TOKEN)), GATED)
        .await
        .unwrap();
    assert!(spec.checkpoint.is_some());
}

#[tokio::test]
async fn failures_say_what_went_wrong() {
    let s = standin().await;
    let hub = hub(&s.endpoint(), None);
    let e = resolve(&hub, "someorg/no-such-model")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not exist") && e.contains("404"), "{e}");
    let e = resolve(&hub, "someorg/gguf-only")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("has no config.json"), "{e}");
    let e = resolve(&hub, "someorg/broken-config")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("config.json") && e.contains("not JSON"), "{e}");
    let started = Instant::now();
    let e = resolve(&hub, "someorg/slow-model")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no answer within"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let e = resolve(&hub, "../../etc/passwd")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a Hugging Face model id"), "{e}");
    let long = format!("org/{}", "x".repeat(300));
    assert!(resolve(&hub, &long).await.is_err());
}

/// A restarted extender (a new registry) with the same cache directory
/// sizes the models it knew without asking the Hub; another endpoint or a
/// stale entry goes to the Hub again.
#[tokio::test]
async fn the_disk_cache_answers_after_a_restart() {
    let s = standin().await;
    let dir = tempfile::tempdir().unwrap();
    let cached_hub = |endpoint: &str, max_age: Duration| {
        let mut settings = hub(endpoint, None).settings().clone();
        settings.cache = Some(model_source::DiskCache::new(dir.path(), 16, max_age).unwrap());
        Hub::new(settings).unwrap()
    };
    let first = Registry::new(
        cached_hub(&s.endpoint(), Duration::from_secs(3600)),
        RegistrySettings::default(),
    );
    let spec = first.resolve(FINE_TUNE).await.unwrap();
    let after_first = s.requests();
    assert!(after_first > 0);
    let restarted = Registry::new(
        cached_hub(&s.endpoint(), Duration::from_secs(3600)),
        RegistrySettings::default(),
    );
    let again = restarted.resolve(FINE_TUNE).await.unwrap();
    assert_eq!(*again, *spec);
    assert_eq!(s.requests(), after_first, "answered from disk");
    // Entries older than the limit are read from the Hub again.
    let strict = Registry::new(
        cached_hub(&s.endpoint(), Duration::ZERO),
        RegistrySettings::default(),
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    strict.resolve(FINE_TUNE).await.unwrap();
    assert!(s.requests() > after_first);
    // Another Hub is another key.
    let elsewhere = Registry::new(
        cached_hub("http://127.0.0.1:1", Duration::from_secs(3600)),
        RegistrySettings::default(),
    );
    assert!(elsewhere.resolve(FINE_TUNE).await.is_err());
}

#[tokio::test]
async fn the_registry_answers_at_once_and_fetches_each_model_once() {
    let s = standin().await;
    let registry = Registry::new(hub(&s.endpoint(), None), RegistrySettings::default());
    let started = Instant::now();
    assert!(matches!(
        registry.lookup("someorg/slow-model"),
        Lookup::Pending { last_error: None }
    ));
    assert!(matches!(registry.lookup(AWQ), Lookup::Pending { .. }));
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "{:?}",
        started.elapsed()
    );
    let spec = registry.resolve(AWQ).await.unwrap();
    assert!(spec.checkpoint.is_some());
    let requests = s.requests();
    for _ in 0..10 {
        assert!(matches!(registry.lookup(AWQ), Lookup::Ready(_)));
    }
    assert_eq!(
        s.requests(),
        requests,
        "a resolved model is not fetched again"
    );
    // A failure is kept with its delay, never as a result.
    let e = registry.resolve("someorg/no-such-model").await.unwrap_err();
    assert!(e.contains("does not exist"), "{e}");
    match registry.lookup("someorg/no-such-model") {
        Lookup::Failed { retry_in, .. } => assert!(retry_in > Duration::ZERO),
        other => panic!("{other:?}"),
    }
    // Bad names are refused without a request and not remembered.
    let before = registry.len();
    assert!(matches!(registry.lookup("no slash"), Lookup::Failed { .. }));
    assert_eq!(registry.len(), before);
}

#[tokio::test]
async fn failures_are_retried_after_their_backoff() {
    let s = standin().await;
    let registry = Registry::new(
        hub(&s.endpoint(), None),
        RegistrySettings {
            backoff_base: Duration::from_millis(20),
            ..RegistrySettings::default()
        },
    );
    registry.resolve("someorg/no-such-model").await.unwrap_err();
    let requests = s.requests();
    tokio::time::sleep(Duration::from_millis(30)).await;
    match registry.lookup("someorg/no-such-model") {
        Lookup::Pending { last_error } => {
            assert!(last_error.unwrap().contains("does not exist"));
        }
        other => panic!("{other:?}"),
    }
    registry.resolve("someorg/no-such-model").await.unwrap_err();
    assert!(s.requests() > requests, "retried");
}

#[tokio::test]
async fn the_cache_is_bounded() {
    let s = standin().await;
    let registry = Registry::new(
        hub(&s.endpoint(), None),
        RegistrySettings {
            capacity: 2,
            ..RegistrySettings::default()
        },
    );
    for repo in [FINE_TUNE, AWQ, FP8] {
        registry.resolve(repo).await.unwrap();
    }
    assert_eq!(registry.len(), 2);
    assert!(matches!(registry.lookup(FP8), Lookup::Ready(_)));
}

#[tokio::test]
async fn a_local_directory_resolves_like_a_repo() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), fixture(AWQ)).unwrap();
    let tensors = tensors(AWQ, Scheme::Awq { group_size: 128 });
    let (header, data_len) = hub_standin::checkpoint::header(&tensors);
    let path = dir.path().join("model.safetensors");
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&header);
    std::fs::write(&path, &bytes).unwrap();
    // Sparse: the data takes no disk.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(bytes.len() as u64 + data_len).unwrap();
    let spec = model_source::resolve(&model_source::LocalDir::new(dir.path()), "local")
        .await
        .unwrap();
    assert_eq!(
        spec.checkpoint.unwrap().total_bytes(),
        stored_bytes(&tensors)
    );
    let missing = tempfile::tempdir().unwrap();
    let e = model_source::resolve(&model_source::LocalDir::new(missing.path()), "x")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no config.json"), "{e}");
}
