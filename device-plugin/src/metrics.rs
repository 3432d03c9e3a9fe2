//! Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use proto::inventory::NodeInventory;

use crate::resource::devices;

/// Labels of per-resource device counts.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceLabels {
    /// Resource name.
    pub resource: String,
    /// `healthy` or `unhealthy`.
    pub state: String,
}

/// Labels of allocation counts.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AllocationLabels {
    /// Resource name.
    pub resource: String,
    /// `assigned`, `unassigned`, `unknown` or `refused`.
    pub outcome: String,
}

/// Labels carrying a resource name.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    /// Resource name.
    pub resource: String,
}

/// Every metric the plugin exports.
pub struct Metrics {
    registry: Registry,
    /// Devices advertised, by resource and health.
    pub devices: Family<DeviceLabels, Gauge>,
    /// Allocate calls answered, by resource and outcome.
    pub allocations: Family<AllocationLabels, Counter>,
    /// Containers whose kubelet-recorded devices differ from their assignment.
    pub handoff_mismatches: Family<ResourceLabels, Counter>,
    /// Allocate calls that matched non-interchangeable assignments.
    pub handoff_ambiguous: Counter,
    /// Successful registrations with kubelet, by resource.
    pub registrations: Family<ResourceLabels, Counter>,
    /// Failed inventory publications.
    pub inventory_publish_failures: Counter,
    /// Successful inventory publications.
    pub inventory_publishes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric under the `gpupack_device_plugin` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("gpupack_device_plugin");
        let devices = Family::<DeviceLabels, Gauge>::default();
        let allocations = Family::<AllocationLabels, Counter>::default();
        let handoff_mismatches = Family::<ResourceLabels, Counter>::default();
        let handoff_ambiguous = Counter::default();
        let registrations = Family::<ResourceLabels, Counter>::default();
        let inventory_publish_failures = Counter::default();
        let inventory_publishes = Counter::default();
        registry.register("devices", "Devices advertised to kubelet", devices.clone());
        registry.register(
            "allocations",
            "Allocate calls answered",
            allocations.clone(),
        );
        registry.register(
            "handoff_mismatches",
            "Containers whose devices differ from their gpupack assignment",
            handoff_mismatches.clone(),
        );
        registry.register(
            "handoff_ambiguous",
            "Allocate calls matching several non-interchangeable assignments",
            handoff_ambiguous.clone(),
        );
        registry.register(
            "registrations",
            "Registrations with kubelet",
            registrations.clone(),
        );
        registry.register(
            "inventory_publish_failures",
            "Failed GpuNodeInventory publications",
            inventory_publish_failures.clone(),
        );
        registry.register(
            "inventory_publishes",
            "GpuNodeInventory publications",
            inventory_publishes.clone(),
        );
        Metrics {
            registry,
            devices,
            allocations,
            handoff_mismatches,
            handoff_ambiguous,
            registrations,
            inventory_publish_failures,
            inventory_publishes,
        }
    }

    /// Updates the device gauges from an inventory.
    pub fn set_devices(&self, inv: &NodeInventory) {
        for r in devices::resources(inv) {
            let (ok, bad) = devices::health_counts(&devices::devices(inv, &r));
            for (state, n) in [("healthy", ok), ("unhealthy", bad)] {
                self.devices
                    .get_or_create(&DeviceLabels {
                        resource: r.name(),
                        state: state.into(),
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
    }

    /// Counts one Allocate outcome.
    pub fn allocation(&self, resource: &str, outcome: &str) {
        self.allocations
            .get_or_create(&AllocationLabels {
                resource: resource.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_named_metrics() {
        let m = Metrics::new();
        m.allocation("gpupack.io/gpu", "assigned");
        m.registrations
            .get_or_create(&ResourceLabels {
                resource: "gpupack.io/gpu".into(),
            })
            .inc();
        m.handoff_mismatches
            .get_or_create(&ResourceLabels {
                resource: "gpupack.io/gpu-memory".into(),
            })
            .inc();
        let text = m.encode();
        assert!(text.contains(r#"gpupack_device_plugin_allocations_total{resource="gpupack.io/gpu",outcome="assigned"} 1"#), "{text}");
        assert!(
            text.contains("gpupack_device_plugin_registrations_total"),
            "{text}"
        );
        assert!(text.contains(r#"gpupack_device_plugin_handoff_mismatches_total{resource="gpupack.io/gpu-memory"} 1"#), "{text}");
    }
}
