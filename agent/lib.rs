//! fleet-agent: a small synchronous endpoint telemetry agent.
//!
//! Data flow (docs/architecture.md): widgets ([`fleet_widgets`]) produce samples, [`collect`]
//! schedules them and makes [`fleet_wire::record::Record`]s, the service loop ([`run`]) hands
//! them on. [`config`] loads and validates the JSON config, [`host`] is the real machine behind
//! the widgets' `Host` trait.
//!
//! Crates: this one is the laptop side; the bundled receiver is [`fleet_receiver`] and what
//! travels between the two (records, sealed envelopes, keys, the batch digest) is
//! [`fleet_wire`], which both depend on (neither depends on the other). The binary carries
//! both sides: `fleet-agent receive` is a command here that runs [`fleet_receiver::Receiver`].
//!
//! Layering of the command line: [`commands`] (dispatch and one file per command) and [`cli`]
//! (the argument reader they share) sit on top and use the library ([`run`], [`demo`], …); no
//! library module uses them.

pub mod atlas_config;
pub mod cli;
pub mod collect;
pub mod commands;
pub mod config;
pub mod demo;
pub mod host;
pub mod log;
pub mod otlp;
pub mod progress;
pub mod random;
pub mod replay;
pub mod report;
pub mod run;
pub mod sender;
pub mod signals;
pub mod spool;
pub mod transport_key;

#[cfg(test)]
mod test_http;
