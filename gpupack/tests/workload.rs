//! `gpupack simulate --workload`: the shipped examples, placement on links,
//! bad input and unplaceable deployments, through the binary.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn gpupack(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gpupack"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("workloads")
        .join(name)
        .display()
        .to_string()
}

/// A workload file in a fresh temporary directory.
struct TempFile {
    dir: PathBuf,
    path: PathBuf,
}

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let dir =
            std::env::temp_dir().join(format!("gpupack-workload-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        TempFile { dir, path }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn json_run(args: &[&str]) -> Value {
    let mut all = vec!["simulate", "--format", "json"];
    all.extend_from_slice(args);
    let (ok, out, err) = gpupack(&all);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn no_input_runs_the_built_in_mixed_fleet_with_every_policy() {
    let v = json_run(&["--seeds", "42-43"]);
    assert!(v["file"].as_str().unwrap().contains("mixed-fleet.yaml"));
    let summary = v["summary"].as_array().unwrap();
    assert_eq!(summary.len(), 7);
    assert_eq!(v["runs"].as_array().unwrap().len(), 14);
    for s in summary {
        let placed = s["placed"].as_f64().unwrap();
        assert!(placed > 0.0 && placed <= s["pods"].as_f64().unwrap(), "{s}");
        assert!(s["allocated_gib"].as_f64().unwrap() <= s["capacity_gib"].as_f64().unwrap());
        assert!(s["stranded_gib"].as_f64().unwrap() <= s["free_gib"].as_f64().unwrap() + 1e-9);
    }
    // The MIG deployments land on MIG instances.
    let mig: Vec<&Value> = v["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| !d["mig_profile"].is_null())
        .collect();
    assert_eq!(mig.len(), 3);
    let gpupack = summary.iter().find(|s| s["policy"] == "gpupack").unwrap();
    for d in mig {
        let name = d["name"].as_str().unwrap();
        assert_eq!(
            gpupack["placed_by_deployment"][name].as_f64(),
            d["replicas"].as_f64(),
            "{name}"
        );
    }
}

#[test]
fn both_examples_parse_and_replay_as_tables() {
    for name in ["mixed-fleet.yaml", "h100-large-tp.yaml"] {
        let path = example(name);
        let (ok, out, err) = gpupack(&[
            "simulate",
            "--workload",
            &path,
            "--seeds",
            "42",
            "--policy",
            "gpupack,fgd,first-fit",
        ]);
        assert!(ok, "{name}: {err}");
        assert!(out.contains(name) && out.contains("deployments:"), "{out}");
        for p in ["gpupack", "fgd", "first-fit"] {
            assert!(out.lines().any(|l| l.trim_start().starts_with(p)), "{out}");
        }
        assert!(!err.contains("unplaceable"), "{name}: {err}");
    }
}

#[test]
fn svg_draws_one_curve_per_policy() {
    let f = TempFile::new("svg", "");
    let svg = f.dir.join("out.svg");
    let (ok, _, err) = gpupack(&[
        "simulate",
        "--seeds",
        "1",
        "--policy",
        "gpupack,spread",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
    assert_eq!(text.matches("<polyline").count(), 2);
}

const TWO_NODES: &str = "
nodeTypes:
  - name: pcie
    count: 1
    gpu: A100-80GB
    gpus: 4
    interconnect: { kind: pcie, gpusPerSwitch: 2, sockets: 2 }
  - name: nvl
    count: 1
    gpu: A100-80GB
    gpus: 8
    interconnect: { kind: nvlink, groupSize: 4, sockets: 2 }
deployments:
  - name: llama-70b
    model: meta-llama/Llama-3.1-70B-Instruct
    tensorParallelSize: 4
    maxModelLen: 8192
    maxNumSeqs: 8
    replicas: 2
";

/// On a node with two 4-GPU NVLink islands, every policy keeps each TP-4
/// server inside an island; with a PCIe node listed first, `gpupack` still
/// takes the NVLink node for both.
#[test]
fn tensor_parallel_pods_land_on_nvlink_when_available() {
    let one_node = {
        let start = TWO_NODES.find("  - name: nvl").unwrap();
        format!("nodeTypes:\n{}", &TWO_NODES[start..])
    };
    let f = TempFile::new("islands", &one_node);
    let v = json_run(&["--workload", f.path(), "--seeds", "1-3"]);
    for r in v["runs"].as_array().unwrap() {
        assert_eq!(r["placed"], 2, "{r}");
        assert_eq!(r["tp_by_link"]["nvlink"], 2, "{r}");
    }
    let f = TempFile::new("two-nodes", TWO_NODES);
    let v = json_run(&[
        "--workload",
        f.path(),
        "--seeds",
        "1-5",
        "--policy",
        "gpupack,first-fit",
    ]);
    for r in v["runs"].as_array().unwrap() {
        if r["policy"] == "gpupack" {
            assert_eq!(r["tp_by_link"]["nvlink"], 2, "{r}");
        } else {
            // First-fit takes the PCIe node first: its 4 GPUs span sockets.
            assert_eq!(r["tp_by_link"]["cross-socket"], 1, "{r}");
        }
    }
}

/// A link bound keeps a server's GPUs on one PCIe switch; one that no node
/// can meet makes the deployment unplaceable.
#[test]
fn max_link_bounds_the_gpus_a_server_spans() {
    let text = "
nodeTypes:
  - name: pcie
    count: 2
    gpu: L40S
    gpus: 4
    interconnect: { kind: pcie, gpusPerSwitch: 2, sockets: 2 }
deployments:
  - name: pair
    model: Qwen2.5-7B
    tensorParallelSize: 2
    maxModelLen: 8192
    maxNumSeqs: 4
    maxLink: pcie-switch
    replicas: 3
  - name: quad
    model: Qwen2.5-7B
    tensorParallelSize: 4
    maxModelLen: 8192
    maxNumSeqs: 4
    maxLink: numa
    replicas: 1
";
    let f = TempFile::new("maxlink", text);
    let v = json_run(&["--workload", f.path(), "--seeds", "1-3"]);
    for s in v["summary"].as_array().unwrap() {
        assert_eq!(s["tp_by_link"]["pcie-switch"], 3.0, "{s}");
        assert_eq!(s["failed_by_reason"]["fits-no-node"], 1.0, "{s}");
    }
    let why = v["deployments"][1]["unplaceable"].as_str().unwrap();
    assert!(why.contains("on one NUMA node"), "{why}");
}

#[test]
fn unplaceable_deployment_is_reported_and_the_rest_is_placed() {
    let text = "
nodeTypes:
  - name: l40s
    count: 2
    gpu: L40S
    gpus: 4
    interconnect: { kind: pcie, sockets: 2 }
deployments:
  - name: small
    model: Qwen2.5-7B
    maxModelLen: 4096
    maxNumSeqs: 4
    replicas: 3
  - name: huge
    model: meta-llama/Llama-3.1-70B-Instruct
    maxModelLen: 8192
    replicas: 2
";
    let f = TempFile::new("unplaceable", text);
    let (ok, out, err) = gpupack(&["simulate", "--workload", f.path(), "--seeds", "1"]);
    assert!(ok, "{err}");
    assert!(
        err.contains(f.path())
            && err.contains("deployments[1] (huge)")
            && err.contains("unplaceable"),
        "{err}"
    );
    assert!(err.contains("tensorParallelSize 4 would fit"), "{err}");
    assert!(out.contains("UNPLACEABLE"), "{out}");
    let v = json_run(&["--workload", f.path(), "--seeds", "1"]);
    let d = &v["deployments"][1];
    assert!(
        d["unplaceable"].as_str().unwrap().contains("44.4 GiB"),
        "{d}"
    );
    for s in v["summary"].as_array().unwrap() {
        assert_eq!(s["placed"], 3.0, "{s}");
        assert_eq!(s["failed_by_reason"]["fits-no-node"], 2.0, "{s}");
    }
}

/// Runs a bad file; returns the error message.
fn rejected(name: &str, text: &str) -> (String, String) {
    let f = TempFile::new(name, text);
    let (ok, out, err) = gpupack(&["simulate", "--workload", f.path(), "--seeds", "1"]);
    assert!(!ok, "{name} was accepted: {out}");
    assert!(out.is_empty(), "{name} printed a report: {out}");
    assert!(
        err.contains(f.path()),
        "{name}: the file is not named: {err}"
    );
    (err, f.path().to_string())
}

const NODE: &str = "
nodeTypes:
  - name: h100
    count: 1
    gpu: H100-80GB
    gpus: 8
    interconnect: { kind: nvswitch }
";

#[test]
fn bad_inputs_name_file_line_and_field() {
    let (err, _) = rejected(
        "unknown-model",
        &format!("{NODE}deployments:\n  - {{ name: a, model: Llama-3.1-9B, replicas: 1 }}\n"),
    );
    assert!(
        err.contains(":9: deployments[0] (a).model: unknown model \"Llama-3.1-9B\"")
            && err.contains("Llama-3.1-8B"),
        "{err}"
    );
    let (err, _) = rejected(
        "tp-too-large",
        &format!(
            "{NODE}deployments:\n  - {{ name: big, model: Llama-3.1-405B, tensorParallelSize: 16, replicas: 1 }}\n"
        ),
    );
    assert!(
        err.contains("deployments[0] (big).tensorParallelSize: 16 GPUs")
            && err.contains("no node type has more than 8 (h100)"),
        "{err}"
    );
    let (err, _) = rejected(
        "zero-gpus",
        &format!(
            "{}deployments:\n  - {{ name: a, model: Llama-3.1-8B, replicas: 1 }}\n",
            NODE.replace("gpus: 8", "gpus: 0")
        ),
    );
    assert!(
        err.contains(":3: nodeTypes[0] (h100).gpus: a node type needs at least 1 GPU"),
        "{err}"
    );
    let (err, _) = rejected(
        "unknown-field",
        &format!(
            "{NODE}deployments:\n  - name: a\n    model: Llama-3.1-8B\n    replicas: 1\n    tensorParalelSize: 2\n"
        ),
    );
    assert!(
        err.contains(":12: deployments[0].tensorParalelSize: unknown field `tensorParalelSize`"),
        "{err}"
    );
    let (err, _) = rejected(
        "bad-kind",
        &format!(
            "{}deployments:\n  - {{ name: a, model: Llama-3.1-8B, replicas: 1 }}\n",
            NODE.replace("nvswitch", "infiniband")
        ),
    );
    assert!(
        err.contains("nodeTypes[0].interconnect.kind") && err.contains("infiniband"),
        "{err}"
    );
    let (err, _) = rejected(
        "heads",
        &format!(
            "{NODE}deployments:\n  - {{ name: a, model: Llama-3.1-8B, tensorParallelSize: 3, replicas: 1 }}\n"
        ),
    );
    assert!(
        err.contains("deployments[0] (a).tensorParallelSize") && err.contains("attention heads"),
        "{err}"
    );
    let (err, _) = rejected(
        "mig-missing",
        &format!(
            "{NODE}deployments:\n  - {{ name: a, model: Qwen2.5-0.5B, migProfile: 1g.10gb, replicas: 1 }}\n"
        ),
    );
    assert!(
        err.contains("deployments[0] (a).migProfile") && err.contains("the fleet has: none"),
        "{err}"
    );
    let (err, _) = rejected(
        "dtype",
        &format!(
            "{NODE}deployments:\n  - {{ name: a, model: Llama-3.1-8B, dtype: int3, replicas: 1 }}\n"
        ),
    );
    assert!(
        err.contains("deployments[0] (a).dtype: unknown dtype \"int3\""),
        "{err}"
    );
    let (err, _) = rejected(
        "zero-replicas",
        &format!("{NODE}deployments:\n  - {{ name: a, model: Llama-3.1-8B, replicas: 0 }}\n"),
    );
    assert!(
        err.contains("deployments[0] (a).replicas: must be at least 1"),
        "{err}"
    );
    let (err, _) = rejected("yaml", "nodeTypes: [\n");
    assert!(err.contains("error:"), "{err}");
}

#[test]
fn trace_only_flags_are_refused_with_a_workload() {
    let (ok, _, err) = gpupack(&["simulate", "--lp", "--seeds", "1"]);
    assert!(
        !ok && err.contains("--lp applies to the Alibaba trace"),
        "{err}"
    );
    let (ok, _, err) = gpupack(&[
        "simulate",
        "--workload",
        &example("mixed-fleet.yaml"),
        "--trace-nodes",
        "x.csv",
    ]);
    assert!(!ok && err.contains("not both"), "{err}");
}
