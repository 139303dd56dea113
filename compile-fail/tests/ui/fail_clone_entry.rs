// Proves: an entry cannot be cloned, so no copy of an entry waiting for data can resolve
// data-loaded a second time, and no copy of a live entry outlives its removal (SPEC §2, R13, R14).
use livecache::core::{Added, Entry};

fn main() {
    let added: Entry<Added> = Entry::new(1);
    let twin = added.clone();
    let _first = added.start_request(1).load(1u32, 0);
    let _second = twin.load(2u32, 0);
}
