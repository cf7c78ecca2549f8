//! Fail closed: with the server gone the agent keeps serving SVIDs that are
//! still valid, reports itself degraded, withdraws each SVID at its expiry
//! (never serving it expired), and recovers without a restart when the
//! server returns.

use std::time::Duration;

use crate::harness::*;
use crate::separate::{join_agent_with, start_server_with};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn metric(body: &[u8], name: &str) -> i64 {
    crate::harness::metric(body, name).unwrap_or_else(|| panic!("no metric {name}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_fails_closed_and_recovers_without_a_restart() {
    let mut dep = start_server_with(None, "default_x509_ttl = \"8s\"\n");
    let health = free_port();
    let (agent, agent_id, socket) = join_agent_with(&dep, "fc", &format!("health_listen = \"127.0.0.1:{health}\"\n"));
    let (client, _) = dep.serve_me("spiffe://example.org/fc", &agent, &agent_id, &socket).await;
    let ready = format!("http://127.0.0.1:{health}/ready");
    let metrics = format!("http://127.0.0.1:{health}/metrics");
    wait_for("the agent to be ready", 10, || (http_get(&ready).0 == 200).then_some(()));
    assert_eq!(http_get(&format!("http://127.0.0.1:{health}/live")).0, 200);

    dep.server.kill();
    wait_for("the agent to report itself not ready", 15, || (http_get(&ready).0 == 503).then_some(()));
    let (_, body) = http_get(&metrics);
    assert_eq!(metric(&body, "hallmark_agent_degraded"), 1);
    assert_eq!(metric(&body, "hallmark_agent_server_connected"), 0);
    assert!(String::from_utf8_lossy(&http_get(&ready).1).contains("server unreachable"));

    // Valid SVIDs keep being served; none is ever served expired; then none at all.
    let mut served = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        // The agent serves only while `not_after` is ahead of its clock, which
        // reads at least `asked` when it answers (compared with the time after
        // the answer, a second boundary passed in between looked like expiry).
        let asked = hallmark_core::now_unix();
        match client.fetch_x509_svid().await {
            Ok(s) => {
                let (_, c) = x509_parser::parse_x509_certificate(s.leaf().as_bytes()).unwrap();
                let not_after = c.validity().not_after.timestamp();
                assert!(not_after > asked, "an expired SVID was served");
                served += 1;
            }
            Err(e) => {
                assert!(denied(&format!("{e:?}")), "{e:?}");
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "the SVID was never withdrawn");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served > 0, "SVIDs were served while the server was down");
    let (_, body) = http_get(&metrics);
    assert!(metric(&body, "hallmark_agent_svids_expired_withdrawn_total") >= 1);
    assert!(agent.log().contains("degraded"), "the agent logs the degraded state");

    // The server returns: identities come back; the agent was never restarted.
    dep.start_server_again();
    let back = crate::separate::wait_for_svid(&client).await;
    assert!(back.is_some(), "no SVID after the server returned\n{}", agent.log());
    wait_for("the agent to be ready again", 15, || (http_get(&ready).0 == 200).then_some(()));
    assert_eq!(metric(&http_get(&metrics).1, "hallmark_agent_degraded"), 0);
    drop(agent);
}
