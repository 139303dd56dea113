// Proves: an entry still waiting for its first data (Loading) can be neither updated nor read (SPEC §2 "update before loaded", R15).
use livecache::core::{Added, Draft, Entry};

fn main() {
    let loading = Entry::<Added>::new(1).start_request(7);
    let _ = loading.data();
    let _ = loading.update(|d: &mut Draft<'_, i32>| **d += 1);
}
