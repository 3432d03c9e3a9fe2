//! Per-GPU health from three sources, combined without losing any:
//! - the backend's declared state (a simulated file saying `Unhealthy`),
//!   which holds until the backend says otherwise;
//! - critical events (NVML XIDs, double-bit ECC), which hold until a clean
//!   period passes with no further event on that GPU. NVIDIA's plugin never
//!   lets a GPU come back; here a transient fault heals on its own, while a
//!   GPU that keeps failing stays out;
//! - admin overrides from the local admin endpoint, which hold until cleared.
//!
//! A MIG instance is unhealthy when its parent GPU is.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proto::inventory::{Health, NodeInventory};

/// The event and override state of every GPU (by UUID).
#[derive(Debug, Clone)]
pub struct HealthBook {
    clean_period: Duration,
    critical: HashMap<String, (Instant, String)>,
    critical_all: Option<(Instant, String)>,
    admin: HashMap<String, String>,
}

impl HealthBook {
    /// A book in which critical events expire after `clean_period`.
    pub fn new(clean_period: Duration) -> HealthBook {
        HealthBook {
            clean_period,
            critical: HashMap::new(),
            critical_all: None,
            admin: HashMap::new(),
        }
    }

    /// Records a critical event on one GPU (or MIG instance) at `now`.
    pub fn critical(&mut self, uuid: &str, reason: &str, now: Instant) {
        self.critical
            .insert(uuid.to_string(), (now, reason.to_string()));
    }

    /// Records a critical event affecting every GPU.
    pub fn critical_all(&mut self, reason: &str, now: Instant) {
        self.critical_all = Some((now, reason.to_string()));
    }

    /// Sets (`Some(reason)`) or clears (`None`) an admin override.
    pub fn set_admin(&mut self, uuid: &str, unhealthy: Option<String>) {
        match unhealthy {
            Some(reason) => self.admin.insert(uuid.to_string(), reason),
            None => self.admin.remove(uuid),
        };
    }

    /// Forgets critical events older than the clean period; true when any
    /// was forgotten (health may have changed).
    pub fn expire(&mut self, now: Instant) -> bool {
        let period = self.clean_period;
        let before = self.critical.len() + usize::from(self.critical_all.is_some());
        self.critical
            .retain(|_, (at, _)| now.saturating_duration_since(*at) < period);
        if self
            .critical_all
            .as_ref()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= period)
        {
            self.critical_all = None;
        }
        before != self.critical.len() + usize::from(self.critical_all.is_some())
    }

    /// When the next critical event expires, if any.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.critical
            .values()
            .map(|(at, _)| *at)
            .chain(self.critical_all.as_ref().map(|(at, _)| *at))
            .min()
            .map(|at| at + self.clean_period)
    }

    fn verdict(&self, uuid: &str) -> Option<String> {
        if let Some(reason) = self.admin.get(uuid) {
            return Some(format!("marked unhealthy by admin: {reason}"));
        }
        if let Some((_, reason)) = self.critical.get(uuid) {
            return Some(reason.clone());
        }
        self.critical_all.as_ref().map(|(_, r)| r.clone())
    }

    /// The inventory with effective health: declared health, then admin
    /// overrides and unexpired critical events on top.
    pub fn apply(&self, declared: &NodeInventory) -> NodeInventory {
        let mut inv = declared.clone();
        for gpu in &mut inv.gpus {
            if gpu.health.is_healthy()
                && let Some(reason) = self.verdict(&gpu.uuid)
            {
                gpu.health = Health::Unhealthy;
                gpu.health_reason = Some(reason);
            }
            let parent_ok = gpu.health.is_healthy();
            for mig in &mut gpu.mig_instances {
                if !parent_ok || self.verdict(&mig.uuid).is_some() {
                    mig.health = Health::Unhealthy;
                }
            }
        }
        inv
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::backend::{DiscoveryContext, simulated};

    fn inv() -> NodeInventory {
        let text = "\
defaults: { product: NVIDIA A100-SXM4-80GB, memory: 80GiB }
gpus:
  - { uuid: GPU-a, mig: [ { profile: 3g.40gb, uuid: MIG-a1 } ] }
  - { uuid: GPU-b }
  - { uuid: GPU-c, health: Unhealthy, healthReason: declared }
";
        let ctx = DiscoveryContext {
            node_name: "n".into(),
            slices_per_gpu: 4,
            memory_unit_bytes: 1 << 30,
        };
        simulated::parse("t", text, &ctx).unwrap()
    }

    #[test]
    fn critical_event_heals_after_clean_period() {
        let t0 = Instant::now();
        let mut book = HealthBook::new(Duration::from_secs(60));
        book.critical("GPU-b", "XID 79", t0);
        let eff = book.apply(&inv());
        assert_eq!(eff.gpus[1].health, Health::Unhealthy);
        assert_eq!(eff.gpus[1].health_reason.as_deref(), Some("XID 79"));
        assert_eq!(book.next_expiry(), Some(t0 + Duration::from_secs(60)));

        assert!(!book.expire(t0 + Duration::from_secs(59)));
        // A second event restarts the clean period.
        book.critical("GPU-b", "XID 79", t0 + Duration::from_secs(59));
        assert!(!book.expire(t0 + Duration::from_secs(100)));
        assert!(book.expire(t0 + Duration::from_secs(119)));
        assert!(book.apply(&inv()).gpus[1].health.is_healthy());
        assert_eq!(book.next_expiry(), None);
    }

    #[test]
    fn mig_instances_follow_parent_and_declared_stays() {
        let mut book = HealthBook::new(Duration::from_secs(1));
        book.critical("GPU-a", "XID 48", Instant::now());
        let eff = book.apply(&inv());
        assert_eq!(eff.gpus[0].mig_instances[0].health, Health::Unhealthy);
        assert_eq!(eff.gpus[2].health, Health::Unhealthy);
        assert_eq!(eff.gpus[2].health_reason.as_deref(), Some("declared"));
    }

    #[test]
    fn admin_override_until_cleared_and_all_events() {
        let t0 = Instant::now();
        let mut book = HealthBook::new(Duration::from_secs(5));
        book.set_admin("GPU-a", Some("drain".into()));
        assert!(
            book.apply(&inv()).gpus[0]
                .health_reason
                .as_deref()
                .unwrap()
                .contains("drain")
        );
        book.expire(t0 + Duration::from_secs(3600));
        assert!(!book.apply(&inv()).gpus[0].health.is_healthy());
        book.set_admin("GPU-a", None);
        assert!(book.apply(&inv()).gpus[0].health.is_healthy());

        book.critical_all("event wait failed", t0);
        assert!(
            book.apply(&inv())
                .gpus
                .iter()
                .all(|g| !g.health.is_healthy())
        );
        assert!(book.expire(t0 + Duration::from_secs(5)));
        assert!(book.apply(&inv()).gpus[1].health.is_healthy());
    }
}
