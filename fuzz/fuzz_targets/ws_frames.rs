//! cargo-fuzz target `ws_frames`: the body is `livecache_check::fuzz::ws_frames` (see its docs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| livecache_check::fuzz::ws_frames(data));
