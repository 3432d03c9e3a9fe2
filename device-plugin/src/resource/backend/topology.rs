//! Pure parts of NVML topology discovery: NVML's levels to gpupack's,
//! NVLink counting (with NVSwitch detection), MIG profile names and the
//! sysfs path NVIDIA reads a GPU's NUMA node from.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use proto::inventory::{GpuLink, PcieLevel};

/// NVML's `TopologyLevel`, mirrored so the mapping is testable without NVML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NvmlTopology {
    /// `NVML_TOPOLOGY_INTERNAL`
    Internal,
    /// `NVML_TOPOLOGY_SINGLE`
    Single,
    /// `NVML_TOPOLOGY_MULTIPLE`
    Multiple,
    /// `NVML_TOPOLOGY_HOSTBRIDGE`
    HostBridge,
    /// `NVML_TOPOLOGY_NODE`
    Node,
    /// `NVML_TOPOLOGY_SYSTEM`
    System,
}

/// gpupack's PCIe level for NVML's common-ancestor level.
pub fn pcie_level(level: NvmlTopology) -> PcieLevel {
    match level {
        NvmlTopology::Internal => PcieLevel::SameBoard,
        NvmlTopology::Single => PcieLevel::SingleSwitch,
        NvmlTopology::Multiple => PcieLevel::MultiSwitch,
        NvmlTopology::HostBridge => PcieLevel::HostBridge,
        NvmlTopology::Node => PcieLevel::SameNuma,
        NvmlTopology::System => PcieLevel::CrossSocket,
    }
}

/// Normalizes a PCI bus ID for comparison (`00000000:3B:00.0` and
/// `0000:3b:00.0` are the same device).
pub fn normalize_bus_id(bus_id: &str) -> String {
    let lower = bus_id.trim().to_ascii_lowercase();
    match lower.split_once(':') {
        Some((domain, rest)) if domain.len() > 4 && domain.chars().all(|c| c == '0') => {
            format!("0000:{rest}")
        }
        Some((domain, rest)) if domain.len() > 4 => {
            format!("{}:{rest}", &domain[domain.len() - 4..])
        }
        _ => lower,
    }
}

/// The sysfs file holding a GPU's NUMA node, as NVIDIA's plugin reads it:
/// NVML's bus ID lowercased with the domain cut to four digits.
pub fn sysfs_numa_path(sysfs_root: &Path, bus_id: &str) -> PathBuf {
    sysfs_root
        .join("bus/pci/devices")
        .join(normalize_bus_id(bus_id))
        .join("numa_node")
}

/// Parses sysfs `numa_node` (`-1` means the platform has no NUMA).
pub fn parse_numa_node(text: &str) -> Option<u32> {
    text.trim()
        .parse::<i64>()
        .ok()
        .and_then(|n| u32::try_from(n).ok())
}

/// What one active NVLink of a GPU connects to: the remote PCI bus ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvLinkEnd {
    /// Remote bus ID as NVML reports it.
    pub remote_bus_id: String,
}

/// Per-pair NVLink facts: direct link counts, and whether both GPUs reach an
/// NVSwitch. On NVSwitch systems NVML reports the switch as the remote end,
/// so a link whose remote bus ID is no GPU of this node is a switch link;
/// counting only GPU-to-GPU links there would see no NVLink at all (the
/// gap NVIDIA's allocator leaves open).
pub fn nvlink_pairs(
    bus_ids: &[String],
    links: &[Vec<NvLinkEnd>],
) -> HashMap<(usize, usize), (u32, bool)> {
    let by_bus: HashMap<String, usize> = bus_ids
        .iter()
        .enumerate()
        .map(|(i, b)| (normalize_bus_id(b), i))
        .collect();
    let mut direct: HashMap<(usize, usize), u32> = HashMap::new();
    let mut on_switch = vec![false; bus_ids.len()];
    for (i, ends) in links.iter().enumerate().take(bus_ids.len()) {
        for end in ends {
            match by_bus.get(&normalize_bus_id(&end.remote_bus_id)) {
                Some(&j) if j != i => *direct.entry((i.min(j), i.max(j))).or_default() += 1,
                Some(_) => {}
                None => on_switch[i] = true,
            }
        }
    }
    let mut out = HashMap::new();
    for a in 0..bus_ids.len() {
        for b in a + 1..bus_ids.len() {
            // Each direct link is seen from both ends.
            let seen = direct.get(&(a, b)).copied().unwrap_or(0);
            let count = seen.div_ceil(2);
            out.insert((a, b), (count, on_switch[a] && on_switch[b]));
        }
    }
    out
}

/// Builds the inventory's link list from per-pair facts; `indexes[i]` is the
/// NVML index of the i-th GPU.
pub fn links(
    indexes: &[u32],
    pcie: &HashMap<(usize, usize), PcieLevel>,
    nvlinks: &HashMap<(usize, usize), (u32, bool)>,
) -> Vec<GpuLink> {
    let mut out = Vec::new();
    for a in 0..indexes.len() {
        for b in a + 1..indexes.len() {
            let (count, nvswitch) = nvlinks.get(&(a, b)).copied().unwrap_or((0, false));
            let (ia, ib) = (indexes[a], indexes[b]);
            out.push(GpuLink {
                a: ia.min(ib),
                b: ia.max(ib),
                nvlinks: count,
                nvswitch,
                pcie: pcie.get(&(a, b)).copied().unwrap_or(PcieLevel::CrossSocket),
            });
        }
    }
    out.sort_by_key(|l| (l.a, l.b));
    out
}

/// NVIDIA's MIG profile name (`3g.40gb`) from a MIG device's slice count
/// and memory, as go-nvlib computes it: the memory fraction of the parent
/// rounded up to eighths, times the parent's memory in GiB rounded up.
pub fn mig_profile_name(
    gpu_slices: u32,
    mig_memory_bytes: u64,
    parent_memory_bytes: u64,
) -> String {
    const GIB: u64 = 1 << 30;
    if parent_memory_bytes == 0 {
        return format!("{gpu_slices}g.0gb");
    }
    let eighths = (mig_memory_bytes.saturating_mul(8)).div_ceil(parent_memory_bytes);
    let parent_gib = parent_memory_bytes.div_ceil(GIB);
    let gb = (eighths * parent_gib + 4) / 8;
    format!("{gpu_slices}g.{gb}gb")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvml_levels_map_nearest_first() {
        let all = [
            NvmlTopology::Internal,
            NvmlTopology::Single,
            NvmlTopology::Multiple,
            NvmlTopology::HostBridge,
            NvmlTopology::Node,
            NvmlTopology::System,
        ];
        let mapped: Vec<PcieLevel> = all.iter().map(|l| pcie_level(*l)).collect();
        assert!(mapped.windows(2).all(|w| w[0] < w[1]), "{mapped:?}");
        assert_eq!(pcie_level(NvmlTopology::System), PcieLevel::CrossSocket);
        assert_eq!(pcie_level(NvmlTopology::Single), PcieLevel::SingleSwitch);
    }

    #[test]
    fn bus_id_to_sysfs() {
        assert_eq!(normalize_bus_id("00000000:3B:00.0"), "0000:3b:00.0");
        assert_eq!(normalize_bus_id("0000:3b:00.0"), "0000:3b:00.0");
        assert_eq!(normalize_bus_id("00000001:AF:00.0"), "0001:af:00.0");
        assert_eq!(
            sysfs_numa_path(Path::new("/sys"), "00000000:3B:00.0"),
            PathBuf::from("/sys/bus/pci/devices/0000:3b:00.0/numa_node")
        );
        assert_eq!(parse_numa_node("1\n"), Some(1));
        assert_eq!(parse_numa_node("-1\n"), None);
        assert_eq!(parse_numa_node("x"), None);
    }

    fn end(b: &str) -> NvLinkEnd {
        NvLinkEnd {
            remote_bus_id: b.to_string(),
        }
    }

    #[test]
    fn direct_nvlinks_are_counted_once_per_pair() {
        let bus = vec![
            "00000000:07:00.0".to_string(),
            "00000000:0F:00.0".to_string(),
            "00000000:47:00.0".to_string(),
        ];
        // GPU0-GPU1 with 4 links, GPU1-GPU2 none.
        let links = vec![
            vec![end("0000:0f:00.0"); 4],
            vec![end("00000000:07:00.0"); 4],
            vec![],
        ];
        let pairs = nvlink_pairs(&bus, &links);
        assert_eq!(pairs[&(0, 1)], (4, false));
        assert_eq!(pairs[&(1, 2)], (0, false));
        assert_eq!(pairs[&(0, 2)], (0, false));
    }

    #[test]
    fn switch_links_mean_nvswitch() {
        let bus: Vec<String> = (0..3)
            .map(|i| format!("00000000:{:02X}:00.0", 0x18 + i))
            .collect();
        let switch = end("00000000:C5:00.0");
        let links = vec![vec![switch.clone(); 18], vec![switch.clone(); 18], vec![]];
        let pairs = nvlink_pairs(&bus, &links);
        assert_eq!(pairs[&(0, 1)], (0, true));
        assert_eq!(pairs[&(0, 2)], (0, false), "GPU 2 has no switch link");
        let l = links_for(&pairs);
        assert!(l[0].nvswitch);
    }

    fn links_for(pairs: &HashMap<(usize, usize), (u32, bool)>) -> Vec<GpuLink> {
        let pcie = HashMap::from([
            ((0, 1), PcieLevel::SameNuma),
            ((0, 2), PcieLevel::CrossSocket),
        ]);
        links(&[0, 1, 2], &pcie, pairs)
    }

    #[test]
    fn link_list_is_complete_and_ordered() {
        let pairs = HashMap::new();
        let l = links_for(&pairs);
        assert_eq!(l.len(), 3);
        assert_eq!((l[0].a, l[0].b, l[0].pcie), (0, 1, PcieLevel::SameNuma));
        assert_eq!(
            l[2].pcie,
            PcieLevel::CrossSocket,
            "unknown pairs default to the farthest level"
        );
    }

    #[test]
    fn mig_profiles_follow_nvidia_rounding() {
        let a100_80 = 81920u64 << 20;
        assert_eq!(mig_profile_name(1, 9856 << 20, a100_80), "1g.10gb");
        assert_eq!(mig_profile_name(3, 40192 << 20, a100_80), "3g.40gb");
        assert_eq!(mig_profile_name(7, 80896 << 20, a100_80), "7g.80gb");
        let a100_40 = 40960u64 << 20;
        assert_eq!(mig_profile_name(1, 4864 << 20, a100_40), "1g.5gb");
        assert_eq!(mig_profile_name(2, 9984 << 20, a100_40), "2g.10gb");
    }
}
