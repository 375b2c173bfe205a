//! Where the forwarder takes committed rows from: anything with the storage seam's
//! `forward_pending` (`docs/otlp-forwarding.md`, "Cursor"). The forwarder sees only this
//! narrow trait, so its tests run it against an in-memory fake, and the receiver against its
//! store.

use std::sync::Arc;

use fleet_receiver::storage::StorageRead;

pub use fleet_receiver::storage::{Committed, Stream};

/// Committed rows not yet forwarded, with a durable position.
pub trait PendingSource: Send + Sync {
    /// For logs: which store this is (never a password).
    fn describe(&self) -> String;

    /// Hand `push` the oldest committed rows not yet forwarded (about `max_rows`, whole
    /// batches); advance durably when it returns Ok, not at all when it returns Err. The number
    /// of rows forwarded (0: nothing pending).
    fn forward_pending(
        &self,
        max_rows: usize,
        push: &mut dyn FnMut(&[Committed]) -> Result<(), String>,
    ) -> Result<usize, String>;
}

/// The receiver's store as a [`PendingSource`]: its `forward_pending`, errors as text.
pub struct StorageSource(pub Arc<dyn StorageRead>);

impl PendingSource for StorageSource {
    fn describe(&self) -> String {
        self.0.describe()
    }

    fn forward_pending(
        &self,
        max_rows: usize,
        push: &mut dyn FnMut(&[Committed]) -> Result<(), String>,
    ) -> Result<usize, String> {
        self.0.forward_pending(max_rows, push).map_err(|e| e.to_string())
    }
}
