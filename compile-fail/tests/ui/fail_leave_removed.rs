// Proves: there is no transition out of Removed — no start_request, begin_request, load or second remove (SPEC §2 "leaving Removed", R7a, R10).
use livecache::core::{Added, Entry, Removed};

fn main() {
    let removed: Entry<Removed> = Entry::<Added>::new(1).start_request(1).remove();
    let _ = removed.clone().start_request(2);
    removed.clone().begin_request(3);
    let _ = removed.clone().load(0u8, 4);
    let _ = removed.remove();
}
