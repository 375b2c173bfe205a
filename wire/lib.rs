//! fleet-wire: the contract between the laptop agent and the receiver.
//!
//! Both sides depend on this crate and on nothing of each other (and it depends on no crate of
//! this project: the widgets crate uses its kinds, levels and timestamps, not the reverse): the agent seals and sends,
//! the receiver opens and stores, and what travels between them is defined only here.
//!
//! - [`record`]: the unit the agent collects and a v2 batch carries ([`record::Record`] with
//!   its [`record::SampleKind`] and [`record::Level`], [`record::BatchBody`]) and the batch digest a receiver uses for exactly-once
//!   ([`record::records_digest`]; `docs/v2-protocol.md`);
//! - [`envelope`]: the sealed v1 (Atlas) and v2 bodies (AES-256-GCM; `docs/v2-protocol.md`);
//! - [`keys`]: the 32-byte key type both sides hold ([`keys::Key32`]) and secrets that cannot
//!   be printed ([`keys::SecretString`]);
//! - [`time`]: the dependency-free UTC [`time::Timestamp`] records and rows carry;
//! - [`tls`]: the TLS algorithms both sides' connections are built with
//!   ([`tls::crypto_provider`]: AES-GCM suites only);
//! - [`MAX_MACHINE_ID_BYTES`]: the longest machine id either side accepts.

pub mod envelope;
pub mod keys;
pub mod record;
pub mod time;
pub mod tls;

/// Longest accepted `machine_id`, bytes: the agent's config refuses a longer one and the
/// receiver answers 400 to it.
pub const MAX_MACHINE_ID_BYTES: usize = 128;
