//! Placement core: which node and which GPUs a pod gets.
