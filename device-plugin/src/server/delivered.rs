//! Which node-state generation every open `ListAndWatch` stream has handed
//! to kubelet, so that the inventory is published only after kubelet has
//! the same device health.
//!
//! The scheduler extender places pods from the published inventory, and
//! kubelet allocates only devices its `ListAndWatch` stream reported
//! healthy. Were a recovered GPU published first, the extender could bind a
//! pod to it while kubelet still counts its devices unhealthy; kubelet would
//! then pick other GPUs and Allocate would have to refuse them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// Generations delivered, per open stream.
pub struct Delivered {
    streams: watch::Sender<BTreeMap<u64, u64>>,
    next_id: AtomicU64,
}

impl Default for Delivered {
    fn default() -> Delivered {
        Delivered {
            streams: watch::Sender::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
        }
    }
}

impl Delivered {
    /// Registers a stream that has delivered nothing yet; dropping the mark
    /// unregisters it.
    pub fn open(self: &std::sync::Arc<Self>) -> StreamMark {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.streams.send_modify(|m| {
            m.insert(id, 0);
        });
        StreamMark {
            id,
            book: self.clone(),
        }
    }

    /// How many `ListAndWatch` streams are open now.
    pub fn open_streams(&self) -> usize {
        self.streams.borrow().len()
    }

    /// Waits until every open stream has delivered `generation` (or a later
    /// one), at most `limit`; false when the limit passed first. A kubelet
    /// that stopped reading must not hold the inventory back for ever.
    pub async fn wait(&self, generation: u64, limit: Duration) -> bool {
        let mut rx = self.streams.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|m| m.values().all(|&g| g >= generation)))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// One open stream's entry.
pub struct StreamMark {
    id: u64,
    book: std::sync::Arc<Delivered>,
}

impl StreamMark {
    /// Records that the stream has handed over everything of `generation`.
    pub fn delivered(&self, generation: u64) {
        self.book
            .streams
            .send_if_modified(|m| match m.get_mut(&self.id) {
                Some(g) if *g < generation => {
                    *g = generation;
                    true
                }
                _ => false,
            });
    }
}

impl Drop for StreamMark {
    fn drop(&mut self) {
        self.book.streams.send_modify(|m| {
            m.remove(&self.id);
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn waits_for_every_open_stream_and_forgets_closed_ones() {
        let book = Arc::new(Delivered::default());
        assert!(
            book.wait(5, Duration::ZERO).await,
            "no stream: nothing to wait for"
        );
        let a = book.open();
        let b = book.open();
        a.delivered(5);
        assert!(!book.wait(5, Duration::from_millis(20)).await);
        let waiter = {
            let book = book.clone();
            tokio::spawn(async move { book.wait(5, Duration::from_secs(10)).await })
        };
        b.delivered(6);
        assert!(waiter.await.unwrap());
        let c = book.open();
        assert!(!book.wait(6, Duration::from_millis(20)).await);
        drop(c);
        a.delivered(4);
        assert!(!book.wait(6, Duration::from_millis(20)).await, "a is at 5");
        drop(a);
        assert!(book.wait(6, Duration::ZERO).await);
    }
}
