//! Summaries of simulation runs: table, JSON, SVG, the published results
//! to compare with, and the lower bounds (LP, GPU sharing).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use microlp::{ComparisonOp, OptimizationDirection, Problem};
use placement::{GpuNeed, MemoryNeed, PodDemand, Policy, model_matches};
use serde::Serialize;

use super::replay::{Cluster, median};
use super::trace::TracePod;
use super::{FamilyResult, Run};

/// Arrived percentages the table reports.
pub const CHECKPOINTS: [usize; 4] = [90, 95, 100, 130];

/// One policy's medians over seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub policy: String,
    pub seeds: usize,
    /// Allocated GPU % at each of [`CHECKPOINTS`].
    pub allocated: Vec<f64>,
    pub unallocated_100: f64,
    pub saturation: f64,
    pub frag_ratio_100: f64,
    pub failed_pods: f64,
    /// Published median unallocated GPU % at 100 % arrived, where known.
    pub published_unallocated_100: Option<f64>,
    /// Median allocated % at every arrived percent 0..=130.
    pub curve: Vec<f64>,
}

/// Published results: (workload family, policy) → allocated % at 100 % arrived per seed.
pub type Published = HashMap<(String, Policy), Vec<f64>>;

/// Reads the FGD artifact's analysis_allo_discrete.csv.
pub fn read_published(path: &Path) -> Result<Published> {
    let file = path.display().to_string();
    let mut r = csv::Reader::from_path(path).with_context(|| format!("cannot open {file}"))?;
    let headers = r
        .headers()
        .with_context(|| format!("{file}: no header"))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (Some(w), Some(p), Some(c100)) = (col("workload"), col("sc_policy"), col("100")) else {
        bail!("{file}: needs columns workload, sc_policy and 100");
    };
    let mut out: Published = HashMap::new();
    for (i, rec) in r.records().enumerate() {
        let rec = rec.with_context(|| format!("{file}: row {}", i + 2))?;
        let policy = match rec.get(p).unwrap_or("") {
            "01-Random" => Policy::Random,
            "04-GpuPacking" => Policy::Packing,
            "05-BestFit" => Policy::BestFit,
            "06-FGD" => Policy::Fgd,
            _ => continue,
        };
        let family = rec
            .get(w)
            .unwrap_or("")
            .trim_start_matches("openb_pod_list_")
            .to_string();
        let v: f64 = rec
            .get(c100)
            .unwrap_or("")
            .parse()
            .with_context(|| format!("{file}: row {}: column 100 is not a number", i + 2))?;
        out.entry((family, policy)).or_default().push(v);
    }
    Ok(out)
}

pub fn summarize(f: &FamilyResult, published: Option<&Published>) -> Vec<Summary> {
    let mut by_policy: BTreeMap<Policy, Vec<&Run>> = BTreeMap::new();
    for r in &f.runs {
        by_policy.entry(r.policy).or_default().push(r);
    }
    by_policy
        .into_iter()
        .map(|(policy, runs)| {
            let at = |x: usize| median(runs.iter().map(|r| r.allocated[x]));
            let curve: Vec<f64> = (0..=130).map(at).collect();
            Summary {
                policy: policy.name().to_string(),
                seeds: runs.len(),
                allocated: CHECKPOINTS.iter().map(|&x| curve[x]).collect(),
                unallocated_100: 100.0 - curve[100],
                saturation: median(runs.iter().map(|r| r.saturation.unwrap_or(f64::NAN))),
                frag_ratio_100: median(runs.iter().map(|r| r.frag_ratio_100.unwrap_or(f64::NAN))),
                failed_pods: median(runs.iter().map(|r| r.failed_pods as f64)),
                published_unallocated_100: published
                    .and_then(|p| p.get(&(f.family.clone(), policy)))
                    .map(|v| 100.0 - median(v.iter().copied())),
                curve,
            }
        })
        .collect()
}

fn num(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{v:.2}")
    }
}

pub fn table(families: &[FamilyResult], published: Option<&Published>) -> String {
    let mut s = String::new();
    for f in families {
        let seeds = f
            .runs
            .iter()
            .map(|r| r.seed)
            .collect::<std::collections::BTreeSet<_>>();
        let _ = writeln!(
            s,
            "workload {} ({} pods in trace; medians over {} seeds)",
            f.family,
            f.pods_in_trace,
            seeds.len()
        );
        let _ = writeln!(
            s,
            "{:<10} {:>8} {:>8} {:>9} {:>9} {:>12} {:>10} {:>9} {:>10}",
            "policy",
            "alloc@90",
            "alloc@95",
            "alloc@100",
            "alloc@130",
            "unalloc@100",
            "saturation",
            "frag@100",
            "published"
        );
        for m in summarize(f, published) {
            let _ = writeln!(
                s,
                "{:<10} {:>8} {:>8} {:>9} {:>9} {:>12} {:>10} {:>9} {:>10}",
                m.policy,
                num(m.allocated[0]),
                num(m.allocated[1]),
                num(m.allocated[2]),
                num(m.allocated[3]),
                num(m.unallocated_100),
                num(m.saturation),
                num(m.frag_ratio_100),
                m.published_unallocated_100
                    .map(num)
                    .unwrap_or_else(|| "-".into()),
            );
        }
        for (name, bounds) in [
            ("LP (fractional)", &f.lp_unallocated),
            ("GPU-sharing", &f.sharing_unallocated),
        ] {
            if bounds.is_empty() {
                continue;
            }
            let _ = writeln!(
                s,
                "{name} lower bound on unallocated @100: median {} (min {}, max {})",
                num(median(bounds.iter().copied())),
                num(bounds.iter().copied().fold(f64::INFINITY, f64::min)),
                num(bounds.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
            );
        }
        s.push('\n');
    }
    s
}

#[derive(Serialize)]
pub struct JsonFamily<'a> {
    pub family: &'a str,
    pub pods_in_trace: usize,
    pub summary: Vec<Summary>,
    pub lp_unallocated_100: &'a [f64],
    pub sharing_unallocated_100: &'a [f64],
    pub runs: &'a [Run],
}

pub fn json<'a>(
    families: &'a [FamilyResult],
    published: Option<&Published>,
) -> Vec<JsonFamily<'a>> {
    families
        .iter()
        .map(|f| JsonFamily {
            family: &f.family,
            pods_in_trace: f.pods_in_trace,
            summary: summarize(f, published),
            lp_unallocated_100: &f.lp_unallocated,
            sharing_unallocated_100: &f.sharing_unallocated,
            runs: &f.runs,
        })
        .collect()
}

/// Line colours of the charts, one per policy.
pub(crate) const COLORS: [&str; 7] = [
    "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d",
];

/// A chart's tick labels (`x_ticks` along x, 0–100 % by 20 along y) and the
/// dashed diagonal where allocated equals arrived.
pub(crate) fn axes(
    s: &mut String,
    x: &dyn Fn(f64) -> f64,
    y: &dyn Fn(f64) -> f64,
    pad: f64,
    x_ticks: impl Iterator<Item = usize>,
) {
    for t in x_ticks {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{t}</text>"#,
            x(t as f64),
            y(0.0) + 15.0
        );
    }
    for t in (0..=100).step_by(20) {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{t}</text>"#,
            pad - 5.0,
            y(t as f64) + 4.0
        );
    }
    let _ = writeln!(
        s,
        r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#ccc" stroke-dasharray="4"/>"##,
        x(0.0),
        y(0.0),
        x(100.0),
        y(100.0)
    );
}

/// Allocated GPU % against arrived GPU % per policy, one chart per workload.
pub fn svg(families: &[FamilyResult]) -> String {
    let (w, h, pad) = (640.0, 360.0, 50.0);
    let total_h = h * families.len().max(1) as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{total_h}" font-family="sans-serif" font-size="12">"#
    );
    for (k, f) in families.iter().enumerate() {
        let y0 = k as f64 * h;
        let x = |a: f64| pad + a / 130.0 * (w - 2.0 * pad);
        let y = |v: f64| y0 + h - pad - v / 100.0 * (h - 2.0 * pad);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" font-size="14">{}: allocated vs arrived GPU (%)</text>"#,
            pad,
            y0 + 20.0,
            f.family
        );
        let _ = writeln!(
            s,
            r##"<rect x="{pad}" y="{}" width="{}" height="{}" fill="none" stroke="#888"/>"##,
            y0 + pad,
            w - 2.0 * pad,
            h - 2.0 * pad
        );
        axes(&mut s, &x, &y, pad, (0..=130).step_by(10));
        for (i, m) in summarize(f, None).iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let pts: Vec<String> = m
                .curve
                .iter()
                .enumerate()
                .filter(|(_, v)| !v.is_nan())
                .map(|(a, v)| format!("{:.1},{:.1}", x(a as f64), y(*v)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                pts.join(" ")
            );
            let ly = y0 + pad + 15.0 + 15.0 * i as f64;
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{ly}" fill="{color}">{} ({:.2} % unallocated @100)</text>"#,
                pad + 10.0,
                m.policy,
                m.unallocated_100
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

/// The most GPU (in thousandths) that pods arrived by 100 % could hold if
/// they could be split across nodes of a type, respecting each node type's
/// GPUs, CPU and memory in total and each pod's fit on one node; returned as
/// the unallocated GPU % it leaves. No real placement can do better.
pub fn lp_bound(
    cluster: &Cluster,
    pods: &[TracePod],
    demands: &[PodDemand],
    order: &[usize],
) -> Result<f64> {
    let cap = cluster.gpus * 1000;
    // Pods arrived by 100 %, grouped by demand.
    let mut arrived = 0u64;
    let mut classes: HashMap<&PodDemand, u64> = HashMap::new();
    for &i in order {
        if arrived + pods[i].total_milli() > cap {
            break;
        }
        arrived += pods[i].total_milli();
        *classes.entry(&demands[i]).or_insert(0) += 1;
    }
    // Node types with their counts.
    let mut types: HashMap<(String, usize, u64, u64, u64), u64> = HashMap::new();
    for s in &cluster.specs {
        let model = s
            .gpus
            .first()
            .map(|g| g.product.clone())
            .unwrap_or_default();
        let mem = s.gpus.first().map(|g| g.memory_bytes).unwrap_or(0);
        *types
            .entry((model, s.gpus.len(), s.cpu_milli, s.memory_bytes, mem))
            .or_insert(0) += 1;
    }
    let types: Vec<_> = types.into_iter().collect();
    let mut classes: Vec<_> = classes.into_iter().collect();
    classes.sort_by_key(|(d, _)| (d.cpu_milli, d.memory_bytes, d.gpu_count()));
    let mut lp = Problem::new(OptimizationDirection::Maximize);
    let mut per_type: Vec<[Vec<(microlp::Variable, f64)>; 3]> =
        types.iter().map(|_| Default::default()).collect();
    for (d, count) in &classes {
        let mut row = Vec::new();
        for (t, ((model, gpus, cpu, mem, gpu_mem), _)) in types.iter().enumerate() {
            let (n_gpu, milli) = match d.containers.first().map(|c| &c.gpu) {
                None => (0u64, 0u64),
                Some(GpuNeed::Gpus { count, memory, .. }) => {
                    let m = match memory {
                        MemoryNeed::Whole => 1000,
                        MemoryNeed::Milli(m) => (*m).min(1000) as u64,
                        MemoryNeed::Bytes(b) => {
                            (*b as u128 * 1000).div_ceil(*gpu_mem as u128) as u64
                        }
                    };
                    (*count as u64, m)
                }
                Some(GpuNeed::Mig { .. }) => continue,
            };
            let allowed = d.allowed_models.is_empty()
                || d.allowed_models.iter().any(|a| model_matches(a, model));
            if !allowed
                || n_gpu > *gpus as u64
                || milli > 1000
                || d.cpu_milli > *cpu
                || d.memory_bytes > *mem
            {
                continue;
            }
            let gpu = (n_gpu * milli) as f64;
            let v = lp.add_var(gpu, (0.0, *count as f64));
            row.push((v, 1.0));
            per_type[t][0].push((v, gpu));
            per_type[t][1].push((v, d.cpu_milli as f64));
            per_type[t][2].push((v, d.memory_bytes as f64 / (1u64 << 20) as f64));
        }
        if !row.is_empty() {
            lp.add_constraint(&row, ComparisonOp::Le, *count as f64);
        }
    }
    for (t, ((_, gpus, cpu, mem, _), n)) in types.iter().enumerate() {
        let n = *n as f64;
        let limits = [
            *gpus as f64 * 1000.0 * n,
            *cpu as f64 * n,
            (*mem >> 20) as f64 * n,
        ];
        for (k, limit) in limits.iter().enumerate() {
            if !per_type[t][k].is_empty() {
                lp.add_constraint(&per_type[t][k], ComparisonOp::Le, *limit);
            }
        }
    }
    match lp.solve().map_err(|e| anyhow::anyhow!("LP bound: {e}"))? {
        microlp::SolveOutcome::Solution(sol) => {
            Ok((100.0 * (cap as f64 - sol.objective()) / cap as f64).max(0.0))
        }
        microlp::SolveOutcome::Interrupted(_) => {
            bail!("LP bound: the solver stopped before a solution")
        }
    }
}

/// A lower bound on the unallocated GPU % at 100 % arrived that counts what
/// the LP bound ignores: pods share a GPU only if their shares fit in it.
///
/// A share of more than half a GPU takes a GPU of its own, and what it
/// leaves there (its gap) holds only shares no larger. Placed, such shares
/// leave their gaps less what smaller shares fill; every placed pod's GPUs
/// are inside the cluster, so that waste is unallocated. Not placed, a share
/// is unallocated itself. The bound is the least, over how many of each
/// large share are placed and how the smaller ones fill the gaps (both
/// relaxed to fractions, an LP), of the larger of the two. CPU, host memory,
/// GPU models and waste among small shares are ignored, so it stays a bound.
/// `None` when a share is in bytes (its size then depends on the GPU).
pub fn sharing_bound(
    cluster: &Cluster,
    pods: &[TracePod],
    demands: &[PodDemand],
    order: &[usize],
) -> Result<Option<f64>> {
    let cap = cluster.gpus * 1000;
    let mut arrived = 0u64;
    let mut shares: BTreeMap<u64, u64> = BTreeMap::new();
    for &i in order {
        if arrived + pods[i].total_milli() > cap {
            break;
        }
        arrived += pods[i].total_milli();
        for c in &demands[i].containers {
            match c.gpu {
                GpuNeed::Gpus {
                    count,
                    memory: MemoryNeed::Milli(m),
                    ..
                } if m < 1000 => *shares.entry(m as u64).or_insert(0) += count as u64,
                GpuNeed::Gpus {
                    memory: MemoryNeed::Bytes(_),
                    ..
                } => return Ok(None),
                _ => {}
            }
        }
    }
    let waste = gap_bound(&shares, cap - arrived)?;
    Ok(Some(100.0 * waste / cap as f64))
}

/// The bound of [`sharing_bound`] in thousandths, for shares of one GPU
/// (size → count) and `unarrived` thousandths of capacity no pod arrived for.
fn gap_bound(shares: &BTreeMap<u64, u64>, unarrived: u64) -> Result<f64> {
    let mut lp = Problem::new(OptimizationDirection::Minimize);
    let bound = lp.add_var(1.0, (0.0, f64::INFINITY));
    // Placed count per large share size.
    let large: Vec<(u64, u64, microlp::Variable)> = shares
        .iter()
        .filter(|&(&s, _)| s > 500)
        .map(|(&s, &n)| (s, n, lp.add_var(0.0, (0.0, n as f64))))
        .collect();
    // Thousandths of each small share size put into each large one's gaps.
    let mut fills = Vec::new();
    for (&s, &n) in shares.iter().filter(|&(&s, _)| s <= 500) {
        let into: Vec<(usize, microlp::Variable)> = large
            .iter()
            .enumerate()
            .filter(|(_, (l, _, _))| s <= 1000 - l)
            .map(|(g, _)| (g, lp.add_var(0.0, (0.0, f64::INFINITY))))
            .collect();
        if !into.is_empty() {
            let row: Vec<_> = into.iter().map(|&(_, y)| (y, 1.0)).collect();
            lp.add_constraint(&row, ComparisonOp::Le, (s * n) as f64);
        }
        fills.extend(into);
    }
    // Not placed: bound ≥ unarrived + Σ (count − placed) × size.
    let mut row = vec![(bound, 1.0)];
    row.extend(large.iter().map(|&(s, _, x)| (x, s as f64)));
    let all: u64 = large.iter().map(|&(s, n, _)| s * n).sum();
    lp.add_constraint(&row, ComparisonOp::Ge, (unarrived + all) as f64);
    // Placed: bound ≥ Σ placed × gap − filled.
    let mut row = vec![(bound, 1.0)];
    row.extend(large.iter().map(|&(s, _, x)| (x, -((1000 - s) as f64))));
    row.extend(fills.iter().map(|&(_, y)| (y, 1.0)));
    lp.add_constraint(&row, ComparisonOp::Ge, 0.0);
    // A gap holds at most its size.
    for (g, &(s, _, x)) in large.iter().enumerate() {
        let mut row: Vec<_> = fills
            .iter()
            .filter(|(into, _)| *into == g)
            .map(|&(_, y)| (y, 1.0))
            .collect();
        row.push((x, -((1000 - s) as f64)));
        lp.add_constraint(&row, ComparisonOp::Le, 0.0);
    }
    match lp
        .solve()
        .map_err(|e| anyhow::anyhow!("GPU-sharing bound: {e}"))?
    {
        microlp::SolveOutcome::Solution(sol) => Ok(sol.objective().max(0.0)),
        microlp::SolveOutcome::Interrupted(_) => {
            bail!("GPU-sharing bound: the solver stopped before a solution")
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn bound(shares: &[(u64, u64)], unarrived: u64) -> f64 {
        gap_bound(&shares.iter().copied().collect(), unarrived).unwrap()
    }

    #[test]
    fn gaps_no_share_fills_are_unallocated_or_their_pods_are() {
        // Ten 0.81 shares alone: placing x leaves 190 each, dropping the
        // rest leaves 810 each; they meet at x = 8.1.
        assert!((bound(&[(810, 10)], 0) - 1539.0).abs() < 1e-6);
        // 0.45 shares are too large for the 0.4 gaps of 0.6 shares.
        assert!((bound(&[(600, 4), (450, 4)], 0) - 960.0).abs() < 1e-6);
        // Capacity no pod arrived for is unallocated too.
        assert!((bound(&[(300, 3)], 250) - 250.0).abs() < 1e-6);
    }

    #[test]
    fn filled_gaps_cost_nothing() {
        assert!(bound(&[(810, 10), (190, 10)], 0).abs() < 1e-6);
        assert!(bound(&[(600, 4), (400, 2), (200, 4)], 0).abs() < 1e-6);
        assert!(bound(&[], 0).abs() < 1e-6);
    }
}
