// Proves: data_loaded moves the Added handle — once it is called, the old handle cannot be read, awaited for removal or passed on; only the Loaded handle it yields lives on (SPEC §2 "a transition consumes the old value", R13).
use livecache::{BeforeData, EntryHandle};

type Messages = Vec<String>;

fn keep(_entry: EntryHandle<BeforeData, Messages>) {}

async fn read_after(entry: EntryHandle<BeforeData, Messages>) {
    let loaded = entry.data_loaded();
    let _ = entry.cache_entry();
    let _ = loaded.await;
}

async fn wait_removed_after(entry: EntryHandle<BeforeData, Messages>) {
    let _ = entry.data_loaded().await;
    entry.removed().await;
}

async fn pass_on_after(entry: EntryHandle<BeforeData, Messages>) {
    if let Ok((_loaded, _first)) = entry.data_loaded().await {
        keep(entry);
    }
}

fn main() {
    let _ = (read_after, wait_removed_after, pass_on_after);
}
