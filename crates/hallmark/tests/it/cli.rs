//! The CLI refuses bad input with one clear line and stores nothing.

use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_with_one_line_naming_the_value() {
    let up = Up::start();
    let uid = format!("unix:uid:{}", my_uid());
    up.create_entry("spiffe://example.org/dup", &["--selector", &uid]);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["entry", "create", "--spiffe-id", "spiffe://example.org/a//b", "--selector", &uid, "--owner", "o"],
            "spiffe://example.org/a//b",
        ),
        (
            vec!["entry", "create", "--spiffe-id", "spiffe://Example.org/a", "--selector", &uid, "--owner", "o"],
            "Example.org",
        ),
        (
            vec!["entry", "create", "--spiffe-id", "http://example.org/a", "--selector", &uid, "--owner", "o"],
            "http://example.org/a",
        ),
        (
            vec![
                "entry",
                "create",
                "--spiffe-id",
                "spiffe://example.org/a",
                "--selector",
                "k8s:ns:default",
                "--owner",
                "o",
            ],
            "k8s",
        ),
        (
            vec!["entry", "create", "--spiffe-id", "spiffe://example.org/a", "--selector", "unix:uid", "--owner", "o"],
            "unix:uid",
        ),
        (
            vec![
                "entry",
                "create",
                "--spiffe-id",
                "spiffe://example.org/a",
                "--selector",
                &uid,
                "--owner",
                "o",
                "--x509-ttl",
                "0s",
            ],
            "0s",
        ),
        (
            vec![
                "entry",
                "create",
                "--spiffe-id",
                "spiffe://example.org/a",
                "--selector",
                &uid,
                "--owner",
                "o",
                "--jwt-ttl",
                "soon",
            ],
            "soon",
        ),
        (
            vec!["entry", "create", "--spiffe-id", "spiffe://example.org/dup", "--selector", &uid, "--owner", "o"],
            "already exists",
        ),
        (
            vec!["entry", "create", "--spiffe-id", "spiffe://other.org/a", "--selector", &uid, "--owner", "o"],
            "other.org",
        ),
        (
            vec![
                "entry",
                "create",
                "--spiffe-id",
                "spiffe://example.org/a",
                "--selector",
                &uid,
                "--owner",
                "o",
                "--bogus-flag",
            ],
            "--bogus-flag",
        ),
        (vec!["entry", "show", "nope"], "nope"),
        (vec!["token", "create", "--ttl", "0"], "0"),
        (vec!["bundle", "show", "--format", "xml"], "xml"),
    ];
    for (args, needle) in cases {
        let out = up.cli(&args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        assert!(first.contains(needle), "{args:?}: error should name {needle:?}: {err}");
    }
    // Nothing half-written: only the one valid entry exists.
    let list = up.cli_json(&["entry", "list"]);
    assert_eq!(list["entries"].as_array().unwrap().len(), 1);
    // Unauthenticated admin calls are refused.
    let out = std::process::Command::new(bin())
        .args(["entry", "list"])
        .env("HALLMARK_SERVER", &up.env["HALLMARK_SERVER"])
        .env("HALLMARK_TOKEN", "wrong")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bearer token"));
}

#[tokio::test(flavor = "multi_thread")]
async fn entry_update_bumps_revision_and_reaches_the_agent() {
    let up = Up::start();
    let uid = format!("unix:uid:{}", my_uid());
    let e = up.create_entry("spiffe://example.org/before", &["--selector", &uid]);
    let id = e["id"].as_str().unwrap();
    let client = up.client().await;
    assert_eq!(client.fetch_x509_svid().await.unwrap().spiffe_id().to_string(), "spiffe://example.org/before");
    let u = up.cli_json(&["entry", "update", id, "--spiffe-id", "spiffe://example.org/after"]);
    assert_eq!(u["revision"], 2);
    assert_eq!(u["selectors"], e["selectors"], "flags not given keep their value");
    let got = wait_for("the renamed SVID", 20, || {
        let rt = tokio::runtime::Handle::current();
        let s = tokio::task::block_in_place(|| rt.block_on(client.fetch_x509_svid())).ok()?;
        (s.spiffe_id().to_string() == "spiffe://example.org/after").then_some(s)
    });
    assert_eq!(got.spiffe_id().to_string(), "spiffe://example.org/after");
}
