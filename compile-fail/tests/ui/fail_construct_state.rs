// Proves: states cannot be forged outside the crate — their fields are private, so no Loaded/Removed without its transition (SPEC §2 "each state is a distinct type" reached only by transitions, R13).
use livecache::core::{Loaded, Removed};

fn main() {
    let _ = Loaded { data: 1 };
    let _ = Removed { loaded: true };
}
