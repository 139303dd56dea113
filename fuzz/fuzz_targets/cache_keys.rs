//! cargo-fuzz target `cache_keys`: the body is `livecache_check::fuzz::cache_keys` (see its docs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| livecache_check::fuzz::cache_keys(data));
