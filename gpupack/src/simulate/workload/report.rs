//! Summaries of a workload's runs: medians over seeds per policy, as a
//! table, JSON or an SVG of allocated against requested GPU memory.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use placement::{LinkLevel, Policy};
use serde::Serialize;

use super::deploy::Deployment;
use super::fleet::NodeKind;
use super::replay::{Run, level_name};
use super::{GIB, Workload, gib};
use crate::simulate::replay::median;
use crate::simulate::report::{COLORS, axes};

/// One policy's medians over seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub policy: Policy,
    pub seeds: usize,
    pub pods: usize,
    pub placed: f64,
    pub gpus: u64,
    pub gpus_used: f64,
    pub capacity_gib: f64,
    /// GPU memory all pods ask for (each GPU's request times its GPUs).
    pub requested_gib: f64,
    pub allocated_gib: f64,
    /// Allocated, % of the fleet's grantable GPU memory.
    pub allocated_pct: f64,
    pub free_gib: f64,
    pub stranded_gib: f64,
    /// Stranded, % of the fleet's grantable GPU memory.
    pub stranded_pct: f64,
    pub tp_by_link: BTreeMap<&'static str, f64>,
    pub failed: f64,
    pub failed_by_reason: BTreeMap<&'static str, f64>,
    pub placed_by_deployment: BTreeMap<String, f64>,
    /// Allocated % at each whole percent of requested memory arrived.
    pub curve: Vec<f64>,
}

fn gib_f(bytes: u64) -> f64 {
    bytes as f64 / GIB as f64
}

pub fn summarize(w: &Workload, runs: &[Run]) -> Vec<Summary> {
    let capacity = w.fleet.capacity_bytes().max(1);
    let requested: u64 = w
        .deployments
        .iter()
        .map(|d| d.pod_bytes() * u64::from(d.replicas))
        .sum();
    let mut by_policy: Vec<(Policy, Vec<&Run>)> = Vec::new();
    for r in runs {
        match by_policy.iter_mut().find(|(p, _)| *p == r.policy) {
            Some((_, v)) => v.push(r),
            None => by_policy.push((r.policy, vec![r])),
        }
    }
    by_policy
        .into_iter()
        .map(|(policy, runs)| {
            let med = |f: &dyn Fn(&Run) -> f64| median(runs.iter().map(|r| f(r)));
            let reasons: BTreeSet<&'static str> = runs
                .iter()
                .flat_map(|r| r.failed_by_reason.keys().copied())
                .collect();
            let points = runs.iter().map(|r| r.curve.len()).max().unwrap_or(0);
            Summary {
                policy,
                seeds: runs.len(),
                pods: runs.first().map(|r| r.pods).unwrap_or(0),
                placed: med(&|r| r.placed as f64),
                gpus: w.fleet.gpu_count(),
                gpus_used: med(&|r| r.gpus_used as f64),
                capacity_gib: gib_f(capacity),
                requested_gib: gib_f(requested),
                allocated_gib: med(&|r| gib_f(r.allocated_bytes)),
                allocated_pct: med(&|r| 100.0 * r.allocated_bytes as f64 / capacity as f64),
                free_gib: med(&|r| gib_f(r.free_bytes)),
                stranded_gib: med(&|r| gib_f(r.stranded_bytes)),
                stranded_pct: med(&|r| 100.0 * r.stranded_bytes as f64 / capacity as f64),
                tp_by_link: LinkLevel::ALL
                    .iter()
                    .map(|&l| {
                        let name = level_name(l);
                        (
                            name,
                            med(&|r| r.tp_by_link.get(name).copied().unwrap_or(0) as f64),
                        )
                    })
                    .collect(),
                failed: med(&|r| (r.pods - r.placed) as f64),
                failed_by_reason: reasons
                    .into_iter()
                    .map(|k| {
                        (
                            k,
                            med(&|r| r.failed_by_reason.get(k).copied().unwrap_or(0) as f64),
                        )
                    })
                    .collect(),
                placed_by_deployment: w
                    .deployments
                    .iter()
                    .enumerate()
                    .map(|(i, d)| {
                        (
                            d.name.clone(),
                            med(&|r| r.placed_by_deployment.get(i).copied().unwrap_or(0) as f64),
                        )
                    })
                    .collect(),
                curve: (0..points)
                    .map(|x| {
                        median(
                            runs.iter()
                                .map(|r| r.curve.get(x).or(r.curve.last()).copied().unwrap_or(0.0)),
                        )
                    })
                    .collect(),
            }
        })
        .collect()
}

/// A count that may be a median of an even number of runs.
fn count(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Seeds as `42-51` where consecutive.
fn seed_list(runs: &[&Run]) -> String {
    let seeds: BTreeSet<u64> = runs.iter().map(|r| r.seed).collect();
    let v: Vec<u64> = seeds.into_iter().collect();
    match (v.first(), v.last()) {
        (Some(a), Some(b)) if v.len() > 2 && b - a + 1 == v.len() as u64 => format!("{a}-{b}"),
        _ => v.iter().map(u64::to_string).collect::<Vec<_>>().join(","),
    }
}

fn mig_words(k: &NodeKind) -> String {
    if k.mig_gpus.is_empty() {
        return "-".into();
    }
    let gpus: Vec<String> = k.mig_gpus.iter().map(u32::to_string).collect();
    let inst: Vec<&str> = k.mig_instances.iter().map(|(p, _)| p.as_str()).collect();
    format!(
        "GPU{} {}: {}",
        if gpus.len() == 1 { "" } else { "s" },
        gpus.join(","),
        inst.join(" ")
    )
}

fn deployment_note(d: &Deployment) -> String {
    match (&d.unplaceable, &d.mig_profile) {
        (Some(why), _) => format!("UNPLACEABLE: {why}"),
        (None, Some(p)) => format!("MIG {p} ({} GiB)", gib(d.request_bytes)),
        (None, None) => String::new(),
    }
}

pub fn table(w: &Workload, summaries: &[Summary], runs: &[Run]) -> String {
    let mut s = String::new();
    let f = &w.fleet;
    let _ = writeln!(s, "workload {}", w.file);
    if let Some(d) = &w.description {
        for line in d.trim().lines() {
            let _ = writeln!(s, "  {}", line.trim());
        }
    }
    let _ = writeln!(
        s,
        "\nfleet: {} nodes, {} GPUs, {} GiB of GPU memory to grant",
        f.specs.len(),
        f.gpu_count(),
        gib(f.capacity_bytes())
    );
    let _ = writeln!(
        s,
        "  {:<14} {:>5} {:>5} {:<16} {:>7}  {:<34} MIG",
        "node type", "nodes", "GPUs", "GPU", "GiB", "interconnect"
    );
    for k in &f.kinds {
        let _ = writeln!(
            s,
            "  {:<14} {:>5} {:>5} {:<16} {:>7}  {:<34} {}",
            k.name,
            k.count,
            k.gpus,
            k.product,
            gib(k.gpu_memory_bytes),
            k.layout,
            mig_words(k)
        );
    }
    let pods: u64 = w.deployments.iter().map(|d| u64::from(d.replicas)).sum();
    let requested: u64 = w
        .deployments
        .iter()
        .map(|d| d.pod_bytes() * u64::from(d.replicas))
        .sum();
    let _ = writeln!(
        s,
        "\ndeployments: {pods} pods asking for {} GiB ({:.1} % of the fleet); GiB per GPU: estimate, and the request in whole GiB",
        gib(requested),
        100.0 * requested as f64 / f.capacity_bytes().max(1) as f64
    );
    let _ = writeln!(
        s,
        "  {:<18} {:<16} {:>3} {:>8} {:>8} {:>8}  note",
        "name", "model", "TP", "estimate", "request", "replicas"
    );
    for d in &w.deployments {
        let _ = writeln!(
            s,
            "  {:<18} {:<16} {:>3} {:>8} {:>8} {:>8}  {}",
            d.name,
            d.model,
            d.tensor_parallel_size,
            gib(d.estimate_bytes),
            gib(d.request_bytes),
            d.replicas,
            deployment_note(d)
        );
    }
    let seeds = summaries.first().map(|m| m.seeds).unwrap_or(0);
    let _ = writeln!(
        s,
        "\nper policy, medians over {seeds} seed{} ({}); stranded: free GPU memory no deployment's pod could use; TP pods by worst link",
        if seeds == 1 { "" } else { "s" },
        seed_list(&runs.iter().collect::<Vec<_>>())
    );
    let _ = writeln!(
        s,
        "  {:<10} {:>9} {:>9} {:>9} {:>7} {:>9} {:>7} {:>8} {:>6} {:>7} {:>4} {:>7}  failed",
        "policy",
        "placed",
        "GPUs",
        "alloc GiB",
        "alloc%",
        "strandGiB",
        "strand%",
        "nvswitch",
        "nvlink",
        "pcie-sw",
        "numa",
        "x-sock"
    );
    for m in summaries {
        let failed = if m.failed_by_reason.is_empty() {
            "0".to_string()
        } else {
            let parts: Vec<String> = m
                .failed_by_reason
                .iter()
                .filter(|(_, v)| **v > 0.0)
                .map(|(k, v)| format!("{k} {}", count(*v)))
                .collect();
            format!("{} ({})", count(m.failed), parts.join(", "))
        };
        let tp = |l: LinkLevel| count(m.tp_by_link.get(level_name(l)).copied().unwrap_or(0.0));
        let _ = writeln!(
            s,
            "  {:<10} {:>9} {:>9} {:>9.1} {:>7.1} {:>9.1} {:>7.2} {:>8} {:>6} {:>7} {:>4} {:>7}  {}",
            m.policy.name(),
            format!("{}/{}", count(m.placed), m.pods),
            format!("{}/{}", count(m.gpus_used), m.gpus),
            m.allocated_gib,
            m.allocated_pct,
            m.stranded_gib,
            m.stranded_pct,
            tp(LinkLevel::NvSwitch),
            tp(LinkLevel::NvLink),
            tp(LinkLevel::PcieSwitch),
            tp(LinkLevel::SameNuma),
            tp(LinkLevel::CrossSocket),
            failed
        );
    }
    s
}

#[derive(Serialize)]
pub struct Json<'a> {
    pub file: &'a str,
    pub description: Option<&'a str>,
    pub fleet: JsonFleet<'a>,
    pub deployments: &'a [Deployment],
    pub seeds: String,
    pub summary: &'a [Summary],
    pub runs: &'a [Run],
}

#[derive(Serialize)]
pub struct JsonFleet<'a> {
    pub nodes: usize,
    pub gpus: u64,
    pub capacity_bytes: u64,
    pub node_types: &'a [NodeKind],
}

pub fn json<'a>(w: &'a Workload, summaries: &'a [Summary], runs: &'a [Run]) -> Json<'a> {
    let refs: Vec<&Run> = runs.iter().collect();
    Json {
        file: &w.file,
        description: w.description.as_deref(),
        fleet: JsonFleet {
            nodes: w.fleet.specs.len(),
            gpus: w.fleet.gpu_count(),
            capacity_bytes: w.fleet.capacity_bytes(),
            node_types: &w.fleet.kinds,
        },
        deployments: &w.deployments,
        seeds: seed_list(&refs),
        summary: summaries,
        runs,
    }
}

/// Allocated against requested GPU memory (% of the fleet's) per policy.
pub fn svg(w: &Workload, summaries: &[Summary]) -> String {
    let (width, height, pad) = (640.0, 380.0, 50.0);
    let x_max = summaries
        .iter()
        .map(|m| m.curve.len().saturating_sub(1))
        .max()
        .unwrap_or(0)
        .max(100)
        .div_ceil(10)
        * 10;
    let x_max = x_max as f64;
    let x = |a: f64| pad + a / x_max * (width - 2.0 * pad);
    let y = |v: f64| height - pad - v / 100.0 * (height - 2.0 * pad);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let title = w.file.replace('&', "&amp;").replace('<', "&lt;");
    let _ = writeln!(
        s,
        r#"<text x="{pad}" y="20" font-size="14">{title}: GPU memory allocated vs requested (% of fleet)</text>"#
    );
    let _ = writeln!(
        s,
        r##"<rect x="{pad}" y="{pad}" width="{}" height="{}" fill="none" stroke="#888"/>"##,
        width - 2.0 * pad,
        height - 2.0 * pad
    );
    let step = if x_max > 150.0 { 20 } else { 10 };
    axes(&mut s, &x, &y, pad, (0..=x_max as usize).step_by(step));
    for (i, m) in summaries.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<String> = m
            .curve
            .iter()
            .enumerate()
            .map(|(a, v)| format!("{:.1},{:.1}", x(a as f64), y(*v)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            pts.join(" ")
        );
        let ly = pad + 15.0 + 15.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{ly}" fill="{color}">{} ({}/{} pods, {:.1} % allocated, {:.2} % stranded)</text>"#,
            pad + 10.0,
            m.policy.name(),
            count(m.placed),
            m.pods,
            m.allocated_pct,
            m.stranded_pct
        );
    }
    s.push_str("</svg>\n");
    s
}
