// Proves: transitions consume the handle — the old state cannot be used after start_request, load, update or remove (SPEC §2 "a transition consumes the old value").
use livecache::core::{Added, Entry};

fn main() {
    let added: Entry<Added> = Entry::new(1);
    let loading = added.start_request(1);
    let _ = added.phase();

    let loaded = loading.load(vec![1u8], 0);
    let _ = loading.in_flight();

    let removed = loaded.remove();
    let _ = loaded.data();
    let _ = removed;

    let loaded = Entry::<Added>::new(2).load(vec![1u8], 0);
    let _ = loaded.update(|d| d.push(2));
    let _ = loaded.data();
}
