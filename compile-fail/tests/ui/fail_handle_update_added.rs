// Proves: a lifecycle handle in state BeforeData (no data yet) cannot update the entry — update_cached_data and update_cached_data_with_patches exist only on the WithData handle that data_loaded yields (SPEC §2 "update before loaded", R13, R15).
use livecache::core::Draft;
use livecache::{BeforeData, EntryHandle};

type Messages = Vec<String>;

// What an `on_cache_entry_added` handler receives.
async fn handler(entry: EntryHandle<BeforeData, Messages>) {
    let _ = entry.update_cached_data(|d: &mut Draft<'_, Messages>| d.push("early".into()));
    let _ = entry.update_cached_data_with_patches(|d: &mut Draft<'_, Messages>| d.clear());
    let _ = entry.data_loaded().await;
}

fn main() {
    let _ = handler;
}
