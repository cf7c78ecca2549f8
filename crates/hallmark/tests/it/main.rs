//! Integration tests: real `hallmark` processes, a real SQLite file (and
//! PostgreSQL when `HALLMARK_TEST_POSTGRES` is set), real gRPC over a real Unix
//! socket, and the independent `spiffe` crate as the Workload API client.

// Integration tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, clippy::unreachable)]

mod agent_tools;
mod attacks;
mod bind;
mod cli;
mod container;
mod crash;
mod drills;
mod evidence;
mod failclosed;
mod harness;
mod helper;
mod interop;
mod login;
mod node_attestation;
mod operator;
mod people_cli;
mod policy;
mod psat;
mod reports;
mod revocation;
mod robustness;
mod rotation;
mod scim;
mod sds;
mod secrets;
mod separate;
mod stuck_fs;
mod tasks;
mod token_exchange;
#[cfg(feature = "tpm")]
mod tpm;
mod trust;
mod up;
mod wit;
mod workload_containers;
