//! `/proc/PID/cgroup` parsing: which container and pod a process runs in.
#![no_main]
use hallmark_agent::cgroup::parse_cgroup;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(facts) = parse_cgroup(s) {
        // Whatever the input, a container id is a full id and a pod UID is well formed.
        if let Some(c) = facts.container {
            assert!(c.id.len() == 64 && c.id.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        if let Some(p) = facts.pod_uid {
            assert_eq!(p.len(), 36);
        }
    }
});
