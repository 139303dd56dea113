// Proves: a lifecycle handle state cannot be forged from outside the crate — WithData, BeforeData and EntryHandle have private fields, so the only way to a WithData handle is data_loaded (SPEC §2 "each state is a distinct type" reached only by transitions, R13, R15).
use livecache::{BeforeData, EntryHandle, WithData};

type Messages = Vec<String>;

/// Stands for any value of any type (never called).
fn anything<T>() -> T {
    unimplemented!()
}

fn forge_state() -> WithData {
    // The brace form of `WithData(())`, so that every forging attempt below is reported.
    WithData { 0: () }
}

fn forge_added() -> BeforeData {
    BeforeData { loaded: anything() }
}

fn forge_handle(entry: &EntryHandle<BeforeData, Messages>) -> EntryHandle<WithData, Messages> {
    EntryHandle {
        shared: anything(),
        key: entry.key().clone(),
        place: anything(),
        ending: anything(),
        changed: anything(),
        events: anything(),
        state: anything(),
        _data: std::marker::PhantomData,
    }
}

fn main() {
    let _ = (forge_state, forge_added, forge_handle);
}
