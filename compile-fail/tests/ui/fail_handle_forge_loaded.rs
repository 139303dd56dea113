// Proves: a lifecycle handle state cannot be forged from outside the crate — Loaded, Added and EntryHandle have private fields, so the only way to a Loaded handle is data_loaded (SPEC §2 "each state is a distinct type" reached only by transitions, R13, R15).
use livecache::{Added, EntryHandle, Loaded};

type Messages = Vec<String>;

/// Stands for any value of any type (never called).
fn anything<T>() -> T {
    unimplemented!()
}

fn forge_state() -> Loaded {
    // The brace form of `Loaded(())`, so that every forging attempt below is reported.
    Loaded { 0: () }
}

fn forge_added() -> Added {
    Added { loaded: anything() }
}

fn forge_handle(entry: &EntryHandle<Added, Messages>) -> EntryHandle<Loaded, Messages> {
    EntryHandle {
        shared: anything(),
        key: entry.key().clone(),
        place: anything(),
        removal: anything(),
        changed: anything(),
        state: anything(),
        _data: std::marker::PhantomData,
    }
}

fn main() {
    let _ = (forge_state, forge_added, forge_handle);
}
