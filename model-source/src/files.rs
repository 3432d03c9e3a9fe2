//! Where a model's files are read from: a Hub repository or a local
//! directory, through the same two reads.

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
