//! A simulated node described by a YAML file.
//!
//! ```yaml
//! driverVersion: "550.90.07"          # optional
//! defaults:                           # applied to GPUs that omit the field
//!   product: NVIDIA H100 80GB HBM3
//!   memory: 81559MiB                  # bytes as a number, or B/KiB/MiB/GiB/TiB
//!   reservedMemory: 479MiB            # optional: NVML's reserved (driver and
//!                                     # firmware); processes get the rest
//! gpus:
//!   - numaNode: 0                     # index defaults to the position
//!     pciBusId: "00000000:18:00.0"    # default derived from the index
//!     # uuid: GPU-...                 # default derived from node name + index
//!     # health: Unhealthy             # inject a fault; edit back to recover
//!     # healthReason: XID 79
//!     # mig:                          # MIG mode on, with these instances
//!     #   - { profile: 3g.40gb, gpuInstanceId: 1 }   # memory from the profile
//! topology:
//!   nvswitch: true                    # every pair on one NVSwitch fabric
//!   nvlinks: 0                        # direct NVLinks between every pair
//!   pcie: byNuma                      # sameNuma / crossSocket from numaNode,
//!                                     # or one level for every pair
//!   links:                            # per-pair overrides
//!     - { a: 0, b: 1, nvlinks: 12, pcie: singleSwitch }
//! ```
//!
//! A file that omits UUIDs gets deterministic ones derived from the node
//! name and GPU index, so one file can describe many nodes of a cluster
//! without two GPUs sharing a UUID. Every error names the file, the line and
//! the field, and the plugin never starts from half a file. While running,
//! the file is watched: a valid edit replaces the inventory (and the declared
//! health), an invalid one is reported and ignored.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use notify::{RecursiveMode, Watcher};
use proto::inventory::{Backend, Gpu, GpuLink, Health, MigInstance, NodeInventory, PcieLevel};
use serde::Deserialize;
use serde::de::{self, Visitor};
use serde_saphyr::Spanned;
use tokio::sync::mpsc;

use super::{BackendError, BackendEvent, DiscoveryContext, GpuBackend, WatchGuard};

/// Why a simulated file was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// The file could not be read.
    #[error("{file}: cannot read simulated node file: {detail}")]
    Read {
        /// The file.
        file: String,
        /// The OS error.
        detail: String,
    },
    /// The file is not a valid description; names the line and field.
    #[error("{file}:{line}: {field}: {problem}")]
    Invalid {
        /// The file.
        file: String,
        /// 1-based line (0 when unknown).
        line: u64,
        /// Path of the field, e.g. `gpus[2].memory`.
        field: String,
        /// What is wrong.
        problem: String,
    },
}

/// Memory size: a byte count or a string with a binary unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory(pub u64);

impl Memory {
    /// Parses `81559MiB`, `80GiB`, `1073741824` or `512B`.
    pub fn parse(text: &str) -> Result<Memory, String> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{text:?} is not a size like 80GiB or 81559MiB"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            other => {
                return Err(format!(
                    "unknown unit {other:?} in {text:?}; use B, KiB, MiB, GiB or TiB"
                ));
            }
        };
        n.checked_mul(mult)
            .map(Memory)
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for Memory {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Memory, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Memory;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a byte count or a size like 80GiB")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Memory, E> {
                Ok(Memory(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Memory, E> {
                u64::try_from(v)
                    .map(Memory)
                    .map_err(|_| E::custom(format!("{v} is negative")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Memory, E> {
                Memory::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SimFile {
    #[serde(default)]
    driver_version: Option<String>,
    #[serde(default)]
    defaults: Defaults,
    gpus: Vec<Spanned<SimGpu>>,
    #[serde(default)]
    topology: Option<Spanned<SimTopology>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Defaults {
    product: Option<String>,
    memory: Option<Memory>,
    reserved_memory: Option<Memory>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SimGpu {
    index: Option<u32>,
    uuid: Option<String>,
    product: Option<String>,
    memory: Option<Memory>,
    reserved_memory: Option<Memory>,
    pci_bus_id: Option<String>,
    numa_node: Option<u32>,
    health: Option<Health>,
    health_reason: Option<String>,
    mig: Option<Vec<Spanned<SimMig>>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SimMig {
    profile: String,
    uuid: Option<String>,
    memory: Option<Memory>,
    gpu_instance_id: Option<u32>,
    #[serde(default)]
    compute_instance_id: u32,
    health: Option<Health>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SimTopology {
    #[serde(default)]
    nvswitch: bool,
    #[serde(default)]
    nvlinks: u32,
    #[serde(default)]
    pcie: PcieRule,
    #[serde(default)]
    links: Vec<Spanned<SimLink>>,
}

#[derive(Debug, Default, Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
enum PcieRule {
    /// Same NUMA node → `sameNuma`, otherwise `crossSocket`.
    #[default]
    ByNuma,
    SameBoard,
    SingleSwitch,
    MultiSwitch,
    HostBridge,
    SameNuma,
    CrossSocket,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SimLink {
    a: u32,
    b: u32,
    nvlinks: Option<u32>,
    nvswitch: Option<bool>,
    pcie: Option<PcieLevel>,
}

/// A deterministic UUID-shaped identifier from a seed (FNV-1a, two lanes).
fn derived_uuid(prefix: &str, seed: &str) -> String {
    let fnv = |basis: u64| {
        seed.bytes().fold(basis, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let hi = fnv(0xcbf2_9ce4_8422_2325);
    let lo = fnv(0x8422_2325_cbf2_9ce4 ^ hi);
    format!(
        "{prefix}{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

/// Parses and validates a simulated node description. `file` names the
/// source in errors.
pub fn parse(file: &str, text: &str, ctx: &DiscoveryContext) -> Result<NodeInventory, SimError> {
    // The path of the failing field is captured on the way out; the
    // location comes from serde-saphyr's own error.
    let mut path: Option<String> = None;
    let parsed = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize::<_, SimFile>(de).map_err(|e| {
            // `Spanned` adds a `value` level that the file does not have.
            path = Some(e.path().to_string().replace(".value", ""));
            e.into_inner()
        })
    });
    let sim = parsed.map_err(|e| SimError::Invalid {
        file: file.into(),
        line: e.location().map(|l| l.line()).unwrap_or(0),
        field: path.filter(|p| !p.is_empty()).unwrap_or_else(|| ".".into()),
        problem: first_line(&e.to_string()),
    })?;
    build(file, sim, ctx)
}

/// serde-saphyr renders a source snippet after the message; the location is
/// reported separately.
fn first_line(msg: &str) -> String {
    let line = msg.lines().next().unwrap_or(msg).trim();
    line.trim_end_matches(':').to_string()
}

fn build(file: &str, sim: SimFile, ctx: &DiscoveryContext) -> Result<NodeInventory, SimError> {
    let invalid = |line: u64, field: String, problem: String| SimError::Invalid {
        file: file.into(),
        line,
        field,
        problem,
    };
    let mut gpus = Vec::with_capacity(sim.gpus.len());
    let mut lines = Vec::with_capacity(sim.gpus.len());
    for (i, spanned) in sim.gpus.into_iter().enumerate() {
        let line = spanned.referenced.line();
        let g = spanned.value;
        let pos = u32::try_from(i).unwrap_or(u32::MAX);
        let index = g.index.unwrap_or(pos);
        let product = g
            .product
            .or_else(|| sim.defaults.product.clone())
            .ok_or_else(|| {
                invalid(
                    line,
                    format!("gpus[{i}].product"),
                    "missing, and no defaults.product".into(),
                )
            })?;
        let memory = g.memory.or(sim.defaults.memory).ok_or_else(|| {
            invalid(
                line,
                format!("gpus[{i}].memory"),
                "missing, and no defaults.memory".into(),
            )
        })?;
        // As the NVML backend advertises: what processes can allocate.
        let reserved = g
            .reserved_memory
            .or(sim.defaults.reserved_memory)
            .map_or(0, |m| m.0);
        if reserved >= memory.0 {
            return Err(invalid(
                line,
                format!("gpus[{i}].reservedMemory"),
                format!("{reserved} bytes leave nothing of {} bytes", memory.0),
            ));
        }
        let uuid = g
            .uuid
            .unwrap_or_else(|| derived_uuid("GPU-", &format!("{}/gpu/{index}", ctx.node_name)));
        let mut mig_instances = Vec::new();
        let mig_enabled = g.mig.is_some();
        for (j, m) in g.mig.unwrap_or_default().into_iter().enumerate() {
            let mline = m.referenced.line();
            let m = m.value;
            let memory_bytes = match m.memory {
                Some(b) => b.0,
                None => proto::resources::MigProfile::parse(&m.profile)
                    .map(|p| p.memory_bytes())
                    .ok_or_else(|| {
                        invalid(
                            mline,
                            format!("gpus[{i}].mig[{j}].memory"),
                            format!("missing, and profile {:?} names no size", m.profile),
                        )
                    })?,
            };
            let gi = m
                .gpu_instance_id
                .unwrap_or(u32::try_from(j + 1).unwrap_or(u32::MAX));
            mig_instances.push(MigInstance {
                uuid: m.uuid.unwrap_or_else(|| {
                    derived_uuid(
                        "MIG-",
                        &format!(
                            "{}/gpu/{index}/gi/{gi}/ci/{}",
                            ctx.node_name, m.compute_instance_id
                        ),
                    )
                }),
                profile: m.profile,
                memory_bytes,
                gpu_instance_id: gi,
                compute_instance_id: m.compute_instance_id,
                health: m.health.unwrap_or(Health::Healthy),
            });
        }
        gpus.push(Gpu {
            index,
            uuid,
            product,
            memory_bytes: memory.0 - reserved,
            pci_bus_id: g.pci_bus_id.unwrap_or_else(|| {
                format!(
                    "00000000:{:02X}:00.0",
                    0x10u32.saturating_add(index.saturating_mul(0x10)) & 0xff
                )
            }),
            numa_node: g.numa_node,
            health: g.health.unwrap_or(Health::Healthy),
            health_reason: g.health_reason,
            mig_enabled,
            mig_instances,
        });
        lines.push(line);
    }

    let (topo, topo_line) = match sim.topology {
        Some(t) => {
            let line = t.referenced.line();
            (t.value, line)
        }
        None => (SimTopology::default(), 0),
    };
    let position: HashMap<u32, usize> =
        gpus.iter().enumerate().map(|(p, g)| (g.index, p)).collect();
    let mut links = Vec::new();
    for x in 0..gpus.len() {
        for y in x + 1..gpus.len() {
            let (ga, gb) = (&gpus[x], &gpus[y]);
            let pcie = match topo.pcie {
                PcieRule::ByNuma => match (ga.numa_node, gb.numa_node) {
                    (Some(p), Some(q)) if p != q => PcieLevel::CrossSocket,
                    _ => PcieLevel::SameNuma,
                },
                PcieRule::SameBoard => PcieLevel::SameBoard,
                PcieRule::SingleSwitch => PcieLevel::SingleSwitch,
                PcieRule::MultiSwitch => PcieLevel::MultiSwitch,
                PcieRule::HostBridge => PcieLevel::HostBridge,
                PcieRule::SameNuma => PcieLevel::SameNuma,
                PcieRule::CrossSocket => PcieLevel::CrossSocket,
            };
            links.push(GpuLink {
                a: ga.index.min(gb.index),
                b: ga.index.max(gb.index),
                nvlinks: topo.nvlinks,
                nvswitch: topo.nvswitch,
                pcie,
            });
        }
    }
    for (k, l) in topo.links.into_iter().enumerate() {
        let line = l.referenced.line();
        let l = l.value;
        for (name, idx) in [("a", l.a), ("b", l.b)] {
            if !position.contains_key(&idx) {
                return Err(invalid(
                    line,
                    format!("topology.links[{k}].{name}"),
                    format!("no GPU with index {idx}"),
                ));
            }
        }
        if l.a == l.b {
            return Err(invalid(
                line,
                format!("topology.links[{k}].b"),
                "a link joins two different GPUs".into(),
            ));
        }
        let (a, b) = (l.a.min(l.b), l.a.max(l.b));
        if let Some(link) = links.iter_mut().find(|x| x.a == a && x.b == b) {
            if let Some(n) = l.nvlinks {
                link.nvlinks = n;
            }
            if let Some(s) = l.nvswitch {
                link.nvswitch = s;
            }
            if let Some(p) = l.pcie {
                link.pcie = p;
            }
        }
    }
    links.sort_by_key(|l| (l.a, l.b));

    let inv = NodeInventory {
        node_name: ctx.node_name.clone(),
        backend: Backend::Simulated,
        driver_version: sim.driver_version,
        slices_per_gpu: ctx.slices_per_gpu,
        memory_unit_bytes: ctx.memory_unit_bytes,
        gpus,
        links,
    };
    inv.validate()
        .map_err(|e| locate(file, &e, &lines, topo_line))?;
    Ok(inv)
}

/// Maps an inventory validation error back to the file: the GPU's line for
/// `gpus[i]…`, the topology's for `links…`. Inventory field names are the
/// file's, except `migInstances`, which the file calls `mig`.
fn locate(file: &str, e: &proto::FormatError, gpu_lines: &[u64], topo_line: u64) -> SimError {
    let (field, problem) = match e {
        proto::FormatError::Invalid { field, problem, .. } => (field.clone(), problem.clone()),
        other => (".".to_string(), other.to_string()),
    };
    let line = field
        .strip_prefix("gpus[")
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(i, _)| i.parse::<usize>().ok())
        .and_then(|i| gpu_lines.get(i).copied())
        .unwrap_or(if field.starts_with("links") {
            topo_line
        } else {
            0
        });
    let field = match field.strip_prefix("links") {
        Some(rest) => format!("topology{rest}"),
        None => field.replace("migInstances", "mig"),
    };
    SimError::Invalid {
        file: file.into(),
        line,
        field,
        problem,
    }
}

/// Reads and parses a simulated node file.
pub fn load(path: &Path, ctx: &DiscoveryContext) -> Result<NodeInventory, SimError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| SimError::Read {
        file: file.clone(),
        detail: e.to_string(),
    })?;
    parse(&file, &text, ctx)
}

/// The simulated backend.
pub struct SimulatedBackend {
    path: PathBuf,
}

impl SimulatedBackend {
    /// A backend reading `path`.
    pub fn new(path: impl Into<PathBuf>) -> SimulatedBackend {
        SimulatedBackend { path: path.into() }
    }
}

impl GpuBackend for SimulatedBackend {
    fn kind(&self) -> Backend {
        Backend::Simulated
    }

    fn discover(&self, ctx: &DiscoveryContext) -> Result<NodeInventory, BackendError> {
        Ok(load(&self.path, ctx)?)
    }

    /// Watches the file's directory (editors replace files by renaming, which
    /// a watch on the file itself would miss) and re-reads the file on every
    /// change to it.
    fn watch(
        &self,
        ctx: &DiscoveryContext,
        events: mpsc::UnboundedSender<BackendEvent>,
    ) -> Result<WatchGuard, BackendError> {
        let path = self.path.clone();
        let name = path.file_name().map(|n| n.to_owned());
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let ctx = ctx.clone();
        let mut last: Option<NodeInventory> = load(&path, &ctx).ok();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else { return };
            if ev.kind.is_access() {
                return;
            }
            if !ev.paths.iter().any(|p| p.file_name() == name.as_deref()) {
                return;
            }
            match load(&path, &ctx) {
                Ok(inv) if last.as_ref() != Some(&inv) => {
                    tracing::info!(file = %path.display(), "simulated node file changed");
                    last = Some(inv.clone());
                    let _ = events.send(BackendEvent::Inventory(inv));
                }
                Ok(_) => {}
                Err(SimError::Read { .. }) => {} // mid-replace; the next event has the file
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring invalid edit of the simulated node file")
                }
            }
        })
        .map_err(|e| BackendError::Watch(e.to_string()))?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|e| BackendError::Watch(format!("{}: {e}", dir.display())))?;
        Ok(WatchGuard::new(watcher))
    }
}

/// A shipped example node (`simulated/<file>`) as node `node-a`, for tests.
#[cfg(test)]
pub(crate) fn load_example(file: &str) -> NodeInventory {
    let ctx = DiscoveryContext {
        node_name: "node-a".into(),
        slices_per_gpu: 4,
        memory_unit_bytes: 1 << 30,
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("simulated")
        .join(file);
    load(&path, &ctx).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(node: &str) -> DiscoveryContext {
        DiscoveryContext {
            node_name: node.into(),
            slices_per_gpu: 4,
            memory_unit_bytes: 1 << 30,
        }
    }

    const TWO: &str = "\
defaults:
  product: NVIDIA A100-SXM4-80GB
  memory: 80GiB
gpus:
  - numaNode: 0
  - numaNode: 1
topology:
  nvlinks: 12
";

    fn err(text: &str) -> (u64, String, String) {
        match parse("node.yaml", text, &ctx("n1")) {
            Err(SimError::Invalid {
                line,
                field,
                problem,
                ..
            }) => (line, field, problem),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn parses_defaults_and_derives_links() {
        let inv = parse("node.yaml", TWO, &ctx("n1")).unwrap();
        assert_eq!(inv.gpus.len(), 2);
        assert_eq!(inv.gpus[1].index, 1);
        assert_eq!(inv.gpus[0].memory_bytes, 80 << 30);
        assert_eq!(inv.links.len(), 1);
        assert_eq!(inv.links[0].nvlinks, 12);
        assert_eq!(inv.links[0].pcie, PcieLevel::CrossSocket);
        assert_eq!(inv.backend, Backend::Simulated);
    }

    #[test]
    fn derived_uuids_differ_per_node_and_are_stable() {
        let a = parse("f", TWO, &ctx("n1")).unwrap();
        let b = parse("f", TWO, &ctx("n2")).unwrap();
        let a2 = parse("f", TWO, &ctx("n1")).unwrap();
        assert_eq!(a.gpus[0].uuid, a2.gpus[0].uuid);
        assert_ne!(a.gpus[0].uuid, b.gpus[0].uuid);
        assert_ne!(a.gpus[0].uuid, a.gpus[1].uuid);
        assert!(a.gpus[0].uuid.starts_with("GPU-") && a.gpus[0].uuid.len() == 40);
    }

    #[test]
    fn reserved_memory_is_left_out_as_nvml_reports_it() {
        let inv = parse(
            "f",
            &TWO.replace(
                "memory: 80GiB",
                "memory: 81559MiB\n  reservedMemory: 479MiB",
            ),
            &ctx("n1"),
        )
        .unwrap();
        assert_eq!(inv.gpus[0].memory_bytes, (81559 - 479) << 20);
        let (_, field, problem) =
            err(&TWO.replace("memory: 80GiB", "memory: 80GiB\n  reservedMemory: 80GiB"));
        assert_eq!(field, "gpus[0].reservedMemory", "{problem}");
        assert!(problem.contains("leave nothing"), "{problem}");
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(Memory::parse("81559MiB").unwrap().0, 81559 << 20);
        assert_eq!(Memory::parse("1024").unwrap().0, 1024);
        assert!(Memory::parse("80GB").unwrap_err().contains("unit"));
        assert!(Memory::parse("lots").is_err());
    }

    #[test]
    fn wrong_type_names_line_and_field() {
        let (line, field, problem) = err(&TWO.replace("numaNode: 1", "numaNode: one"));
        assert_eq!(line, 6, "{problem}");
        assert_eq!(field, "gpus[1].numaNode", "{problem}");
    }

    #[test]
    fn unknown_field_is_named() {
        let (line, field, problem) =
            err(&TWO.replace("  - numaNode: 1", "  - numaNode: 1\n    memry: 40GiB"));
        assert!(problem.contains("memry"), "{problem}");
        assert!(field.starts_with("gpus[1]"), "{field}");
        assert_eq!(line, 7);
    }

    #[test]
    fn bad_memory_unit_is_named() {
        let (line, field, problem) = err(&TWO.replace("memory: 80GiB", "memory: 80GB"));
        assert_eq!(field, "defaults.memory");
        assert_eq!(line, 3);
        assert!(problem.contains("unit"), "{problem}");
    }

    #[test]
    fn validation_errors_point_at_the_gpu() {
        let text = "\
defaults: { product: X, memory: 80GiB }
gpus:
  - uuid: GPU-same
  - uuid: GPU-same
";
        let (line, field, problem) = err(text);
        assert_eq!((line, field.as_str()), (4, "gpus[1].uuid"), "{problem}");
        assert!(problem.contains("duplicate"));
    }

    #[test]
    fn missing_product_and_bad_link() {
        let (line, field, _) = err("gpus:\n  - memory: 1GiB\n");
        assert_eq!((line, field.as_str()), (2, "gpus[0].product"));
        let (line, field, _) = err(&format!("{TWO}  links:\n    - {{ a: 0, b: 5 }}\n"));
        assert_eq!((line, field.as_str()), (10, "topology.links[0].b"));
    }

    #[test]
    fn syntax_error_has_a_line() {
        let (line, _, _) = err("gpus:\n  - [unclosed\n");
        assert!(line >= 2, "{line}");
    }

    #[test]
    fn mig_instances_take_memory_from_profile() {
        let text = "\
gpus:
  - product: NVIDIA A100-SXM4-80GB
    memory: 80GiB
    mig:
      - { profile: 3g.40gb }
      - { profile: 1g.10gb, gpuInstanceId: 9 }
";
        let inv = parse("f", text, &ctx("n")).unwrap();
        let g = &inv.gpus[0];
        assert!(g.mig_enabled);
        assert_eq!(g.mig_instances[0].memory_bytes, 40 << 30);
        assert_eq!(g.mig_instances[1].gpu_instance_id, 9);
        assert!(g.mig_instances[0].uuid.starts_with("MIG-"));
        let bad = text
            .replace("1g.10gb,", "3g.40gb,")
            .replace("{ profile: 3g.40gb }", "{ profile: 7g.80gb }");
        let (line, field, problem) = err(&bad);
        assert_eq!((line, field.as_str()), (1 + 1, "gpus[0].mig"), "{problem}");
    }

    #[test]
    fn shipped_files_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("simulated");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let inv = load(&path, &ctx("node-a")).unwrap_or_else(|e| panic!("{e}"));
                assert!(!inv.gpus.is_empty());
                seen += 1;
            }
        }
        assert!(seen >= 4, "{seen} files");
    }
}
