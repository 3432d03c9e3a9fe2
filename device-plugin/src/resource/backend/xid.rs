//! Which NVML events make a GPU unhealthy.
//!
//! Like NVIDIA's plugin, XIDs caused by the application rather than the GPU
//! (13 graphics engine exception, 31 memory page fault, 43 GPU stopped
//! processing, 45 preemptive cleanup, 68 video processor exception, 109
//! context switch timeout) are ignored; every other critical XID and every
//! double-bit ECC error counts. Operators can ignore more XIDs or force some
//! back on.

use std::collections::BTreeSet;

/// XIDs that reflect application faults, not GPU faults.
pub const APPLICATION_XIDS: [u64; 6] = [13, 31, 43, 45, 68, 109];

/// Decides which XIDs count as GPU faults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XidPolicy {
    ignored: BTreeSet<u64>,
    forced: BTreeSet<u64>,
}

impl Default for XidPolicy {
    fn default() -> Self {
        XidPolicy::new(&[], &[])
    }
}

impl XidPolicy {
    /// The default policy plus `extra_ignored`; `forced` wins over both.
    pub fn new(extra_ignored: &[u64], forced: &[u64]) -> XidPolicy {
        XidPolicy {
            ignored: APPLICATION_XIDS
                .iter()
                .chain(extra_ignored)
                .copied()
                .collect(),
            forced: forced.iter().copied().collect(),
        }
    }

    /// Whether this XID marks the GPU unhealthy. An unknown XID (NVML's 999
    /// or none) counts: a critical event that cannot be classified is not
    /// safe to ignore.
    pub fn is_critical(&self, xid: Option<u64>) -> bool {
        match xid {
            None => true,
            Some(x) => self.forced.contains(&x) || !self.ignored.contains(&x),
        }
    }
}

/// The reason text shown for an XID.
pub fn describe(xid: Option<u64>) -> String {
    let known = |x| match x {
        48 => Some("double-bit ECC error"),
        62 => Some("internal micro-controller halt"),
        63 => Some("ECC page retirement or row remapping event"),
        64 => Some("ECC page retirement or row remapper recording failure"),
        74 => Some("NVLink error"),
        79 => Some("GPU has fallen off the bus"),
        92 => Some("high single-bit ECC error rate"),
        94 => Some("contained ECC error"),
        95 => Some("uncontained ECC error"),
        119 | 120 => Some("GSP error"),
        _ => None,
    };
    match xid {
        None => "critical XID (unknown code)".to_string(),
        Some(x) => match known(x) {
            Some(what) => format!("XID {x} ({what})"),
            None => format!("XID {x}"),
        },
    }
}

/// Parses a comma-separated XID list as given in flags (`"48, 79"`).
pub fn parse_list(text: &str) -> Result<Vec<u64>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| format!("{s:?} is not an XID number")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_xids_are_ignored_others_count() {
        let p = XidPolicy::default();
        for x in APPLICATION_XIDS {
            assert!(!p.is_critical(Some(x)), "{x}");
        }
        for x in [48, 62, 63, 64, 74, 79, 92, 94, 95, 119, 1] {
            assert!(p.is_critical(Some(x)), "{x}");
        }
        assert!(p.is_critical(None));
    }

    #[test]
    fn extra_ignored_and_forced() {
        let p = XidPolicy::new(&[79], &[13]);
        assert!(!p.is_critical(Some(79)));
        assert!(p.is_critical(Some(13)));
        assert!(!p.is_critical(Some(31)));
    }

    #[test]
    fn describes_and_parses() {
        assert_eq!(describe(Some(79)), "XID 79 (GPU has fallen off the bus)");
        assert_eq!(describe(Some(1234)), "XID 1234");
        assert_eq!(parse_list(" 48,79 ,").unwrap(), vec![48, 79]);
        assert!(parse_list("48,x").unwrap_err().contains("\"x\""));
    }
}
