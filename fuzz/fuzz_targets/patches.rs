//! cargo-fuzz target `patches`: the body is `livecache_check::fuzz::patches` (see its docs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| livecache_check::fuzz::patches(data));
