//! Node types turned into placement nodes: GPUs with their memory, NUMA
//! node and MIG instances, and the link level of every GPU pair.

use placement::{
    GpuSpec, Health, LinkLevel, LinkSpec, MAX_GPUS_PER_NODE, MigSpec, NodeSpec, PcieLevel,
};
use proto::resources::{DEFAULT_SLICES_PER_GPU, MAX_SLICES_PER_GPU, MigProfile, mig_request_form};
use serde::Serialize;

use super::spec::{InterconnectKind, NodeType, NvlinkLayout, WorkloadFile};
use super::{GIB, Invalid};

/// Most nodes one workload may describe; keeps a typo from exhausting memory.
pub const MAX_NODES: u64 = 20_000;

/// Compute slices of an A100 or H100 in MIG mode.
const MIG_COMPUTE_SLICES: u32 = 7;

/// One node type, resolved.
#[derive(Debug, Clone, Serialize)]
pub struct NodeKind {
    pub name: String,
    pub count: u32,
    pub product: String,
    pub gpu_memory_bytes: u64,
    pub gpus: u32,
    /// Link level between GPUs `i` and `j` at `i * gpus + j`.
    #[serde(skip)]
    pub levels: Vec<LinkLevel>,
    /// GPUs in MIG mode and the instances each carries (profile, bytes).
    pub mig_gpus: Vec<u32>,
    pub mig_instances: Vec<(String, u64)>,
    /// The interconnect in words, for the report.
    pub layout: String,
}

impl NodeKind {
    pub fn level(&self, a: u32, b: u32) -> LinkLevel {
        self.levels
            .get((a * self.gpus + b) as usize)
            .copied()
            .unwrap_or(LinkLevel::CrossSocket)
    }

    /// Worst link among a set of GPU indexes.
    pub fn worst_level(&self, gpus: &[u32]) -> LinkLevel {
        let mut worst = LinkLevel::NvSwitch;
        for (k, &a) in gpus.iter().enumerate() {
            for &b in &gpus[k + 1..] {
                worst = worst.max(self.level(a, b));
            }
        }
        worst
    }
}

/// Every node of the workload.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub kinds: Vec<NodeKind>,
    pub specs: Vec<NodeSpec>,
    /// The kind of each node in `specs`.
    pub kind_of: Vec<usize>,
}

impl Fleet {
    pub fn gpu_count(&self) -> u64 {
        self.specs.iter().map(|s| s.gpus.len() as u64).sum()
    }

    /// Most GPUs on one node.
    pub fn max_gpus_per_node(&self) -> u32 {
        self.kinds.iter().map(|k| k.gpus).max().unwrap_or(0)
    }

    /// GPU memory the ledger can grant: whole GPUs not in MIG mode, and
    /// every MIG instance.
    pub fn capacity_bytes(&self) -> u64 {
        self.specs
            .iter()
            .flat_map(|s| &s.gpus)
            .map(|g| {
                if g.mig.is_empty() {
                    g.memory_bytes
                } else {
                    g.mig.iter().map(|m| m.memory_bytes).sum()
                }
            })
            .sum()
    }
}

/// Builds the fleet; `file` names the source in errors.
pub fn build(file: &str, w: &WorkloadFile) -> Result<Fleet, Invalid> {
    if w.node_types.is_empty() {
        return Err(Invalid::new(file, 0, "nodeTypes", "no node types given"));
    }
    let mut kinds = Vec::with_capacity(w.node_types.len());
    let mut nodes = 0u64;
    for (i, t) in w.node_types.iter().enumerate() {
        let line = t.referenced.line();
        let t = &t.value;
        let at = |field: &str| format!("nodeTypes[{i}] ({}).{field}", t.name);
        let bad = |field: &str, problem: String| Invalid::new(file, line, &at(field), problem);
        if t.name.trim().is_empty() {
            return Err(Invalid::new(
                file,
                line,
                &format!("nodeTypes[{i}].name"),
                "is empty",
            ));
        }
        if let Some(j) = w.node_types[..i]
            .iter()
            .position(|o| o.value.name == t.name)
        {
            return Err(bad(
                "name",
                format!("{:?} is also the name of nodeTypes[{j}]", t.name),
            ));
        }
        if t.count == 0 {
            return Err(bad("count", "must be at least 1 node".into()));
        }
        nodes += u64::from(t.count);
        if nodes > MAX_NODES {
            return Err(bad(
                "count",
                format!("the workload has more than {MAX_NODES} nodes"),
            ));
        }
        let kind = kind_of(t, &bad)?;
        kinds.push(kind);
    }
    let mut specs = Vec::with_capacity(nodes as usize);
    let mut kind_of = Vec::with_capacity(nodes as usize);
    for (k, (kind, t)) in kinds.iter().zip(&w.node_types).enumerate() {
        let t = &t.value;
        for n in 0..kind.count {
            specs.push(node_spec(kind, t, &format!("{}-{n}", kind.name)));
            kind_of.push(k);
        }
    }
    Ok(Fleet {
        kinds,
        specs,
        kind_of,
    })
}

fn kind_of(t: &NodeType, bad: &dyn Fn(&str, String) -> Invalid) -> Result<NodeKind, Invalid> {
    let gpus = t.gpus;
    if gpus == 0 {
        return Err(bad("gpus", "a node type needs at least 1 GPU".into()));
    }
    if gpus as usize > MAX_GPUS_PER_NODE {
        return Err(bad(
            "gpus",
            format!("{gpus} GPUs on one node; at most {MAX_GPUS_PER_NODE} are supported"),
        ));
    }
    let gpu_memory_bytes = match t.gpu_memory_gib {
        Some(g) if g.is_finite() && g > 0.0 && g <= 4096.0 => (g * GIB as f64).round() as u64,
        Some(g) => {
            return Err(bad(
                "gpuMemoryGiB",
                format!("{g} is not a GPU memory size in GiB (0 < size <= 4096)"),
            ));
        }
        None => match estimator::lookup_gpu(&t.gpu) {
            Ok(g) => g.memory_bytes,
            Err(e) => return Err(bad("gpu", format!("{e}; or give gpuMemoryGiB"))),
        },
    };
    if let Some(c) = t.cpus
        && !(c.is_finite() && (0.0..=1.0e6).contains(&c))
    {
        return Err(bad("cpus", format!("{c} is not a number of cores")));
    }
    if let Some(m) = t.memory_gib
        && !(m.is_finite() && (0.0..=1.0e7).contains(&m))
    {
        return Err(bad("memoryGiB", format!("{m} is not a memory size in GiB")));
    }
    if let Some(s) = t.slices_per_gpu
        && !(1..=MAX_SLICES_PER_GPU).contains(&s)
    {
        return Err(bad(
            "slicesPerGpu",
            format!("{s} is outside 1..={MAX_SLICES_PER_GPU}"),
        ));
    }
    let (levels, layout) = links(t, bad)?;
    let (mig_gpus, mig_instances) = mig(t, gpu_memory_bytes, bad)?;
    Ok(NodeKind {
        name: t.name.clone(),
        count: t.count,
        product: t.gpu.clone(),
        gpu_memory_bytes,
        gpus,
        levels,
        mig_gpus,
        mig_instances,
        layout,
    })
}

/// The link level of every pair, from the interconnect description.
fn links(
    t: &NodeType,
    bad: &dyn Fn(&str, String) -> Invalid,
) -> Result<(Vec<LinkLevel>, String), Invalid> {
    let ic = &t.interconnect;
    let n = t.gpus;
    let sockets = ic.sockets.unwrap_or(1);
    if sockets == 0 || !n.is_multiple_of(sockets) {
        return Err(bad(
            "interconnect.sockets",
            format!("{sockets} sockets do not split {n} GPUs evenly"),
        ));
    }
    let per_socket = n / sockets;
    let per_switch = ic.gpus_per_switch.unwrap_or(1);
    if per_switch == 0 || !per_socket.is_multiple_of(per_switch) {
        return Err(bad(
            "interconnect.gpusPerSwitch",
            format!(
                "{per_switch} GPUs per PCIe switch do not split the {per_socket} GPUs of a socket evenly"
            ),
        ));
    }
    if ic.kind != InterconnectKind::Nvlink {
        if ic.nvlink.is_some() {
            return Err(bad(
                "interconnect.nvlink",
                "applies to kind: nvlink only".into(),
            ));
        }
        if ic.group_size.is_some() {
            return Err(bad(
                "interconnect.groupSize",
                "applies to kind: nvlink only".into(),
            ));
        }
    }
    let layout = ic.nvlink.unwrap_or(NvlinkLayout::Mesh);
    let group = match (ic.kind, layout) {
        (InterconnectKind::Nvlink, NvlinkLayout::Pairs) => {
            if ic.group_size.is_some() {
                return Err(bad(
                    "interconnect.groupSize",
                    "applies to nvlink: mesh only (pairs are groups of 2)".into(),
                ));
            }
            if !n.is_multiple_of(2) {
                return Err(bad(
                    "interconnect.nvlink",
                    format!("pairs need an even number of GPUs, not {n}"),
                ));
            }
            2
        }
        (InterconnectKind::Nvlink, NvlinkLayout::Mesh) => {
            let g = ic.group_size.unwrap_or(n);
            if g < 2 || !n.is_multiple_of(g) {
                return Err(bad(
                    "interconnect.groupSize",
                    format!("groups of {g} do not split {n} GPUs evenly (at least 2 per group)"),
                ));
            }
            g
        }
        _ => 0,
    };
    let mut levels = vec![LinkLevel::NvSwitch; (n * n) as usize];
    for a in 0..n {
        for b in 0..n {
            if a == b {
                continue;
            }
            levels[(a * n + b) as usize] = match ic.kind {
                InterconnectKind::Nvswitch => LinkLevel::NvSwitch,
                InterconnectKind::Nvlink if a / group == b / group => LinkLevel::NvLink,
                _ => pcie_level(a, b, per_switch, per_socket).0,
            };
        }
    }
    let mut words = match ic.kind {
        InterconnectKind::Nvswitch => "NVSwitch".to_string(),
        InterconnectKind::Nvlink if group == 2 => "NVLink pairs".to_string(),
        InterconnectKind::Nvlink if group == n => "NVLink mesh".to_string(),
        InterconnectKind::Nvlink => format!("NVLink mesh of {group}"),
        InterconnectKind::Pcie => "PCIe".to_string(),
    };
    if per_switch > 1 {
        words.push_str(&format!(", {per_switch} per PCIe switch"));
    }
    if sockets > 1 {
        words.push_str(&format!(", {sockets} sockets"));
    }
    Ok((levels, words))
}

/// The PCIe path between two GPUs: same switch, same socket, or across.
fn pcie_level(a: u32, b: u32, per_switch: u32, per_socket: u32) -> (LinkLevel, PcieLevel) {
    if a / per_switch == b / per_switch {
        (LinkLevel::PcieSwitch, PcieLevel::SingleSwitch)
    } else if a / per_socket == b / per_socket {
        (LinkLevel::SameNuma, PcieLevel::SameNuma)
    } else {
        (LinkLevel::CrossSocket, PcieLevel::CrossSocket)
    }
}

/// GPUs in MIG mode, and the instances (profile, bytes) each carries.
type MigGpus = (Vec<u32>, Vec<(String, u64)>);

fn mig(
    t: &NodeType,
    gpu_memory_bytes: u64,
    bad: &dyn Fn(&str, String) -> Invalid,
) -> Result<MigGpus, Invalid> {
    let Some(m) = &t.mig else {
        return Ok((Vec::new(), Vec::new()));
    };
    let gpus = m.gpus.clone().unwrap_or_else(|| (0..t.gpus).collect());
    for (k, &g) in gpus.iter().enumerate() {
        if g >= t.gpus {
            return Err(bad(
                &format!("mig.gpus[{k}]"),
                format!("GPU {g} does not exist (the node has {} GPUs)", t.gpus),
            ));
        }
        if gpus[..k].contains(&g) {
            return Err(bad(
                &format!("mig.gpus[{k}]"),
                format!("GPU {g} is listed twice"),
            ));
        }
    }
    if m.instances.is_empty() {
        return Err(bad(
            "mig.instances",
            "a GPU in MIG mode needs at least one instance".into(),
        ));
    }
    let mut compute = 0;
    let mut gib = 0;
    let mut instances = Vec::with_capacity(m.instances.len());
    for (k, p) in m.instances.iter().enumerate() {
        let Some(MigProfile {
            compute_slices: c,
            memory_gib: g,
        }) = MigProfile::parse(p)
        else {
            return Err(bad(
                &format!("mig.instances[{k}]"),
                format!("{p:?} is not a MIG profile like 1g.10gb or 3g.40gb"),
            ));
        };
        compute += c;
        gib += g;
        // The profile's figure in GiB, as the simulated device plugin counts
        // it; never more than the GPU has.
        instances.push((mig_request_form(p), (g * GIB).min(gpu_memory_bytes)));
    }
    if compute > MIG_COMPUTE_SLICES {
        return Err(bad(
            "mig.instances",
            format!("the instances take {compute} compute slices; a GPU has {MIG_COMPUTE_SLICES}"),
        ));
    }
    if gib * GIB > gpu_memory_bytes.div_ceil(GIB) * GIB {
        return Err(bad(
            "mig.instances",
            format!(
                "the instances take {gib} GiB; the GPU has {:.1} GiB",
                gpu_memory_bytes as f64 / GIB as f64
            ),
        ));
    }
    Ok((gpus, instances))
}

fn node_spec(kind: &NodeKind, t: &NodeType, name: &str) -> NodeSpec {
    let ic = &t.interconnect;
    let n = kind.gpus;
    let sockets = ic.sockets.unwrap_or(1).max(1);
    let per_socket = (n / sockets).max(1);
    let per_switch = ic.gpus_per_switch.unwrap_or(1).max(1);
    let gpus = (0..n)
        .map(|i| {
            // Shaped as NVML's, so the inventory of the node validates.
            let uuid = format!("GPU-{name}-{i}");
            let mig = if kind.mig_gpus.contains(&i) {
                kind.mig_instances
                    .iter()
                    .enumerate()
                    .map(|(j, (profile, bytes))| MigSpec {
                        uuid: format!("MIG-{name}-{i}-{j}"),
                        profile: profile.clone(),
                        memory_bytes: *bytes,
                        health: Health::Healthy,
                    })
                    .collect()
            } else {
                Vec::new()
            };
            GpuSpec {
                index: i,
                uuid,
                product: kind.product.clone(),
                memory_bytes: kind.gpu_memory_bytes,
                health: Health::Healthy,
                numa_node: Some(i / per_socket),
                mig,
            }
        })
        .collect();
    let mut links = Vec::with_capacity((n * n.saturating_sub(1) / 2) as usize);
    for a in 0..n {
        for b in a + 1..n {
            let level = kind.level(a, b);
            links.push(LinkSpec {
                a,
                b,
                nvlinks: u32::from(level == LinkLevel::NvLink),
                nvswitch: level == LinkLevel::NvSwitch,
                pcie: pcie_level(a, b, per_switch, per_socket).1,
            });
        }
    }
    NodeSpec {
        name: name.to_string(),
        gpus,
        links,
        slices_per_gpu: t.slices_per_gpu.unwrap_or(DEFAULT_SLICES_PER_GPU),
        cpu_milli: t.cpus.map(|c| (c * 1000.0).round() as u64).unwrap_or(0),
        memory_bytes: t
            .memory_gib
            .map(|m| (m * GIB as f64).round() as u64)
            .unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::simulate::workload::spec;

    fn fleet(node_types: &str) -> Result<Fleet, Invalid> {
        let text = format!(
            "nodeTypes:\n{node_types}\ndeployments:\n  - {{ name: d, model: Llama-3.1-8B, replicas: 1 }}\n"
        );
        build("t.yaml", &spec::parse("t.yaml", &text).unwrap())
    }

    #[test]
    fn nvlink_islands_and_sockets_give_each_pair_its_level() {
        let f = fleet(
            "  - name: a100\n    count: 2\n    gpu: A100-80GB\n    gpus: 8\n    interconnect: { kind: nvlink, groupSize: 4, sockets: 2 }\n",
        )
        .unwrap();
        let k = &f.kinds[0];
        assert_eq!(k.level(0, 3), LinkLevel::NvLink);
        assert_eq!(k.level(3, 4), LinkLevel::CrossSocket);
        assert_eq!(k.worst_level(&[4, 5, 6, 7]), LinkLevel::NvLink);
        assert_eq!(f.specs.len(), 2);
        assert_eq!(f.specs[1].name, "a100-1");
        assert_eq!(f.specs[0].links.len(), 28);
        assert_eq!(f.specs[0].gpus[5].numa_node, Some(1));
        assert_eq!(f.specs[0].gpus[0].memory_bytes, 80 * GIB);
        // The ledger reads the links the same way.
        for l in &f.specs[0].links {
            assert_eq!(l.level(), k.level(l.a, l.b), "{l:?}");
        }
    }

    #[test]
    fn pcie_switches_within_sockets() {
        let f = fleet(
            "  - name: l40s\n    count: 1\n    gpu: L40S\n    gpus: 4\n    interconnect: { kind: pcie, gpusPerSwitch: 2, sockets: 2 }\n",
        )
        .unwrap();
        let k = &f.kinds[0];
        assert_eq!(k.level(0, 1), LinkLevel::PcieSwitch);
        assert_eq!(k.level(1, 2), LinkLevel::CrossSocket);
        assert_eq!(k.layout, "PCIe, 2 per PCIe switch, 2 sockets");
        let f = fleet(
            "  - name: p\n    count: 1\n    gpu: L4\n    gpus: 4\n    interconnect: { kind: pcie }\n",
        )
        .unwrap();
        assert_eq!(f.kinds[0].level(0, 3), LinkLevel::SameNuma);
        let f = fleet(
            "  - name: p\n    count: 1\n    gpu: A100-80GB\n    gpus: 4\n    interconnect: { kind: nvlink, nvlink: pairs, sockets: 2 }\n",
        )
        .unwrap();
        assert_eq!(f.kinds[0].level(2, 3), LinkLevel::NvLink);
        assert_eq!(f.kinds[0].level(1, 2), LinkLevel::CrossSocket);
    }

    #[test]
    fn mig_layout_is_checked_and_placed_on_the_listed_gpus() {
        let f = fleet(
            "  - name: mig\n    count: 1\n    gpu: A100-80GB\n    gpus: 2\n    interconnect: { kind: nvlink }\n    mig: { gpus: [0], instances: [3g.40gb, 2g.20gb, 1g.10gb, 1g.10gb+me] }\n",
        )
        .unwrap();
        let g = &f.specs[0].gpus;
        assert_eq!(g[0].mig.len(), 4);
        assert_eq!(g[0].mig[3].profile, "1g.10gb.me");
        assert_eq!(g[0].mig[0].memory_bytes, 40 * GIB);
        assert!(g[1].mig.is_empty());
        assert_eq!(f.capacity_bytes(), 160 * GIB);
        let err = fleet(
            "  - name: mig\n    count: 1\n    gpu: A100-80GB\n    gpus: 1\n    interconnect: { kind: pcie }\n    mig: { instances: [4g.40gb, 4g.40gb] }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("nodeTypes[0] (mig).mig.instances") && err.contains("8 compute slices"),
            "{err}"
        );
        let err = fleet(
            "  - name: mig\n    count: 1\n    gpu: A100-80GB\n    gpus: 1\n    interconnect: { kind: pcie }\n    mig: { gpus: [1], instances: [1g.10gb] }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("mig.gpus[0]") && err.contains("does not exist"),
            "{err}"
        );
    }

    #[test]
    fn bad_node_types_name_line_and_field() {
        let err = fleet(
            "  - name: empty\n    count: 1\n    gpu: H100\n    gpus: 0\n    interconnect: { kind: nvswitch }\n",
        )
        .unwrap_err();
        assert_eq!(err.line, 2);
        assert_eq!(err.field, "nodeTypes[0] (empty).gpus");
        assert!(err.problem.contains("at least 1 GPU"));
        let err = fleet(
            "  - name: x\n    count: 1\n    gpu: H300\n    gpus: 8\n    interconnect: { kind: nvswitch }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(".gpu:") && err.contains("H100-80GB") && err.contains("gpuMemoryGiB"),
            "{err}"
        );
        let err = fleet(
            "  - name: x\n    count: 1\n    gpu: H100\n    gpus: 6\n    interconnect: { kind: nvlink, groupSize: 4 }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("interconnect.groupSize"), "{err}");
        let err = fleet(
            "  - name: x\n    count: 1\n    gpu: H100\n    gpus: 8\n    interconnect: { kind: pcie, nvlink: mesh }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("interconnect.nvlink") && err.contains("kind: nvlink only"),
            "{err}"
        );
        let err = fleet(
            "  - name: x\n    count: 0\n    gpu: H100\n    gpus: 8\n    interconnect: { kind: nvswitch }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("(x).count"), "{err}");
    }
}
