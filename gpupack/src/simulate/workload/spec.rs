//! The workload file as written: node types and LLM deployments. Parsing is
//! strict (unknown fields are errors); what the values mean is checked in
//! `fleet` and `deploy`, which name the file, line and field of any fault.

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::Invalid;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadFile {
    /// Free text shown above the report.
    #[serde(default)]
    pub description: Option<String>,
    pub node_types: Vec<Spanned<NodeType>>,
    pub deployments: Vec<Spanned<DeploymentSpec>>,
}

/// `count` identical nodes.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeType {
    /// Node names are `<name>-0`, `<name>-1`, ...
    pub name: String,
    pub count: u32,
    /// GPU product; a name the estimator knows (`gpupack estimate
    /// --list-gpus`) gives the memory, otherwise give `gpuMemoryGiB`.
    pub gpu: String,
    /// GPUs per node.
    pub gpus: u32,
    #[serde(default, rename = "gpuMemoryGiB")]
    pub gpu_memory_gib: Option<f64>,
    pub interconnect: Interconnect,
    #[serde(default)]
    pub mig: Option<MigLayout>,
    /// Allocatable CPU cores; omit on nodes and deployments to leave CPU out.
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Allocatable host memory.
    #[serde(default, rename = "memoryGiB")]
    pub memory_gib: Option<f64>,
    /// Containers that may share one GPU (the device plugin's time-slicing
    /// replicas); defaults to the device plugin's default.
    #[serde(default)]
    pub slices_per_gpu: Option<u32>,
}

/// How a node's GPUs are connected.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Interconnect {
    pub kind: InterconnectKind,
    /// `nvlink` only: `mesh` (every pair of a group linked) or `pairs`
    /// (GPUs 0-1, 2-3, ... bridged); default `mesh`.
    #[serde(default)]
    pub nvlink: Option<NvlinkLayout>,
    /// `nvlink` mesh only: GPUs per NVLink group, in index order; default all.
    #[serde(default)]
    pub group_size: Option<u32>,
    /// GPUs behind one PCIe switch, in index order; default 1 (none share).
    #[serde(default)]
    pub gpus_per_switch: Option<u32>,
    /// CPU sockets (one NUMA node each) the GPUs are split over evenly, in
    /// index order; default 1.
    #[serde(default)]
    pub sockets: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InterconnectKind {
    /// Every GPU on one NVSwitch fabric.
    Nvswitch,
    /// Direct NVLinks between some pairs; the rest over PCIe.
    Nvlink,
    /// PCIe only.
    Pcie,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NvlinkLayout {
    Mesh,
    Pairs,
}

/// MIG partitions, the same on every GPU listed.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MigLayout {
    /// GPU indexes in MIG mode; default all.
    #[serde(default)]
    pub gpus: Option<Vec<u32>>,
    /// Instances per GPU by profile, e.g. `[3g.40gb, 2g.20gb, 1g.10gb, 1g.10gb]`.
    pub instances: Vec<String>,
}

/// `replicas` identical LLM servers. Field names follow the pod annotations
/// (`gpupack.io/model`, `gpupack.io/tensor-parallel-size`, ...).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentSpec {
    pub name: String,
    /// Catalog name or Hugging Face id (`gpupack estimate --list-models`).
    pub model: String,
    pub replicas: u32,
    #[serde(default)]
    pub tensor_parallel_size: Option<u32>,
    #[serde(default)]
    pub max_model_len: Option<u64>,
    /// Concurrency: full-length sequences the KV cache holds at once.
    #[serde(default)]
    pub max_num_seqs: Option<u64>,
    /// A KV-cache budget in tokens, instead of `maxNumSeqs`.
    #[serde(default)]
    pub kv_cache_tokens: Option<u64>,
    #[serde(default)]
    pub dtype: Option<String>,
    #[serde(default)]
    pub quantization: Option<String>,
    #[serde(default)]
    pub kv_cache_dtype: Option<String>,
    /// vllm (default), sglang or tgi.
    #[serde(default)]
    pub engine: Option<String>,
    /// Serve from a MIG instance of this profile (tensor-parallel size 1).
    #[serde(default)]
    pub mig_profile: Option<String>,
    /// GPU models the pods accept (matched by word: `A100` matches
    /// `A100-80GB`); default any.
    #[serde(default)]
    pub gpu_models: Option<Vec<String>>,
    /// Worst link allowed between a pod's GPUs; default any.
    #[serde(default)]
    pub max_link: Option<MaxLink>,
    #[serde(default)]
    pub cpus: Option<f64>,
    #[serde(default, rename = "memoryGiB")]
    pub memory_gib: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MaxLink {
    Nvswitch,
    Nvlink,
    PcieSwitch,
    Numa,
    Any,
}

/// Parses the text of a workload file; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<WorkloadFile, Invalid> {
    // serde-saphyr's error carries the line; serde_path_to_error the field.
    let mut path: Option<String> = None;
    let parsed = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize::<_, WorkloadFile>(de).map_err(|e| {
            // `Spanned` adds a `value` level the file does not have.
            path = Some(e.path().to_string().replace(".value", ""));
            e.into_inner()
        })
    });
    parsed.map_err(|e| Invalid {
        file: file.to_string(),
        line: e.location().map(|l| l.line()).unwrap_or(0),
        field: path
            .filter(|p| !p.is_empty() && p != ".")
            .unwrap_or_default(),
        problem: first_line(&e.to_string()),
    })
}

/// serde-saphyr prefixes the location and renders a source snippet after
/// the message; the line is reported on its own.
fn first_line(msg: &str) -> String {
    let line = msg.lines().next().unwrap_or(msg).trim();
    let line = line.strip_prefix("error: ").unwrap_or(line);
    let line = match line.split_once(": ") {
        Some((at, rest)) if at.starts_with("line ") && at.contains(" column ") => rest,
        _ => line,
    };
    line.trim_end_matches(':').to_string()
}
