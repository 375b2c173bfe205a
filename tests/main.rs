//! The package's one integration-test binary: each module exercises the real `fleet-agent`
//! executable (or the library) the way a user or a server would.

mod atlas_config;
mod atlas_rate;
mod backends;
mod cli;
mod commands;
mod docs_vectors;
mod envelope;
mod exactly_once;
mod fault;
mod fuzz;
mod logs;
mod otlp;
mod otlp_forward;
mod packaging;
mod receiver;
mod receiver_limits;
#[cfg(feature = "postgres")]
mod receiver_postgres;
mod receiver_store;
mod replay;
mod sender;
mod spool;
mod storage;
mod support;
mod tls;
mod tls_suites;
mod torture;
