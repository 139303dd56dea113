// Proves: a removed entry can be neither updated nor read (SPEC §2 "update after removed", R14).
use livecache::core::{Added, Draft, Entry, Removed};

fn main() {
    let removed: Entry<Removed> = Entry::<Added>::new(1).load(vec![1u8], 0).remove();
    let _ = removed.data();
    let _ = removed.update(|d: &mut Draft<'_, Vec<u8>>| d.push(2));
    let _ = removed.overwrite(vec![3u8]);
}
