// Proves: the seal and the data-loaded promise cannot be named from outside, so neither can be implemented nor forged (SPEC §2, R13).
use livecache::core::entry::sealed::{DataLoadedPromise, Sealed};

struct Forged;

impl Sealed for Forged {}

fn main() {
    let _ = DataLoadedPromise(());
}
