// Proves: the legal lifecycle compiles — Added → Loading (reject, retry) → Loaded → Streaming → Removed, and Added → Loaded by upsert (SPEC §2, R1, R8, R9, R11, R15, R20).
use livecache::core::{
    Phase, Status,
    Added, Entry, Loaded, Loading, Removed, Streaming, Updated,
};

fn main() {
    let added: Entry<Added> = Entry::new(1);
    assert_eq!(added.phase(), Some(Phase::Added));

    let mut loading: Entry<Loading> = added.start_request(1);
    loading.reject("boom".to_string());
    assert_eq!(loading.status(), Status::Rejected);
    loading.begin_request(2);

    let mut loaded: Entry<Loaded<Vec<u8>>> = loading.load(vec![1], 10);
    loaded.settle();
    assert!(!loaded.replace(vec![1], 11));
    loaded.begin_request(3);

    let loaded = match loaded.update(|d| {
        let _ = d.len();
    }) {
        Updated::Unchanged(loaded) => loaded,
        Updated::Changed(_) => unreachable!("a read-only recipe changes nothing"),
    };
    let mut streaming: Entry<Streaming<Vec<u8>>> = match loaded.update(|d| d.push(2)) {
        Updated::Changed(streaming) => streaming,
        Updated::Unchanged(_) => unreachable!("the recipe took mutable access"),
    };
    assert!(streaming.update(|d| d.push(3)));
    streaming.overwrite(vec![9]);
    assert!(streaming.replace(vec![8], 12));
    assert_eq!(streaming.data(), &vec![8]);

    let removed: Entry<Removed> = streaming.remove();
    assert!(removed.loaded());
    assert_eq!(removed.phase(), None);

    // Upsert: Added → Loaded directly, then removal before any update.
    let upserted = Entry::<Added, String>::new(2).load(7u32, 0).overwrite(8);
    assert_eq!(*upserted.data(), 8);
    assert!(upserted.remove().loaded());

    // Removal before data loaded.
    assert!(!Entry::<Added>::new(3).remove().loaded());
    assert!(!Entry::<Added>::new(4).start_request(1).remove().loaded());
}
