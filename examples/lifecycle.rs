//! A scripted lifecycle run through the sans-IO core, printed as its trace.
//!
//! Two channels of a `getMessages` endpoint: one loads, streams two updates and is removed
//! 60 s after its last subscriber leaves; the other is removed before its first data arrives,
//! so its data-loaded yields "removed before loaded". Run with `cargo run --example lifecycle`.

use livecache::core::Recording;
use livecache::core::{Cache, CacheConfig, Effect, EndpointConfig, Patches, Refetch};
use livecache::core::{KeyError, default_key};

fn main() -> Result<(), KeyError> {
    let mut cache: Cache<Vec<String>> = Cache::new(CacheConfig {
        recording: Recording::EventsWithPatches,
        ..Default::default()
    });
    let get_messages = cache
        .add_endpoint(
            "getMessages",
            EndpointConfig {
                has_lifecycle: true,
                ..EndpointConfig::default()
            },
        )
        .expect("endpoint names are distinct");
    let redux = default_key("getMessages", "redux")?;
    let general = default_key("getMessages", "general")?;

    // t = 0: two components subscribe; each entry starts its lifecycle, then its request.
    let sub_redux = cache
        .subscribe(0, get_messages, &redux, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    let sub_general = cache
        .subscribe(0, get_messages, &general, Refetch::IfMissing)
        .expect("the key is this endpoint's");
    let mut requests = Vec::new();
    let mut lifetimes = Vec::new();
    while let Some(effect) = cache.poll_effect() {
        match effect {
            Effect::StartRequest { key, request } => requests.push((key, request)),
            Effect::StartLifecycle { key, lifetime } => lifetimes.push((key, lifetime)),
            _ => {}
        }
    }

    // t = 120 ms: the history of #redux arrives; data-loaded resolves.
    for (key, request) in &requests {
        if key == &redux {
            cache.fulfil(120, key, *request, vec!["welcome".into()]);
        }
    }
    // The lifecycle streams two messages into the entry.
    if let Some((_, lifetime)) = lifetimes.iter().find(|(key, _)| key == &redux) {
        for (at, text) in [(500, "hi"), (900, "how are you?")] {
            if let Err(error) =
                cache.update_cached(at, *lifetime, Patches::NotWanted, |m| m.push(text.into()))
            {
                eprintln!("update refused: {error}");
            }
        }
    }

    // t = 1 s: both components unmount. #general never loaded.
    cache.unsubscribe(1_000, sub_redux);
    cache.unsubscribe(1_000, sub_general);
    // t = 61 s: the removal deadlines pass.
    while let Some(deadline) = cache.poll_timeout() {
        cache.handle_timeout(deadline);
    }
    // A late result for the removed #general entry is ignored; it does not re-create it.
    for (key, request) in &requests {
        if key == &general {
            cache.fulfil(62_000, key, *request, vec!["too late".into()]);
        }
    }

    for effect in std::iter::from_fn(|| cache.poll_effect()) {
        if let Effect::EntryRemoved {
            key, loaded: false, ..
        } = effect
        {
            println!("# data_loaded of {key} yields: removed before loaded");
        }
    }
    for event in cache.trace() {
        println!("{event}");
    }
    Ok(())
}
