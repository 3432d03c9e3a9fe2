//! An optional cache on disk of what resolution read from the Hub (a model's
//! config and safetensors tallies, a few kilobytes each), so that a
//! restarted extender sizes the models it knew without waiting for the Hub.
//!
//! Bounded: at most `max_entries` files (the least recently written go
//! first) and entries older than `max_age` are read again from the Hub (a
//! revision such as `main` moves). Anything unreadable counts as absent.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::SourceError;
use crate::resolve::ModelFacts;

/// Where cached facts live, and how many and how old they may be.
#[derive(Debug, Clone)]
pub struct DiskCache {
    dir: PathBuf,
    max_entries: usize,
    max_age: Duration,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    /// The full key: the file name is only its hash.
    key: String,
    facts: ModelFacts,
}

impl DiskCache {
    /// Defaults: 1024 models, a day.
    pub const MAX_ENTRIES: usize = 1024;
    pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

    /// Uses (and creates) `dir`.
    pub fn new(
        dir: impl Into<PathBuf>,
        max_entries: usize,
        max_age: Duration,
    ) -> Result<DiskCache, SourceError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| SourceError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(DiskCache {
            dir,
            max_entries: max_entries.max(1),
            max_age,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{:016x}.json", fnv1a(key)))
    }

    /// The facts stored under `key`, unless absent, unreadable or too old.
    pub fn get(&self, key: &str) -> Option<ModelFacts> {
        let path = self.path(key);
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
        let age = SystemTime::now()
            .duration_since(modified)
            .unwrap_or_default();
        if age > self.max_age {
            return None;
        }
        let entry: Entry = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
        (entry.key == key).then_some(entry.facts)
    }

    /// Stores `facts` under `key` (written whole, then renamed into place),
    /// then removes the oldest files beyond the bound. A failure is logged:
    /// the cache only saves time.
    pub fn put(&self, key: &str, facts: &ModelFacts) {
        let path = self.path(key);
        let tmp = path.with_extension("tmp");
        let written = serde_json::to_vec(&Entry {
            key: key.to_string(),
            facts: facts.clone(),
        })
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(error) = written {
            tracing::warn!(path = %path.display(), %error, "cannot write the model cache");
            let _ = std::fs::remove_file(&tmp);
            return;
        }
        self.prune();
    }

    fn prune(&self) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(SystemTime, PathBuf)> = dir
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        if files.len() <= self.max_entries {
            return;
        }
        files.sort();
        let excess = files.len() - self.max_entries;
        for (_, path) in files.into_iter().take(excess) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// FNV-1a, 64 bits: a file name that stays the same across builds and
/// releases (std's hasher does not promise to).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(n: u64) -> ModelFacts {
        ModelFacts {
            config: format!("{{\"n\": {n}}}"),
            checkpoint: None,
        }
    }

    #[test]
    fn entries_round_trip_are_bounded_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::new(dir.path().join("models"), 2, DiskCache::MAX_AGE).unwrap();
        assert_eq!(cache.get("a"), None);
        cache.put("a", &facts(1));
        assert_eq!(cache.get("a"), Some(facts(1)));
        cache.put("a", &facts(2));
        assert_eq!(cache.get("a"), Some(facts(2)));
        for (i, k) in ["b", "c"].iter().enumerate() {
            std::thread::sleep(Duration::from_millis(20));
            cache.put(k, &facts(i as u64));
        }
        let files = std::fs::read_dir(cache.dir()).unwrap().count();
        assert_eq!(files, 2, "bounded");
        assert_eq!(cache.get("a"), None, "the oldest went first");
        assert!(cache.get("c").is_some());
        let stale = DiskCache::new(cache.dir(), 2, Duration::ZERO).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(stale.get("c"), None, "too old");
    }

    #[test]
    fn unreadable_or_foreign_files_count_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::new(dir.path(), 8, DiskCache::MAX_AGE).unwrap();
        std::fs::write(cache.path("a"), b"{not json").unwrap();
        assert_eq!(cache.get("a"), None);
        // A file under a's name written for another key.
        let other = Entry {
            key: "b".into(),
            facts: facts(1),
        };
        std::fs::write(cache.path("a"), serde_json::to_vec(&other).unwrap()).unwrap();
        assert_eq!(cache.get("a"), None);
    }
}
