//! Test support shared by the tests of several Hallmark crates (a
//! dev-dependency only, never shipped): a fresh PostgreSQL database on the
//! server `HALLMARK_TEST_POSTGRES` names; and, with the `k8s` feature, what
//! the Kubernetes stand-ins need: HTTPS for `localhost` under a test CA
//! (`localhost_tls`) and a service-account issuer (`k8s_issuer`); and
//! software TPMs ([`swtpm`]).

// Test support: a failed step is a failed test, reported where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[cfg(feature = "k8s")]
pub mod k8s_issuer;
#[cfg(feature = "k8s")]
pub mod localhost_tls;

pub mod swtpm;

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The PostgreSQL server URL `HALLMARK_TEST_POSTGRES` names (CI always names
/// one: a failed assertion there); `None` outside CI without one, saying
/// that the PostgreSQL part is skipped.
pub fn postgres_server() -> Option<String> {
    let Ok(base) = std::env::var("HALLMARK_TEST_POSTGRES") else {
        assert!(std::env::var("CI").is_err(), "CI must provide HALLMARK_TEST_POSTGRES");
        eprintln!("HALLMARK_TEST_POSTGRES not set: PostgreSQL part skipped (scripts/test.sh sets it)");
        return None;
    };
    Some(base)
}

/// A fresh, empty PostgreSQL database named `PREFIX_…` on the server
/// [`postgres_server`] names, created with `psql`; returns its URL, or
/// `None` where [`postgres_server`] does.
///
/// The name is unique per process, per call and per run (the server
/// outlives test runs, and nextest runs each test in a process of its own).
pub fn postgres_db(prefix: &str) -> Option<String> {
    let base = postgres_server()?;
    let db = format!("{prefix}_{}", unique_suffix());
    let out = Command::new("psql")
        .arg(&base)
        .args(["-v", "ON_ERROR_STOP=1", "-c", &format!("CREATE DATABASE {db}")])
        .output()
        .expect("psql is installed with PostgreSQL");
    assert!(out.status.success(), "CREATE DATABASE {db}: {}", String::from_utf8_lossy(&out.stderr));
    let (server, _) = base.rsplit_once('/').expect("HALLMARK_TEST_POSTGRES is a URL ending in /DATABASE");
    Some(format!("{server}/{db}"))
}

/// Process id, a per-process counter and the time: lower case, digits and `_`.
fn unique_suffix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{}_{}_{:x}", std::process::id(), N.fetch_add(1, Ordering::Relaxed), nanos % (1 << 48))
}
