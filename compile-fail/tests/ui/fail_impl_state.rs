// Proves: the State trait is sealed — a user type cannot become a lifecycle state (SPEC §2: the five states are the whole machine).
use livecache::core::{
    Phase,
    Live, State,
};

struct Forged;

impl State for Forged {
    const PHASE: Option<Phase> = Some(Phase::Loaded);
}

impl Live for Forged {}

fn main() {}
