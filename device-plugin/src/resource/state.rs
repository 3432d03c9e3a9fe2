//! The node's current inventory with effective health, owned by one task
//! and shared read-only through a watch channel: every plugin server, the
//! publisher and the metrics see the same generation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::inventory::NodeInventory;
use tokio::sync::{mpsc, oneshot, watch};

use crate::resource::backend::BackendEvent;
use crate::resource::health::HealthBook;

/// One version of the node's state.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Increases on every change.
    pub generation: u64,
    /// The inventory as kubelet and the scheduler should see it.
    pub inventory: NodeInventory,
}

/// A request from the admin endpoint.
#[derive(Debug)]
pub struct AdminCommand {
    /// A GPU or MIG UUID, or a GPU index.
    pub target: String,
    /// `Some(reason)` marks it unhealthy; `None` clears the override.
    pub unhealthy: Option<String>,
    /// The resolved UUID, or why the target is unknown.
    pub reply: oneshot::Sender<Result<String, String>>,
}

/// Handles to the running state task.
pub struct StateHandles {
    /// The current snapshot; changes are announced.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// Admin overrides.
    pub admin: mpsc::Sender<AdminCommand>,
}

/// Starts the task that owns the node state.
pub fn spawn(
    declared: NodeInventory,
    mut events: mpsc::UnboundedReceiver<BackendEvent>,
    clean_period: Duration,
) -> StateHandles {
    let mut book = HealthBook::new(clean_period);
    let first = Arc::new(Snapshot {
        generation: 1,
        inventory: book.apply(&declared),
    });
    let (tx, rx) = watch::channel(first);
    let (admin_tx, mut admin_rx) = mpsc::channel::<AdminCommand>(16);
    tokio::spawn(async move {
        let mut declared = declared;
        let mut events_open = true;
        // Without `--admin-listen` nobody holds the sender: the channel is
        // closed from the start and must leave the select, or `recv()`
        // answers `None` at once and the loop spins.
        let mut admin_open = true;
        loop {
            let wake = book
                .next_expiry()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                ev = events.recv(), if events_open => match ev {
                    Some(BackendEvent::Critical { uuid, reason }) => {
                        tracing::warn!(gpu = %uuid, %reason, "critical GPU event");
                        book.critical(&uuid, &reason, Instant::now());
                    }
                    Some(BackendEvent::CriticalAll { reason }) => {
                        tracing::warn!(%reason, "critical event on every GPU");
                        book.critical_all(&reason, Instant::now());
                    }
                    Some(BackendEvent::Inventory(inv)) => declared = inv,
                    None => events_open = false,
                },
                cmd = admin_rx.recv(), if admin_open => match cmd {
                    Some(cmd) => {
                        let resolved = resolve(&declared, &cmd.target);
                        if let Ok(uuid) = &resolved {
                            tracing::info!(gpu = %uuid, unhealthy = ?cmd.unhealthy.as_deref().map(proto::clip::clip), "admin health override");
                            book.set_admin(uuid, cmd.unhealthy);
                        }
                        let _ = cmd.reply.send(resolved);
                    }
                    None => admin_open = false,
                },
                _ = tokio::time::sleep_until(wake) => {
                    book.expire(Instant::now());
                }
                _ = tx.closed() => break,
            }
            let inventory = book.apply(&declared);
            if inventory != tx.borrow().inventory {
                let generation = tx.borrow().generation + 1;
                tracing::info!(generation, "node state changed");
                tx.send_replace(Arc::new(Snapshot {
                    generation,
                    inventory,
                }));
            }
        }
    });
    StateHandles {
        snapshots: rx,
        admin: admin_tx,
    }
}

/// Resolves a GPU index, GPU UUID or MIG UUID to a UUID of this node.
fn resolve(inv: &NodeInventory, target: &str) -> Result<String, String> {
    if let Ok(index) = target.parse::<u32>() {
        return inv
            .gpu_by_index(index)
            .map(|g| g.uuid.clone())
            .ok_or_else(|| format!("no GPU with index {index}"));
    }
    let known = inv
        .gpus
        .iter()
        .any(|g| g.uuid == target || g.mig_instances.iter().any(|m| m.uuid == target));
    if known {
        Ok(target.to_string())
    } else {
        Err(format!(
            "no GPU or MIG instance with UUID {}",
            proto::clip::clip(target)
        ))
    }
}
