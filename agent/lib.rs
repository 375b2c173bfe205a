//! fleet-agent: a small synchronous endpoint telemetry agent.
//!
//! Data flow (docs/architecture.md): widgets ([`fleet_widgets`]) produce samples, [`collect`]
//! schedules them and makes [`record::Record`]s, the service loop ([`run`]) hands them on.
//! [`config`] loads and validates the JSON config, [`cli`] and [`commands`] are the command
//! line, [`host`] is the real machine behind the widgets' `Host` trait.

pub mod atlas_config;
pub mod cli;
pub mod collect;
pub mod commands;
pub mod config;
pub mod demo;
pub mod envelope;
pub mod host;
pub mod keys;
pub mod log;
pub mod progress;
pub mod random;
pub mod receiver;
pub mod record;
pub mod replay;
pub mod report;
pub mod run;
pub mod sender;
pub mod signals;
pub mod spool;
pub mod transport_key;
