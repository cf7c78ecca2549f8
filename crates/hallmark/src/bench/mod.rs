//! `hallmark bench`: measure a scenario on this machine against real
//! processes, printing each figure beside its target (see BENCHMARKS.md).

mod issuance;
mod process_end;
mod propagation;
mod scale;
pub mod simagent;
mod tasks;
mod workload_api;

use clap::Subcommand;

/// The scenarios.
#[derive(Subcommand)]
pub enum BenchCmd {
    /// Entry creation and revocation (of a serial and of an entry) until visible
    /// on a workload's open stream, with many simulated agents connected.
    Propagation(propagation::Args),
    /// X.509-SVIDs per second through the real agent → server path, beside the
    /// raw ECDSA sign + verify rate of the same cores.
    Issuance(issuance::Args),
    /// FetchJWTSVID and FetchX509SVID from the agent's cache, attestation
    /// included, with many concurrent clients.
    WorkloadApi(workload_api::Args),
    /// `bind: process`: from a workload process's exit to its credential
    /// withdrawn by the agent and its jti refused by ValidateJWTSVID.
    ProcessEnd(process_end::Args),
    /// AI-agent tasks: task credential minting, and an objective change or a
    /// task's end until its credentials are withdrawn and refused.
    Tasks(tasks::Args),
    /// Server start with a million entries, authorized-entry lookup with
    /// 50 000 agents, agent memory per cached SVID.
    Scale(scale::Args),
}

/// Runs a scenario.
pub async fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Propagation(a) => propagation::run(a).await,
        BenchCmd::Issuance(a) => issuance::run(a).await,
        BenchCmd::WorkloadApi(a) => workload_api::run(a).await,
        BenchCmd::Scale(a) => scale::run(a).await,
        BenchCmd::ProcessEnd(a) => process_end::run(a).await,
        BenchCmd::Tasks(a) => tasks::run(a).await,
    }
}

/// (p50, p99, max) of `v`, which it sorts; zeros when empty.
#[expect(clippy::indexing_slicing, reason = "v is not empty (checked above) and each position lies in 0..v.len()")]
pub fn percentiles(v: &mut [i64]) -> (i64, i64, i64) {
    if v.is_empty() {
        return (0, 0, 0);
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99), v[v.len() - 1])
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles_of_a_hundred() {
        let mut v: Vec<i64> = (1..=100).rev().collect();
        assert_eq!(super::percentiles(&mut v), (51, 99, 100));
        assert_eq!(super::percentiles(&mut []), (0, 0, 0));
    }
}
