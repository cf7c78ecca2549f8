//! AI-agent task input as `hallmark task run` and `POST /v1/tasks` take it:
//! scope items (`AUD[:ACTIONS]`, one per line, `!` marking one to approve),
//! the objective and the on-behalf-of subject. A parsed item's audience is a
//! valid one and re-parses to the same item.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = hallmark_core::check_objective(s);
    let _ = hallmark_core::check_subject(s);
    let _ = hallmark_core::objective_sha256(s);
    let (mut items, mut approve) = (Vec::new(), Vec::new());
    for line in s.lines() {
        match line.strip_prefix('!') {
            Some(aud) => approve.push(aud.to_owned()),
            None => items.push(line.to_owned()),
        }
    }
    if let Ok(scope) = hallmark_core::parse_scope(&items, &approve) {
        for item in &scope {
            hallmark_core::check_audience(&item.audience).expect("a parsed audience is valid");
            let text = if item.actions.is_empty() {
                item.audience.clone()
            } else {
                format!("{}:{}", item.audience, item.actions.join(","))
            };
            let again: hallmark_core::ScopeItem = text.parse().expect("a parsed item re-parses");
            assert_eq!((again.audience, again.actions), (item.audience.clone(), item.actions.clone()));
        }
    }
});
