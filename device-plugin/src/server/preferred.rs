//! Preferences for requests no assignment covers (pods placed by another
//! scheduler): several GPUs go to the best-connected set (NVSwitch and
//! NVLink first, then PCIe distance, like NVIDIA's best-effort policy but
//! counting NVSwitch), and memory units are packed onto as few GPUs as
//! possible, best fit first.

use std::collections::{BTreeMap, HashSet};

use proto::inventory::{LinkLevel, NodeInventory};
use proto::resources::DeviceId;

/// Largest number of GPU sets scored exhaustively; beyond it, greedy.
const MAX_SETS: usize = 20_000;

/// How much a pair of GPUs is worth together (higher is better).
fn pair_score(inv: &NodeInventory, a: &str, b: &str) -> u64 {
    let (Some(ga), Some(gb)) = (inv.gpu(a), inv.gpu(b)) else {
        return 0;
    };
    let Some(link) = inv.link(ga.index, gb.index) else {
        return 0;
    };
    let base = match link.level() {
        LinkLevel::NvSwitch => 2000,
        LinkLevel::NvLink => 1000,
        LinkLevel::PcieSwitch => 50,
        LinkLevel::SameNuma => 20,
        LinkLevel::CrossSocket => 10,
    };
    base + 100 * u64::from(link.nvlinks)
}

fn set_score(inv: &NodeInventory, set: &[&str]) -> u64 {
    let mut s = 0;
    for (i, a) in set.iter().enumerate() {
        for b in &set[i + 1..] {
            s += pair_score(inv, a, b);
        }
    }
    s
}

fn group(ids: &[String]) -> BTreeMap<String, Vec<(DeviceId, String)>> {
    let mut by_gpu: BTreeMap<String, Vec<(DeviceId, String)>> = BTreeMap::new();
    for id in ids {
        if let Ok(d) = DeviceId::parse(id) {
            by_gpu
                .entry(d.uuid().to_string())
                .or_default()
                .push((d, id.clone()));
        }
    }
    for v in by_gpu.values_mut() {
        v.sort();
    }
    by_gpu
}

/// `size` slices on distinct, best-connected GPUs; must-include slices are
/// kept. Among equally connected sets, the one whose GPUs have the fewest
/// free slices wins (sharing packs), then the lowest indexes.
pub fn gpu_slices(
    inv: &NodeInventory,
    available: &[String],
    must_include: &[String],
    size: usize,
) -> Vec<String> {
    let avail = group(available);
    let must = group(must_include);
    let fixed: Vec<&str> = must.keys().map(String::as_str).collect();
    if fixed.len() > size {
        return vec![];
    }
    let free: Vec<&str> = avail
        .keys()
        .map(String::as_str)
        .filter(|g| !must.contains_key(*g))
        .collect();
    let need = size - fixed.len();
    if free.len() < need {
        return vec![];
    }
    let cost = |set: &[&str]| -> (u64, usize, u64) {
        let frees = set
            .iter()
            .map(|g| avail.get(*g).map_or(0, Vec::len))
            .sum::<usize>();
        let indexes: u64 = set
            .iter()
            .map(|g| {
                inv.gpu(g)
                    .map_or(u64::from(u32::MAX), |x| u64::from(x.index))
            })
            .sum();
        (set_score(inv, set), usize::MAX - frees, u64::MAX - indexes)
    };
    type Cost = (u64, usize, u64);
    let mut best: Option<(Vec<&str>, Cost)> = None;
    let mut consider = |set: Vec<_>| {
        let c = cost(&set);
        if best.as_ref().is_none_or(|(_, bc)| c > *bc) {
            best = Some((set, c));
        }
    };
    if binomial(free.len(), need) <= MAX_SETS {
        for combo in combinations(free.len(), need) {
            let mut set = fixed.clone();
            set.extend(combo.iter().map(|&i| free[i]));
            consider(set);
        }
    } else {
        let mut set = fixed.clone();
        let mut rest = free.clone();
        while set.len() < size {
            let (pos, _) = rest
                .iter()
                .enumerate()
                .map(|(i, g)| {
                    let mut s = set.clone();
                    s.push(g);
                    (i, cost(&s))
                })
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
                .unwrap_or((0, (0, 0, 0)));
            set.push(rest.remove(pos));
        }
        consider(set);
    }
    let Some((set, _)) = best else { return vec![] };
    set.iter()
        .map(|g| match must.get(*g) {
            Some(m) => m[0].1.clone(),
            None => avail[*g][0].1.clone(),
        })
        .collect()
}

/// `size` memory units on as few GPUs as possible: the GPU whose free units
/// fit the request most tightly, else the GPUs with the most free units.
pub fn memory_units(available: &[String], must_include: &[String], size: usize) -> Vec<String> {
    let mut out: Vec<String> = must_include.to_vec();
    if out.len() >= size {
        out.truncate(size);
        return out;
    }
    let must: HashSet<&str> = must_include.iter().map(String::as_str).collect();
    let rest: Vec<String> = available
        .iter()
        .filter(|id| !must.contains(id.as_str()))
        .cloned()
        .collect();
    let by_gpu = group(&rest);
    let mut need = size - out.len();
    // Prefer GPUs the must-include units are already on.
    let must_gpus: Vec<String> = group(must_include).into_keys().collect();
    let mut order: Vec<(&String, &Vec<(DeviceId, String)>)> = by_gpu.iter().collect();
    let fits_one = order
        .iter()
        .filter(|(_, v)| v.len() >= need)
        .min_by_key(|(g, v)| (!must_gpus.contains(g), v.len()))
        .map(|(g, _)| (*g).clone());
    match fits_one {
        Some(g) => order.sort_by_key(|(x, _)| **x != g),
        None => order.sort_by_key(|(g, v)| (!must_gpus.contains(g), usize::MAX - v.len())),
    }
    for (_, units) in order {
        for (_, id) in units {
            if need == 0 {
                break;
            }
            out.push(id.clone());
            need -= 1;
        }
    }
    if need > 0 { vec![] } else { out }
}

/// Any `size` devices, must-include first, in a stable order (MIG).
pub fn first_available(available: &[String], must_include: &[String], size: usize) -> Vec<String> {
    let mut out: Vec<String> = must_include.to_vec();
    let must: HashSet<&str> = must_include.iter().map(String::as_str).collect();
    let mut rest: Vec<&String> = available
        .iter()
        .filter(|id| !must.contains(id.as_str()))
        .collect();
    rest.sort();
    out.extend(rest.into_iter().cloned());
    out.truncate(size);
    out
}

fn binomial(n: usize, k: usize) -> usize {
    if k > n {
        return 0;
    }
    let k = k.min(n - k);
    let mut r: usize = 1;
    for i in 0..k {
        r = r.saturating_mul(n - i) / (i + 1);
        if r > MAX_SETS {
            return r;
        }
    }
    r
}

fn combinations(n: usize, k: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    if k > n {
        return out;
    }
    let mut cur: Vec<usize> = (0..k).collect();
    loop {
        out.push(cur.clone());
        let mut i = k;
        while i > 0 && cur[i - 1] == i - 1 + n - k {
            i -= 1;
        }
        if i == 0 {
            return out;
        }
        cur[i - 1] += 1;
        for j in i..k {
            cur[j] = cur[j - 1] + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::backend::simulated;
    use crate::resource::devices;
    use proto::resources::Resource;

    fn load(file: &str) -> NodeInventory {
        simulated::load_example(file)
    }

    fn ids(inv: &NodeInventory, r: &Resource) -> Vec<String> {
        devices::devices(inv, r)
            .iter()
            .map(|d| d.id.to_string())
            .collect()
    }

    fn indexes(inv: &NodeInventory, chosen: &[String]) -> Vec<u32> {
        let mut v: Vec<u32> = chosen
            .iter()
            .map(|id| inv.gpu(DeviceId::parse(id).unwrap().uuid()).unwrap().index)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn combinations_enumerate_all() {
        assert_eq!(combinations(4, 2).len(), 6);
        assert_eq!(combinations(3, 3), vec![vec![0, 1, 2]]);
        assert_eq!(combinations(3, 0), vec![Vec::<usize>::new()]);
        assert_eq!(binomial(8, 4), 70);
    }

    #[test]
    fn multi_gpu_requests_stay_on_an_nvlink_island() {
        let inv = load("a100-sxm-8x-nvlink.yaml");
        let avail: Vec<String> = ids(&inv, &Resource::Gpu)
            .into_iter()
            .filter(|id| {
                let g = inv.gpu(DeviceId::parse(id).unwrap().uuid()).unwrap();
                g.index != 0 && g.index != 1
            })
            .collect();
        let chosen = gpu_slices(&inv, &avail, &[], 4);
        assert_eq!(indexes(&inv, &chosen), vec![4, 5, 6, 7]);
        let chosen = gpu_slices(&inv, &avail, &[], 2);
        assert_eq!(indexes(&inv, &chosen), vec![2, 3]);
    }

    #[test]
    fn pcie_pairs_prefer_the_shared_switch() {
        let inv = load("l40s-pcie-4x-2socket.yaml");
        let avail: Vec<String> = ids(&inv, &Resource::Gpu)
            .into_iter()
            .filter(|id| inv.gpu(DeviceId::parse(id).unwrap().uuid()).unwrap().index != 0)
            .collect();
        assert_eq!(indexes(&inv, &gpu_slices(&inv, &avail, &[], 2)), vec![2, 3]);
        // Must-include GPU 1 pulls the choice to its switch peer... which is
        // gone, so the same-socket-free choice is the nearest remaining.
        let must = vec![avail[0].clone()];
        let got = indexes(&inv, &gpu_slices(&inv, &avail, &must, 2));
        assert!(got.contains(&1) && got.len() == 2, "{got:?}");
        assert!(
            gpu_slices(&inv, &avail, &[], 4).is_empty(),
            "only 3 GPUs free"
        );
    }

    #[test]
    fn memory_packs_onto_the_tightest_gpu() {
        let inv = load("l40s-pcie-4x-2socket.yaml");
        let all = ids(&inv, &Resource::GpuMemory);
        // GPU 2 has only 10 free units, others 44.
        let avail: Vec<String> = all
            .iter()
            .filter(|id| {
                let d = DeviceId::parse(id).unwrap();
                let g = inv.gpu(d.uuid()).unwrap().index;
                !(g == 2 && matches!(d, DeviceId::MemoryUnit { unit, .. } if unit >= 10))
            })
            .cloned()
            .collect();
        assert_eq!(
            indexes(&inv, &memory_units(&avail, &[], 8)).first(),
            Some(&2)
        );
        let big = memory_units(&avail, &[], 60);
        assert_eq!(big.len(), 60);
        let mut gpus = indexes(&inv, &big);
        gpus.dedup();
        assert_eq!(gpus.len(), 2, "60 units need two GPUs, not more");
        assert!(memory_units(&avail, &[], 1000).is_empty());
    }

    #[test]
    fn first_available_keeps_must_include() {
        let a = vec![
            "MIG-b".to_string(),
            "MIG-a".to_string(),
            "MIG-c".to_string(),
        ];
        assert_eq!(
            first_available(&a, &["MIG-c".to_string()], 2),
            vec!["MIG-c", "MIG-a"]
        );
    }
}
