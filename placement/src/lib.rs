//! Placement core: which node and which GPUs a pod gets.
//!
//! Pure code, no I/O and no clock. The scheduler extender and the simulator
//! build a [`Ledger`] from node inventories ([`NodeSpec`]), then per pod:
//!
//! 1. [`Ledger::prepare`] the pod's [`PodDemand`] once;
//! 2. filter with [`Ledger::check`] (an [`Unfit`] says why, and whether the
//!    node could ever take the pod);
//! 3. prioritize with [`Ledger::score`] under a [`Scorer`] from
//!    [`Ledger::scorer`] ([`scale_scores`] maps to kube-scheduler's range);
//! 4. bind with [`Ledger::choose`] for the devices, then [`Ledger::reserve`] /
//!    [`Ledger::confirm`] or [`Ledger::place`]; [`Ledger::release`] gives them
//!    back exactly.
//!
//! [`Ledger::decide`] does 2–4 over all nodes at once, for simulation.
//!
//! When a pod fits nowhere, [`Ledger::select_victims`] names the cheapest
//! minimal set of lower-priority pods whose eviction makes room on a node.

mod demand;
mod fgd;
mod fit;
mod ledger;
mod model;
mod policy;
mod preempt;
mod state;
mod topology;

pub use demand::{ContainerDemand, GpuNeed, MemoryNeed, PodDemand, PodKey};
pub use fgd::{MAX_KINDS, TYPICAL_COVERAGE, TypicalPods};
pub use fit::{Prepared, Shortfall, Unfit};
pub use ledger::{
    Allocation, ContainerGrant, GpuGrant, GpuUsage, Ledger, LedgerError, NodeId, NodeUsage,
    scale_scores,
};
pub use model::{
    GpuSpec, Health, LinkLevel, LinkSpec, MAX_GPUS_PER_NODE, MigSpec, ModelError, NodeSpec,
    PcieLevel, model_matches,
};
pub use policy::{Policy, Scorer, UnknownPolicy};
pub use preempt::{
    Candidate, DisruptionBudget, Preemption, PreemptionCost, PreemptionError, PreemptionQuery,
    SEARCH_STEPS,
};
