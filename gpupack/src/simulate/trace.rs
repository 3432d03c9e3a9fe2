//! Reading the Alibaba GPU cluster trace 2023 ("openb") CSV files.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// One node row (`sn,cpu_milli,memory_mib,gpu,model`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceNode {
    pub name: String,
    pub cpu_milli: u64,
    pub memory_mib: u64,
    pub gpus: u32,
    pub model: String,
}

/// One pod row (`name,cpu_milli,memory_mib,num_gpu,gpu_milli[,gpu_spec,...]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TracePod {
    pub name: String,
    pub cpu_milli: u64,
    pub memory_mib: u64,
    pub num_gpu: u32,
    /// Share of each GPU in thousandths (1000 = a whole GPU).
    pub gpu_milli: u32,
    /// Allowed GPU models; empty = any.
    pub gpu_spec: Vec<String>,
}

impl TracePod {
    /// GPU thousandths over all its GPUs, as "arrived" load counts them.
    pub fn total_milli(&self) -> u64 {
        self.num_gpu as u64 * self.gpu_milli as u64
    }
}

struct Table {
    file: String,
    columns: HashMap<String, usize>,
    rows: Vec<(usize, csv::StringRecord)>,
}

impl Table {
    fn read(path: &Path, required: &[&str]) -> Result<Table> {
        let file = path.display().to_string();
        let mut reader = csv::ReaderBuilder::new()
            .flexible(false)
            .from_path(path)
            .with_context(|| format!("cannot open {file}"))?;
        let headers = reader
            .headers()
            .with_context(|| format!("{file}: cannot read the header row"))?
            .clone();
        let columns: HashMap<String, usize> = headers
            .iter()
            .enumerate()
            .map(|(i, h)| (h.trim().to_string(), i))
            .collect();
        for r in required {
            if !columns.contains_key(*r) {
                bail!(
                    "{file}: missing column {r:?} (header: {})",
                    headers.iter().collect::<Vec<_>>().join(",")
                );
            }
        }
        let mut rows = Vec::new();
        for (i, rec) in reader.records().enumerate() {
            // Row numbers as a spreadsheet shows them: the header is row 1.
            let row = i + 2;
            let rec = rec.with_context(|| format!("{file}: row {row}: malformed CSV"))?;
            rows.push((row, rec));
        }
        Ok(Table {
            file,
            columns,
            rows,
        })
    }

    fn field<'r>(&self, rec: &'r csv::StringRecord, col: &str) -> &'r str {
        self.columns
            .get(col)
            .and_then(|&i| rec.get(i))
            .map(str::trim)
            .unwrap_or("")
    }

    fn number<T: std::str::FromStr>(
        &self,
        row: usize,
        rec: &csv::StringRecord,
        col: &str,
    ) -> Result<T> {
        let v = self.field(rec, col);
        // The trace writes some integers as floats ("1000.0").
        let int_part = v.strip_suffix(".0").unwrap_or(v);
        int_part.parse::<T>().map_err(|_| {
            anyhow::anyhow!(
                "{}: row {row}: column {col}: {v:?} is not a non-negative integer",
                self.file
            )
        })
    }
}

/// Reads a node list; nodes without GPUs are rejected, as the trace's GPU
/// node list has none.
pub fn read_nodes(path: &Path) -> Result<Vec<TraceNode>> {
    let t = Table::read(path, &["sn", "cpu_milli", "memory_mib", "gpu", "model"])?;
    let mut out = Vec::with_capacity(t.rows.len());
    for (row, rec) in &t.rows {
        let node = TraceNode {
            name: t.field(rec, "sn").to_string(),
            cpu_milli: t.number(*row, rec, "cpu_milli")?,
            memory_mib: t.number(*row, rec, "memory_mib")?,
            gpus: t.number(*row, rec, "gpu")?,
            model: t.field(rec, "model").to_string(),
        };
        if node.name.is_empty() {
            bail!("{}: row {row}: empty node name (column sn)", t.file);
        }
        if node.gpus == 0 {
            bail!(
                "{}: row {row}: node {} has 0 GPUs; give a GPU node list",
                t.file,
                node.name
            );
        }
        if node.model.is_empty() {
            bail!(
                "{}: row {row}: node {} has GPUs but no model",
                t.file,
                node.name
            );
        }
        out.push(node);
    }
    if out.is_empty() {
        bail!("{}: no nodes", t.file);
    }
    Ok(out)
}

/// Reads a pod list.
pub fn read_pods(path: &Path) -> Result<Vec<TracePod>> {
    let t = Table::read(
        path,
        &["name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli"],
    )?;
    let mut out = Vec::with_capacity(t.rows.len());
    for (row, rec) in &t.rows {
        let mut pod = TracePod {
            name: t.field(rec, "name").to_string(),
            cpu_milli: t.number(*row, rec, "cpu_milli")?,
            memory_mib: t.number(*row, rec, "memory_mib")?,
            num_gpu: t.number(*row, rec, "num_gpu")?,
            gpu_milli: t.number(*row, rec, "gpu_milli")?,
            gpu_spec: t
                .field(rec, "gpu_spec")
                .split('|')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        };
        if pod.name.is_empty() {
            bail!("{}: row {row}: empty pod name", t.file);
        }
        // As the FGD simulator's converter: shares above one GPU are one GPU.
        pod.gpu_milli = pod.gpu_milli.min(1000);
        if pod.num_gpu == 0 {
            pod.gpu_milli = 0;
        } else if pod.gpu_milli == 0 {
            bail!(
                "{}: row {row}: pod {} asks for {} GPUs with gpu_milli 0",
                t.file,
                pod.name,
                pod.num_gpu
            );
        } else if pod.num_gpu > 1 && pod.gpu_milli < 1000 {
            bail!(
                "{}: row {row}: pod {} shares GPUs ({} thousandths) across {} GPUs; only single-GPU pods may share",
                t.file,
                pod.name,
                pod.gpu_milli,
                pod.num_gpu
            );
        }
        out.push(pod);
    }
    if out.is_empty() {
        bail!("{}: no pods", t.file);
    }
    Ok(out)
}
