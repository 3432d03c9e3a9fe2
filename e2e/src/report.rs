//! The demo's report: where each pod went, how full the GPUs are, how
//! fragmented the free memory is, and a picture of memory per GPU.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::view::{ClusterView, worst_link};

const GIB: f64 = (1u64 << 30) as f64;

/// One row of the placement table.
#[derive(Clone, Debug)]
pub struct Row {
    pub pod: String,
    pub node: String,
    pub gpus: String,
    pub memory_gib: String,
    pub link: String,
}

/// The placement table.
pub fn rows(view: &ClusterView) -> Vec<Row> {
    let mut out = Vec::new();
    for pod in &view.pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let Some(node) = node else {
            out.push(Row {
                pod: name,
                node: "(pending)".into(),
                gpus: "-".into(),
                memory_gib: "-".into(),
                link: "-".into(),
            });
            continue;
        };
        let Some(a) = ClusterView::assignment(pod) else {
            continue;
        };
        let mut gpus = Vec::new();
        let mut mem = Vec::new();
        let mut link = "-".to_string();
        for c in &a.containers {
            for g in &c.gpus {
                gpus.push(g.index.to_string());
                mem.push(format!("{:.1}", g.memory_bytes as f64 / GIB));
            }
            for m in &c.mig {
                gpus.push(format!("MIG {}", m.profile));
                mem.push(m.profile.rsplit('.').next().unwrap_or_default().to_string());
            }
            if c.gpus.len() > 1
                && let Some(inv) = view.inventory(&node)
            {
                let idx: Vec<u32> = c.gpus.iter().map(|g| g.index).collect();
                link = worst_link(inv, &idx)
                    .map(|l| format!("{l:?}"))
                    .unwrap_or_default();
            }
        }
        out.push(Row {
            pod: name,
            node,
            gpus: gpus.join(","),
            memory_gib: mem.join(","),
            link,
        });
    }
    out.sort_by(|a, b| (&a.node, &a.pod).cmp(&(&b.node, &b.pod)));
    out
}

/// Per GPU: node, index, product, size and the pods holding memory on it.
#[derive(Clone, Debug)]
pub struct GpuUse {
    pub node: String,
    pub index: u32,
    pub product: String,
    pub size: u64,
    pub healthy: bool,
    pub holders: Vec<(String, u64)>,
}

impl GpuUse {
    pub fn used(&self) -> u64 {
        self.holders.iter().map(|(_, b)| b).sum()
    }
}

pub fn gpu_use(view: &ClusterView) -> Vec<GpuUse> {
    let bookings = view.bookings();
    let mut out = Vec::new();
    for inv in &view.inventories {
        for g in &inv.spec.gpus {
            let mut holders: Vec<(String, u64)> = bookings
                .get(&(inv.spec.node_name.clone(), g.uuid.clone()))
                .cloned()
                .unwrap_or_default();
            for m in &g.mig_instances {
                if let Some(h) = bookings.get(&(inv.spec.node_name.clone(), m.uuid.clone())) {
                    holders.extend(
                        h.iter()
                            .map(|(p, _)| (format!("{p} ({})", m.profile), m.memory_bytes)),
                    );
                }
            }
            out.push(GpuUse {
                node: inv.spec.node_name.clone(),
                index: g.index,
                product: g.product.clone(),
                size: g.memory_bytes,
                healthy: g.health.is_healthy(),
                holders,
            });
        }
    }
    out
}

/// Cluster figures.
#[derive(Clone, Debug, Default)]
pub struct Utilization {
    pub memory_used: u64,
    pub memory_total: u64,
    pub gpus_in_use: usize,
    pub gpus: usize,
    /// Share of the free memory stranded in small pieces: on GPUs with less
    /// than a quarter of their memory free, too little for most servers.
    pub fragmentation: f64,
}

pub fn utilization(gpus: &[GpuUse]) -> Utilization {
    let mut u = Utilization::default();
    let mut free = 0u64;
    let mut stranded = 0u64;
    for g in gpus {
        let used = g.used().min(g.size);
        u.memory_total += g.size;
        u.memory_used += used;
        u.gpus += 1;
        if used > 0 {
            u.gpus_in_use += 1;
        }
        if (g.size - used) * 4 < g.size {
            stranded += g.size - used;
        }
        free += g.size - used;
    }
    u.fragmentation = if free == 0 {
        0.0
    } else {
        stranded as f64 / free as f64
    };
    u
}

/// The text report.
pub fn text(view: &ClusterView) -> String {
    let rows = rows(view);
    let mut s = String::new();
    let w = rows.iter().map(|r| r.pod.len()).max().unwrap_or(3).max(3);
    let _ = writeln!(
        s,
        "{:<w$}  {:<9}  {:<15}  {:<23}  link",
        "pod", "node", "GPUs", "GiB per GPU"
    );
    for r in &rows {
        let _ = writeln!(
            s,
            "{:<w$}  {:<9}  {:<15}  {:<23}  {}",
            r.pod, r.node, r.gpus, r.memory_gib, r.link
        );
    }
    let gpus = gpu_use(view);
    let mut per_node: BTreeMap<&str, Vec<&GpuUse>> = BTreeMap::new();
    for g in &gpus {
        per_node.entry(&g.node).or_default().push(g);
    }
    let _ = writeln!(s);
    for (node, list) in &per_node {
        let owned: Vec<GpuUse> = list.iter().map(|g| (*g).clone()).collect();
        let u = utilization(&owned);
        let _ = writeln!(
            s,
            "{node:<9} {:>6.1}/{:>6.1} GiB ({:>3.0}%), {}/{} GPUs in use",
            u.memory_used as f64 / GIB,
            u.memory_total as f64 / GIB,
            100.0 * u.memory_used as f64 / u.memory_total.max(1) as f64,
            u.gpus_in_use,
            u.gpus
        );
    }
    let u = utilization(&gpus);
    let _ = writeln!(
        s,
        "cluster   {:>6.1}/{:>6.1} GiB ({:.0}%), {}/{} GPUs in use, {:.0}% of free memory stranded (<1/4 of a GPU free)",
        u.memory_used as f64 / GIB,
        u.memory_total as f64 / GIB,
        100.0 * u.memory_used as f64 / u.memory_total.max(1) as f64,
        u.gpus_in_use,
        u.gpus,
        100.0 * u.fragmentation
    );
    s
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An SVG: one row per node, one bar per GPU, filled by pod.
pub fn svg(view: &ClusterView) -> String {
    const PALETTE: [&str; 10] = [
        "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
        "#9c755f", "#bab0ac",
    ];
    let gpus = gpu_use(view);
    let mut per_node: BTreeMap<&str, Vec<&GpuUse>> = BTreeMap::new();
    for g in &gpus {
        per_node.entry(&g.node).or_default().push(g);
    }
    let (bar_w, bar_h, gap, label_w, row_h) = (70.0, 160.0, 12.0, 110.0, 215.0);
    let max_gpus = per_node.values().map(Vec::len).max().unwrap_or(1) as f64;
    let width = label_w + max_gpus * (bar_w + gap) + 20.0;
    let height = per_node.len() as f64 * row_h + 40.0;
    let mut colors: BTreeMap<String, &str> = BTreeMap::new();
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="10">"#
    );
    let _ = writeln!(
        s,
        r#"<text x="10" y="20" font-size="14">GPU memory per node (gpupack demo)</text>"#
    );
    for (row, (node, list)) in per_node.iter().enumerate() {
        let y0 = 40.0 + row as f64 * row_h;
        let _ = writeln!(
            s,
            r#"<text x="10" y="{}" font-size="12">{}</text>"#,
            y0 + bar_h / 2.0,
            escape(node)
        );
        for (i, g) in list.iter().enumerate() {
            let x = label_w + i as f64 * (bar_w + gap);
            let stroke = if g.healthy { "#333" } else { "#d00" };
            let _ = writeln!(
                s,
                r##"<rect x="{x}" y="{y0}" width="{bar_w}" height="{bar_h}" fill="#f4f4f4" stroke="{stroke}"/>"##
            );
            let mut y = y0 + bar_h;
            for (pod, bytes) in &g.holders {
                let h = bar_h * (*bytes as f64 / g.size.max(1) as f64).min(1.0);
                y -= h;
                let n = colors.len();
                let color = *colors
                    .entry(pod.clone())
                    .or_insert(PALETTE[n % PALETTE.len()]);
                let _ = writeln!(
                    s,
                    r#"<rect x="{x}" y="{y:.1}" width="{bar_w}" height="{h:.1}" fill="{color}" stroke="white"><title>{} {:.1} GiB</title></rect>"#,
                    escape(pod),
                    *bytes as f64 / GIB
                );
                if h > 11.0 {
                    let short: String = pod
                        .rsplit('/')
                        .next()
                        .unwrap_or(pod)
                        .chars()
                        .take(12)
                        .collect();
                    let _ = writeln!(
                        s,
                        r#"<text x="{}" y="{:.1}" fill="white">{}</text>"#,
                        x + 3.0,
                        y + 10.0,
                        escape(&short)
                    );
                }
            }
            let _ = writeln!(
                s,
                r#"<text x="{x}" y="{}">GPU {} {:.0}/{:.0} GiB</text>"#,
                y0 + bar_h + 14.0,
                g.index,
                g.used() as f64 / GIB,
                g.size as f64 / GIB
            );
        }
    }
    s.push_str("</svg>\n");
    s
}
