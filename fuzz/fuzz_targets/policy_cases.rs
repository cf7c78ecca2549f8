//! Policy test tables (`hallmark policy test --cases`): each case's entry,
//! evidence and exceptions are built into a Cedar request and decided.
#![no_main]
use std::sync::OnceLock;

use hallmark_policy::{Classes, PolicyEngine};
use libfuzzer_sys::fuzz_target;

fn engine() -> &'static PolicyEngine {
    static E: OnceLock<PolicyEngine> = OnceLock::new();
    E.get_or_init(|| {
        PolicyEngine::compile(
            r#"@id("jwt") @max_ttl("15m") permit(principal, action == Action::"issue_jwt", resource == Audience::"db");
               @id("x509") permit(principal, action in [Action::"issue_x509", Action::"renew"], resource);
               @id("prod") forbid(principal, action, resource) when { principal.path like "/prod/*" && context.node_attestation != "join_token" };"#,
            1,
        )
        .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(file) = serde_json::from_slice::<hallmark_policy::cases::CaseFile>(data) else { return };
    let _ = hallmark_policy::cases::run(engine(), &Classes::default(), &file);
});
