//! Cold vs cached sizing of a model against the Hub stand-in on localhost:
//! a cold resolution reads `config.json`, the safetensors index and every
//! shard's header by range; a cached one is a map lookup; after a restart
//! with the disk cache, a resolution reads one small file.
//!
//! `cargo bench -p model-source --bench resolve [-- --shards N --rounds N]`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hub_standin::checkpoint::{Scheme, llama_tensors};
use hub_standin::{HubStandin, Repo, checkpoint_files};
use model_source::{DiskCache, Hub, HubSettings, Lookup, ModelLookup, Registry, RegistrySettings};

/// A Llama 3.1 70B layout, as the public config describes it.
const CONFIG: &str = r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 8192, "intermediate_size": 28672, "num_attention_heads": 64,
  "num_hidden_layers": 80, "num_key_value_heads": 8, "vocab_size": 128256,
  "max_position_embeddings": 131072, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "rope_scaling": {"factor": 8.0, "rope_type": "llama3"}}"#;

fn arg(name: &str) -> Option<usize> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let shards = arg("--shards").unwrap_or(30);
    let rounds = arg("--rounds").unwrap_or(20);
    let config: serde_json::Value = serde_json::from_str(CONFIG)?;
    let tensors = llama_tensors(&config, Scheme::Bf16);
    let mut repos = BTreeMap::new();
    for i in 0..rounds {
        repos.insert(
            format!("bench/llama-70b-finetune-{i}"),
            Repo::default()
                .file("config.json", CONFIG)
                .files(checkpoint_files(&tensors, shards)),
        );
    }
    let standin = HubStandin::start(repos).await?;
    let disk = tempfile::tempdir()?;
    let settings = HubSettings {
        endpoint: standin.endpoint(),
        token: None,
        revision: "main".into(),
        timeout: Duration::from_secs(10),
        cache: Some(DiskCache::new(
            disk.path(),
            DiskCache::MAX_ENTRIES,
            DiskCache::MAX_AGE,
        )?),
    };
    let registry = Registry::new(Hub::new(settings.clone())?, RegistrySettings::default());
    let mut cold = Vec::new();
    for i in 0..rounds {
        let started = Instant::now();
        registry
            .resolve(&format!("bench/llama-70b-finetune-{i}"))
            .await?;
        cold.push(started.elapsed());
    }
    let requests = standin.requests();
    let mut cached = Vec::new();
    for i in 0..rounds {
        let started = Instant::now();
        for _ in 0..1000 {
            let found = registry.lookup(&format!("bench/llama-70b-finetune-{i}"));
            if !matches!(found, Lookup::Ready(_)) {
                return Err(format!("not cached: {found:?}").into());
            }
        }
        cached.push(started.elapsed() / 1000);
    }
    // A restart: a new registry, the same disk cache.
    let restarted = Registry::new(Hub::new(settings)?, RegistrySettings::default());
    let mut from_disk = Vec::new();
    for i in 0..rounds {
        let started = Instant::now();
        restarted
            .resolve(&format!("bench/llama-70b-finetune-{i}"))
            .await?;
        from_disk.push(started.elapsed());
    }
    if standin.requests() != requests {
        return Err("the restarted registry asked the Hub".into());
    }
    println!(
        "Llama-3.1-70B layout, {} tensors in {shards} shards, localhost Hub stand-in, {rounds} models",
        tensors.len()
    );
    println!(
        "cold (config.json + index + {shards} header range reads): median {:?}, {} requests per model",
        median(cold),
        requests / rounds as u64
    );
    println!("cached lookup: median {:?}", median(cached));
    println!(
        "after a restart, from the disk cache: median {:?}, 0 requests",
        median(from_disk)
    );
    Ok(())
}
