//! Auto-trait and error-type checks for the public API, in the style of tokio's
//! `tests/async_send_sync.rs` and `tests/sync_errors.rs`.
//!
//! Everything here is a compile-time assertion: each `require_*` / `is_error` helper has an empty
//! body and only a trait bound, so this file compiles only if the bound holds. The `#[test]`
//! functions call the helpers so that every assertion is instantiated and shows up by name in
//! the test output.
//!
//! - Handles (`Api`, `Endpoint`, `Subscription`, `EntryHandle<BeforeData | Loaded>`, `QueryState`,
//!   `PatchCollection`, `DataLoaded`) are `Send + Sync` (SPEC §1: the api is shared across tasks).
//! - Every future or stream the API returns is `Send`, so it can be awaited inside
//!   `tokio::spawn`; `changes()` and `removed()` are also `'static` (they outlive the handle).
//!   The generic `*_for_all` functions prove it for *every* `T: Data` (and `A: Arg`, `M`), not
//!   just the concrete types used in the tests.
//! - Every error type is `std::error::Error + Send + Sync + 'static`, so `?` turns it into a
//!   `BoxError` and it can cross task boundaries.
//!
//! Not asserted on purpose: `Sync` of the returned futures (nobody shares a future by
//! reference), `Unpin` (the futures are `async` blocks), and `Clone` of `EntryHandle` (it must
//! not be `Clone`; `compile-fail/tests/ui/fail_clone_entry.rs` and the handle
//! cases prove the typestate).

use futures::Stream;
use livecache::PatchCollection;
use livecache::core::KeyError;
use livecache::core::{PatchError as CorePatchError, UpdateRefused as CoreUpdateError};
use livecache::{
    Api, ApiBuilder, Arg, BeforeData, Data, DataLoaded, Endpoint, EntryHandle, EntryRemoved, Error,
    QueryError, QueryState, RemovedBeforeLoaded, Subscription, UpdateError, WithData,
};

// ===== helpers =====

fn require_send<T: Send>(_: &T) {}
fn require_send_static<T: Send + 'static>(_: &T) {}

fn is_send_sync<T: Send + Sync>() {}
fn is_send_sync_static<T: Send + Sync + 'static>() {}

fn is_error<E: std::error::Error + Send + Sync + 'static>() {}

/// The data type the concrete checks use.
type Msgs = Vec<String>;

/// A meta type that is `Send + Sync` (what `query_fn_with_meta` requires).
struct Meta;

// ===== handles =====

#[test]
fn api_is_send_sync() {
    is_send_sync_static::<Api>();
    is_send_sync_static::<ApiBuilder>();
}

#[test]
fn endpoint_is_send_sync() {
    is_send_sync_static::<Endpoint<u32, Msgs>>();
    is_send_sync_static::<Endpoint<(String, u32), Msgs, Meta>>();
    endpoint_for_all::<String, u64, Meta>();
}

#[test]
fn subscription_is_send_sync() {
    is_send_sync_static::<Subscription<Msgs>>();
    subscription_for_all::<u64>();
}

#[test]
fn entry_handle_is_send_sync() {
    is_send_sync_static::<EntryHandle<BeforeData, Msgs>>();
    is_send_sync_static::<EntryHandle<WithData, Msgs>>();
    is_send_sync_static::<EntryHandle<BeforeData, Msgs, Meta>>();
    is_send_sync_static::<EntryHandle<WithData, Msgs, Meta>>();
    is_send_sync_static::<DataLoaded<Msgs, Meta>>();
    entry_handle_for_all::<u64, Meta>();
}

#[test]
fn query_state_is_send_sync() {
    is_send_sync_static::<QueryState<Msgs>>();
    is_send_sync::<QueryState<u64>>();
}

#[test]
fn patch_collection_is_send_sync() {
    is_send_sync_static::<PatchCollection<u32, Msgs>>();
    is_send_sync_static::<PatchCollection<u32, Msgs, Meta>>();
    is_send_sync::<livecache::core::PatchSet>();
}

fn endpoint_for_all<A: Arg, T: Data, M: Send + Sync + 'static>() {
    is_send_sync_static::<Endpoint<A, T, M>>();
    is_send_sync_static::<PatchCollection<A, T, M>>();
}

fn subscription_for_all<T: Data>() {
    is_send_sync_static::<Subscription<T>>();
    is_send_sync_static::<QueryState<T>>();
}

fn entry_handle_for_all<T: Data, M: Send + Sync + 'static>() {
    is_send_sync_static::<EntryHandle<BeforeData, T, M>>();
    is_send_sync_static::<EntryHandle<WithData, T, M>>();
    is_send_sync_static::<DataLoaded<T, M>>();
}

// ===== futures and streams =====

/// `Subscription::loaded` is `Send` for every data type (it borrows the subscription).
fn loaded_future_for_all<T: Data>(sub: &Subscription<T>) {
    require_send(&sub.loaded());
}

/// `Subscription::changes` is `Send + 'static`: it outlives the subscription it came from.
fn changes_stream_for_all<T: Data>(sub: Subscription<T>) {
    let changes = sub.changes();
    drop(sub);
    require_send_static(&changes);
    require_stream(&changes);
}

fn require_stream<S: Stream>(_: &S) {}

/// `EntryHandle::data_loaded` is `Send + 'static` (it consumes the handle); `removed` is
/// `Send + 'static` on both handle states (it does not borrow the handle), and so is
/// `until_removed` of a `Send + 'static` future.
fn entry_futures_for_all<T: Data, M: Send + Sync + 'static>(
    added: EntryHandle<BeforeData, T, M>,
    loaded: EntryHandle<WithData, T, M>,
) {
    let removed_added = added.removed();
    let removed_loaded = loaded.removed();
    let until_added = added.until_removed(std::future::ready(1u8));
    let until_loaded = loaded.until_removed(std::future::ready(1u8));
    drop(loaded);
    require_send_static(&removed_added);
    require_send_static(&removed_loaded);
    require_send_static(&until_added);
    require_send_static(&until_loaded);
    let data_loaded = added.data_loaded();
    require_send_static(&data_loaded);
}

#[test]
fn returned_futures_are_send_for_every_data_type() {
    // The generic functions above are the proof (checked for every `T`, `M` when this file
    // compiles); naming them here ties them to this test and to the concrete types in use.
    let _ = loaded_future_for_all::<Msgs>;
    let _ = changes_stream_for_all::<Msgs>;
    let _ = entry_futures_for_all::<Msgs, ()>;
    let _ = entry_futures_for_all::<u64, Meta>;
}

/// The same checks on live values: a real subscription's `loaded()` and `changes()`, and a real
/// lifecycle handle's `removed()` and `data_loaded()` (both states), each then awaited.
#[tokio::test(start_paused = true)]
async fn returned_futures_are_send_on_live_values() -> Result<(), Error> {
    let api = Api::builder().build();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<bool>();
    let done_tx = std::sync::Mutex::new(Some(done_tx));
    let endpoint = api
        .query::<u32, Msgs>("autoTraits")
        .query_fn(|n: u32| async move { Ok(vec![n.to_string()]) })
        .on_cache_entry_added(move |_n, added| {
            let done_tx = done_tx.lock().map(|mut tx| tx.take()).ok().flatten();
            async move {
                let removed = added.removed();
                require_send_static(&removed);
                let data_loaded = added.data_loaded();
                require_send_static(&data_loaded);
                let Ok((loaded, _first)) = data_loaded.await else {
                    return Ok(());
                };
                let removed_loaded = loaded.removed();
                require_send_static(&removed_loaded);
                removed.await;
                removed_loaded.await;
                if let Some(tx) = done_tx {
                    let _ = tx.send(loaded.is_removed());
                }
                Ok(())
            }
        })
        .build()?;

    let sub = endpoint.subscribe(7)?;
    let loaded = sub.loaded();
    require_send(&loaded);
    assert_eq!(loaded.await.ok().as_deref(), Some(&vec!["7".to_owned()]));

    let changes = sub.changes();
    require_send_static(&changes);
    drop(changes);

    // A whole task using every future must be spawnable (the property `Send` exists for).
    let spawned = tokio::spawn({
        let endpoint = endpoint.clone();
        async move {
            let sub = endpoint.subscribe(8)?;
            let mut changes = Box::pin(sub.changes());
            let _first = futures::StreamExt::next(&mut changes).await;
            Ok::<_, Error>(sub.loaded().await)
        }
    });
    let data = spawned.await.expect("the task ran")?;
    assert_eq!(data.as_deref(), Ok(&vec!["8".to_owned()]));

    assert!(endpoint.remove(&7)?);
    assert_eq!(done_rx.await.ok(), Some(true), "the handler saw removal");
    drop(sub);
    Ok(())
}

// ===== errors =====

#[test]
fn runtime_errors_are_error_send_sync() {
    is_error::<Error>();
    is_error::<UpdateError>();
    is_error::<QueryError>();
    is_error::<EntryRemoved>();
    is_error::<RemovedBeforeLoaded>();
}

/// The WebSocket source: the connect future, the stream and its error cross tasks.
#[test]
fn ws_types_are_send() {
    let connect = livecache::ws::connect::<String>("ws://127.0.0.1:9/").open();
    require_send_static(&connect);
    is_send_sync_static::<livecache::ws::WsStream<String>>();
    is_error::<livecache::ws::WsError>();
}

#[test]
fn core_errors_are_error_send_sync() {
    is_error::<CorePatchError>();
    is_error::<CoreUpdateError>();
    is_error::<KeyError>();
}
