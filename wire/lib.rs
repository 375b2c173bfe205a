//! fleet-wire: the contract between the laptop agent and the receiver.
//!
//! Both sides depend on this crate and on nothing of each other: the agent seals and sends,
//! the receiver opens and stores, and what travels between them is defined only here.
//!
//! - [`record`]: the unit the agent collects and a v2 batch carries ([`record::Record`],
//!   [`record::BatchBody`]) and the batch digest a receiver uses for exactly-once
//!   ([`record::records_digest`]; `docs/v2-protocol.md`);
//! - [`envelope`]: the sealed v1 (Atlas) and v2 bodies (AES-256-GCM; `docs/v2-protocol.md`);
//! - [`keys`]: the 32-byte key type both sides hold ([`keys::Key32`]) and secrets that cannot
//!   be printed ([`keys::SecretString`]);
//! - [`MAX_MACHINE_ID_BYTES`]: the longest machine id either side accepts.

pub mod envelope;
pub mod keys;
pub mod record;

/// Longest accepted `machine_id`, bytes: the agent's config refuses a longer one and the
/// receiver answers 400 to it.
pub const MAX_MACHINE_ID_BYTES: usize = 128;
