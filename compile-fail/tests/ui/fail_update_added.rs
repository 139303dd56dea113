// Proves: an entry just created (Added) has no data, so it cannot be updated or overwritten (SPEC §2 "update before loaded", R15).
use livecache::core::{Added, Draft, Entry};

fn main() {
    let added: Entry<Added> = Entry::new(1);
    let _ = added.update(|d: &mut Draft<'_, i32>| **d += 1);
    let added: Entry<Added> = Entry::new(2);
    let _ = added.overwrite(5);
}
