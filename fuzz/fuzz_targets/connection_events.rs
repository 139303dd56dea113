//! cargo-fuzz target `connection_events`: the body is `livecache_check::fuzz::connection_events` (see its docs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| livecache_check::fuzz::connection_events(data));
