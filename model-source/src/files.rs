//! Where a model's files are read from: a Hub repository, a local
//! directory or files held in memory (a ConfigMap's), through the same two
//! reads.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::SourceError;

/// The reads resolution needs: a small file whole, and a byte range.
#[allow(async_fn_in_trait)]
pub trait ModelFiles {
    /// Names the model in messages.
    fn describe(&self) -> String;

    /// The whole of `file`, refused above `max_bytes`; `None` when absent.
    async fn read(&self, file: &str, max_bytes: u64) -> Result<Option<Vec<u8>>, SourceError>;

    /// Up to `len` bytes of `file` from `start`; `None` when absent.
    async fn read_range(
        &self,
        file: &str,
        start: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, SourceError>;

    /// Whether the safetensors shards themselves are here (a repository, a
    /// model directory) or only the small files (a ConfigMap): then the
    /// index's `total_size` stands for the checkpoint's bytes.
    fn has_shards(&self) -> bool {
        true
    }
}

/// A model directory as `save_pretrained` writes it.
pub struct LocalDir {
    dir: PathBuf,
}

impl LocalDir {
    pub fn new(dir: impl Into<PathBuf>) -> LocalDir {
        LocalDir { dir: dir.into() }
    }

    /// `file` inside the directory; names that climb out are refused.
    fn path(&self, file: &str) -> Result<PathBuf, SourceError> {
        let rel = Path::new(file);
        if rel.is_absolute() || rel.components().any(|c| c.as_os_str() == "..") {
            return Err(SourceError::BadName {
                name: file.to_string(),
                problem: "a checkpoint file must lie inside the model directory",
            });
        }
        Ok(self.dir.join(rel))
    }
}

fn io(path: &Path, source: std::io::Error) -> SourceError {
    SourceError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn open(path: &Path) -> Result<Option<std::fs::File>, SourceError> {
    match std::fs::File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path, e)),
    }
}

impl ModelFiles for LocalDir {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    async fn read(&self, file: &str, max_bytes: u64) -> Result<Option<Vec<u8>>, SourceError> {
        let path = self.path(file)?;
        let Some(f) = open(&path)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        f.take(max_bytes.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| io(&path, e))?;
        if out.len() as u64 > max_bytes {
            return Err(SourceError::TooLarge {
                what: path.display().to_string(),
                limit: max_bytes,
            });
        }
        Ok(Some(out))
    }

    async fn read_range(
        &self,
        file: &str,
        start: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, SourceError> {
        let path = self.path(file)?;
        let Some(mut f) = open(&path)? else {
            return Ok(None);
        };
        f.seek(SeekFrom::Start(start)).map_err(|e| io(&path, e))?;
        let mut out = Vec::new();
        f.take(len)
            .read_to_end(&mut out)
            .map_err(|e| io(&path, e))?;
        Ok(Some(out))
    }
}

/// A model's files held in memory: what an air-gapped cluster puts in a
/// ConfigMap (`config.json`, and optionally `hf_quant_config.json` and the
/// safetensors index). Without safetensors headers the weights are sized
/// from the architecture.
#[derive(Debug, Clone, Default)]
pub struct InMemory {
    name: String,
    files: std::collections::BTreeMap<String, Vec<u8>>,
}

impl InMemory {
    /// `name` names the files in messages (e.g. `ConfigMap ml/llama-config`).
    pub fn new(
        name: impl Into<String>,
        files: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> InMemory {
        InMemory {
            name: name.into(),
            files: files.into_iter().collect(),
        }
    }
}

impl ModelFiles for InMemory {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn has_shards(&self) -> bool {
        false
    }

    async fn read(&self, file: &str, max_bytes: u64) -> Result<Option<Vec<u8>>, SourceError> {
        let Some(bytes) = self.files.get(file) else {
            return Ok(None);
        };
        if bytes.len() as u64 > max_bytes {
            return Err(SourceError::TooLarge {
                what: format!("{}/{file}", self.name),
                limit: max_bytes,
            });
        }
        Ok(Some(bytes.clone()))
    }

    async fn read_range(
        &self,
        file: &str,
        start: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, SourceError> {
        Ok(self.files.get(file).map(|b| {
            let from = usize::try_from(start).unwrap_or(usize::MAX).min(b.len());
            let to = usize::try_from(start.saturating_add(len))
                .unwrap_or(usize::MAX)
                .min(b.len());
            b[from..to].to_vec()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_memory_files_read_whole_and_by_range_within_bounds() {
        let f = InMemory::new("ConfigMap ml/m", [("a".to_string(), b"hello".to_vec())]);
        assert_eq!(f.read("a", 5).await.unwrap().unwrap(), b"hello");
        assert!(f.read("missing", 5).await.unwrap().is_none());
        let e = f.read("a", 4).await.unwrap_err();
        assert!(e.to_string().contains("ConfigMap ml/m/a"), "{e}");
        assert_eq!(f.read_range("a", 1, 3).await.unwrap().unwrap(), b"ell");
        assert_eq!(
            f.read_range("a", 3, u64::MAX).await.unwrap().unwrap(),
            b"lo"
        );
        assert!(f.read_range("a", 99, 1).await.unwrap().unwrap().is_empty());
    }
}
