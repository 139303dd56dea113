// Proves: data_loaded resolves at most once per handle — it consumes the Added handle, so a second call does not compile, and the Loaded handle it yields has no data_loaded (SPEC §2 "resolving data_loaded twice", R11, R13).
use livecache::{BeforeData, EntryHandle};

type Messages = Vec<String>;

async fn wait_twice(entry: EntryHandle<BeforeData, Messages>) {
    let _first = entry.data_loaded().await;
    let _second = entry.data_loaded().await;
}

async fn wait_again_when_loaded(entry: EntryHandle<BeforeData, Messages>) {
    if let Ok((loaded, _first)) = entry.data_loaded().await {
        let _again = loaded.data_loaded().await;
    }
}

fn main() {
    let _ = (wait_twice, wait_again_when_loaded);
}
