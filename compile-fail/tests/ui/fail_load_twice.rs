// Proves: data-loaded resolves once — `load` (first data) is gone once an entry holds data, Loaded or Streaming (SPEC §2 "resolving data_loaded twice", R13, R11).
use livecache::core::{Added, Entry};

fn main() {
    let loaded = Entry::<Added>::new(1).start_request(1).load(1u32, 0);
    let _ = loaded.load(2u32, 1);
    let streaming = Entry::<Added>::new(2).load(1u32, 0).overwrite(2);
    let _ = streaming.load(3u32, 2);
}
