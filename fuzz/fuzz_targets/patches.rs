//! cargo-fuzz target `patches`: the body is `livecache_model::fuzz::patches` (see its docs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| livecache_model::fuzz::patches(data));
