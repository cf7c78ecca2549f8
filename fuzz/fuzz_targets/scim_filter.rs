//! SCIM filters and PATCH paths (RFC 7644 §3.4.2.2, §3.5.2), as
//! `?filter=` and PATCH bodies bring them from the network: parsing never
//! panics or overflows the stack, and a filter that parses evaluates
//! against a resource without panicking.
#![no_main]
use hallmark_server::scim::filter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let resource = serde_json::json!({
        "id": "2819c223", "userName": "Alice", "active": true, "externalId": "x1",
        "name": {"givenName": "Alice", "familyName": "Smith"},
        "emails": [{"value": "alice@example.org", "type": "work", "primary": true}, {"value": "a@home.test"}],
        "members": [{"value": "p1", "type": "User"}],
        "meta": {"lastModified": "2026-01-02T00:00:00Z", "version": "W/\"3\""}
    });
    let exact = |attr: &str, _: Option<&str>| attr.eq_ignore_ascii_case("id");
    if let Ok(f) = filter::parse(text) {
        let _ = f.matches(&resource, &exact);
        let _ = f.equality();
    }
    if let Ok(filter::PatchPath::Values { filter: f, .. }) = filter::parse_path(text) {
        let _ = f.matches(&resource, &exact);
    }
});
