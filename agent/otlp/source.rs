//! Where the forwarder takes committed rows from: anything with the storage seam's
//! `forward_pending` (`docs/otlp-forwarding.md`, "Cursor"). The forwarder sees only this
//! narrow trait, so its tests run it against an in-memory fake, and the receiver against its
//! store.

use serde_json::{Map, Value};

/// Which stored stream a row belongs to (the storage seam's `Stream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    /// v1 (Atlas) reports.
    Reports,
    /// v1 widget-log entries.
    WidgetLogs,
    /// v2 records and their batch commit rows.
    Records,
}

/// One committed unit handed to the forwarder: decrypted rows of one machine and stream, in
/// commit order (the storage seam's `Committed`).
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    /// The machine.
    pub machine_id: String,
    /// The stream the rows come from.
    pub stream: Stream,
    /// The rows, decrypted.
    pub rows: Vec<Map<String, Value>>,
}

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
