//! cargo-fuzz target `lifecycle_ops`: the body is `livecache_check::fuzz::lifecycle_ops` (see its docs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| livecache_check::fuzz::lifecycle_ops(data));
