//! The server's TOML configuration and its environment overrides.
#![no_main]
use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(c) = hallmark_server::config::ServerConfig::parse(s, &HashMap::new()) {
        let _ = c.validate();
    }
});
