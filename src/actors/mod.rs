//! The actor system: one Supervisor, one Monitor per target, and the shared Archiver, Healer
//! and Notifier. `messages` is the protocol between them.

pub mod archiver;
pub mod healer;
pub mod messages;
pub mod monitor;
pub mod notifier;
pub mod supervisor;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Waits until `pending` reaches zero or `deadline` passes; returns what is still pending.
pub(crate) async fn wait_for_zero(pending: Arc<AtomicUsize>, deadline: Duration) -> usize {
    let until = Instant::now() + deadline;
    while pending.load(Ordering::SeqCst) > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pending.load(Ordering::SeqCst)
}
