//! Decision latency with 10, 100, 1 000 and 10 000 policies in force.
//!
//! `cargo bench -p hallmark-policy --bench decision`
//!
//! Policies are a realistic mix: most are scoped to one workload, some to an
//! owner or a JWT audience, and a few are unscoped guards every request must
//! meet. For each size the indexed engine is measured, and for sizes up to
//! 1 000 the same request against the whole policy set in one Cedar call
//! (what the index avoids), in the same run.

#![expect(
    clippy::panic,
    clippy::unreachable,
    clippy::indexing_slicing,
    reason = "a benchmark stops at its first failure, showing it"
)]

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use cedar_policy::{Authorizer, PolicySet};
use hallmark_core::{Class, Entry, SpiffeId, Ttl};
use hallmark_policy::{Action, Classes, DecidedBy, Evidence, IssuanceRequest, PolicyEngine, decide};

/// The allocator the `hallmark` binary uses, so the figures are the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn policies(n: usize) -> String {
    let mut s = String::from(
        "@id(\"guard-prod\") forbid(principal, action, resource) when { principal.path like \"/prod/*\" && context.node_attestation == \"local\" };\n\
         @id(\"guard-ttl\") forbid(principal, action, resource) when { context.requested_ttl > 2592000 };\n",
    );
    for i in 0..n.saturating_sub(2) {
        match i % 10 {
            0..=6 => s.push_str(&format!(
                "@id(\"w{i}\") @max_ttl(\"1h\") permit(principal == Workload::\"e{i}\", action in [Action::\"issue_x509\", Action::\"renew\"], resource) when {{ context.selectors.contains(\"unix:uid:{i}\") }};\n"
            )),
            // Team t may use audience aud{(i / 100) % 50}: distinct (team, audience) grants.
            7 | 8 => s.push_str(&format!(
                "@id(\"o{i}\") permit(principal in Owner::\"team{}\", action == Action::\"issue_jwt\", resource == Audience::\"aud{}\");\n",
                i % 100,
                (i / 100) % 50
            )),
            _ => s.push_str(&format!(
                "@id(\"a{i}\") @max_ttl(\"5m\") permit(principal, action == Action::\"issue_jwt\", resource == Audience::\"svc{i}\") when {{ context.exe_sha256 != \"\" }};\n"
            )),
        }
    }
    s
}

fn entry(i: usize) -> Entry {
    Entry {
        id: format!("e{i}"),
        spiffe_id: SpiffeId::new(&format!("spiffe://example.org/ns/w{i}")).unwrap_or_else(|_| unreachable!()),
        parent_id: SpiffeId::new("spiffe://example.org/hallmark/agent/a").unwrap_or_else(|_| unreachable!()),
        selectors: [format!("unix:uid:{i}").parse().unwrap_or_else(|_| unreachable!())].into(),
        owner: format!("team{}", i % 100),
        class: Class::Machine,
        x509_ttl: Ttl::from_secs(3600).unwrap_or(Ttl::MIN),
        jwt_ttl: Ttl::from_secs(300).unwrap_or(Ttl::MIN),
        dns_names: vec![],
        hint: None,
        recovery: false,
        bind: hallmark_core::Bind::None,
        revision: 1,
        created_at: 0,
        updated_at: 0,
        revoked_at: None,
    }
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q) as usize];
    (at(0.5), at(0.99))
}

fn main() {
    // HALLMARK_BENCH_ITERATIONS lowers the count for profiling under callgrind.
    let iterations = std::env::var("HALLMARK_BENCH_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    println!(
        "| policies | indexed p50 | indexed p99 | policies handed to Cedar | all-in-one-set p50 | all-in-one-set p99 |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let sizes: Vec<usize> = match std::env::var("HALLMARK_BENCH_SIZES") {
        Ok(v) => v.split(',').filter_map(|x| x.parse().ok()).collect(),
        Err(_) => vec![10, 100, 1000, 10_000],
    };
    for n in sizes {
        let text = policies(n);
        let engine = PolicyEngine::compile(&text, 1).unwrap_or_else(|e| panic!("{e}"));
        let entries: Vec<Entry> = (0..n.max(1)).map(entry).collect();
        let evidences: Vec<Evidence> = entries
            .iter()
            .map(|e| Evidence {
                selectors: e.selectors.clone(),
                node_id: "n".into(),
                node_attestation: "join_token".into(),
                node_selectors: vec![],
                process: None,
            })
            .collect();
        let classes = Classes::default();
        let mut samples = Vec::with_capacity(iterations);
        let mut allowed = 0;
        // The first pass warms caches and allocator; only the second is measured.
        for k in 0..2 * iterations {
            let i = (k % iterations * 7919) % entries.len();
            let (action, aud) = if k % 4 == 3 {
                (Action::IssueJwt, Some(format!("aud{}", (i / 100) % 50)))
            } else {
                (Action::IssueX509, None)
            };
            let r = IssuanceRequest {
                action,
                entry: &entries[i],
                audience: aud.as_deref(),
                evidence: &evidences[i],
                exceptions: &[],
                now: 1_700_000_000,
                classes: &classes,
                trust_domain: "example.org",
                task: None,
            };
            let t = Instant::now();
            let v = decide(&engine, black_box(&r));
            let elapsed = t.elapsed().as_secs_f64() * 1e6;
            if let DecidedBy::EvaluationFailed { error } = &v.decided_by {
                panic!("{error}");
            }
            if k >= iterations {
                samples.push(elapsed);
                allowed += usize::from(v.allowed());
            }
        }
        let (p50, p99) = percentiles(samples);
        // The naive alternative: the whole set in one Cedar call.
        let (naive50, naive99) = if n <= 1000 {
            let set: PolicySet = text.parse().unwrap_or_else(|_| unreachable!());
            let auth = Authorizer::new();
            let req = naive_request(&entries[0]);
            let mut s = Vec::new();
            for _ in 0..(iterations / 10).max(200) {
                let t = Instant::now();
                black_box(auth.is_authorized(&req.0, &set, &req.1));
                s.push(t.elapsed().as_secs_f64() * 1e6);
            }
            let (a, b) = percentiles(s);
            (format!("{a:.1} µs"), format!("{b:.1} µs"))
        } else {
            ("—".into(), "—".into())
        };
        let handed = if n >= 10 { "≤ 2 guards + the matching scope" } else { "all" };
        println!("| {n} | {p50:.1} µs | {p99:.1} µs | {handed} | {naive50} | {naive99} |");
        black_box(allowed);
    }
}

fn naive_request(e: &Entry) -> (cedar_policy::Request, cedar_policy::Entities) {
    use cedar_policy::{Context, Entities, Entity, EntityUid, Request, RestrictedExpression};
    let p: EntityUid = format!("Workload::\"{}\"", e.id).parse().unwrap_or_else(|_| unreachable!());
    let o: EntityUid = format!("Owner::\"{}\"", e.owner).parse().unwrap_or_else(|_| unreachable!());
    let a: EntityUid = "Action::\"issue_x509\"".parse().unwrap_or_else(|_| unreachable!());
    let r: EntityUid = "TrustDomain::\"example.org\"".parse().unwrap_or_else(|_| unreachable!());
    let attrs: HashMap<String, RestrictedExpression> =
        [("path".to_owned(), RestrictedExpression::new_string(e.spiffe_id.path().to_owned()))].into();
    let ents = Entities::from_entities(
        [
            Entity::new(p.clone(), attrs, [o.clone()].into()).unwrap_or_else(|_| unreachable!()),
            Entity::with_uid(o),
            Entity::with_uid(r.clone()),
        ],
        None,
    )
    .unwrap_or_else(|_| unreachable!());
    let ctx = Context::from_pairs([
        (
            "selectors".to_owned(),
            RestrictedExpression::new_set([RestrictedExpression::new_string("unix:uid:0".into())]),
        ),
        ("exe_sha256".to_owned(), RestrictedExpression::new_string(String::new())),
        ("node_attestation".to_owned(), RestrictedExpression::new_string("join_token".into())),
        ("requested_ttl".to_owned(), RestrictedExpression::new_long(3600)),
    ])
    .unwrap_or_else(|_| unreachable!());
    (Request::new(p, a, r, ctx, None).unwrap_or_else(|_| unreachable!()), ents)
}
