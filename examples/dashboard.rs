//! A small trading dashboard, everything around the streaming flow (SPEC R35–R41):
//!
//! - `price` is polled every 200 ms while it is subscribed (R37) and retried when the quote
//!   server hiccups (R36);
//! - `portfolio` provides a tag; the `buy` mutation updates it optimistically, the server refuses
//!   the first order (the update is rolled back) and accepts the second, whose result
//!   invalidates the portfolio's tag so it refetches (R38, R39);
//! - each subscriber awaits `settled()`, so a failure is a result, not a hang (R35);
//! - everything the cache does is printed through `tracing` (R41).
//!
//! `cargo run --example dashboard` (about one second).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use livecache::core::{RetryPolicy, Tag};
use livecache::{Api, BoxError};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Holding {
    symbol: String,
    shares: u32,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_target(false)
        .without_time()
        .with_ansi(false)
        .init();
    let api = Api::builder().build();

    // The quote server: every third quote fails once (a 503), the price moves by a cent a poll.
    let quotes = Arc::new(AtomicU32::new(0));
    let price = api
        .query::<String, f64>("price")
        .retry(RetryPolicy {
            max_retries: 2,
            base_ms: 20,
            max_ms: 100,
            ..RetryPolicy::default()
        })
        .provides_tags(|symbol, _| vec![Tag::id("Price", symbol)])
        .query_fn({
            let quotes = Arc::clone(&quotes);
            move |_symbol: String| {
                let n = quotes.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n % 3 == 2 {
                        Err("503 Service Unavailable".into())
                    } else {
                        Ok(100.0 + f64::from(n) / 100.0)
                    }
                }
            }
        })
        .build()?;

    // The portfolio server, and the order desk that refuses the first order.
    let server: Arc<std::sync::Mutex<Vec<Holding>>> = Arc::default();
    let orders = Arc::new(AtomicU32::new(0));
    let portfolio = api
        .query::<(), Vec<Holding>>("portfolio")
        .provides_tags(|(), _| vec![Tag::kind("Portfolio")])
        .query_fn({
            let server = Arc::clone(&server);
            move |()| {
                let holdings = server.lock().map(|h| h.clone()).unwrap_or_default();
                async move { Ok(holdings) }
            }
        })
        .build()?;
    let buy = api
        .mutation::<(String, u32), ()>("buy")
        .mutation_fn({
            let (server, orders) = (Arc::clone(&server), Arc::clone(&orders));
            move |(symbol, shares): (String, u32)| {
                let accepted = orders.fetch_add(1, Ordering::SeqCst) > 0;
                if accepted && let Ok(mut holdings) = server.lock() {
                    holdings.push(Holding { symbol, shares });
                }
                async move {
                    if accepted {
                        Ok(())
                    } else {
                        Err("500 order desk closed".into())
                    }
                }
            }
        })
        .on_query_started({
            let portfolio = portfolio.clone();
            move |(symbol, shares), fulfilled| {
                let portfolio = portfolio.clone();
                async move {
                    // Show the holding at once; take it back if the order fails.
                    let change = portfolio.update_query_data(&(), |holdings| {
                        holdings.push(Holding { symbol, shares })
                    })?;
                    if let Err(error) = fulfilled.await {
                        println!("order failed ({error}): rolling back");
                        change.undo()?;
                    }
                    Ok(())
                }
            }
        })
        .invalidates_tags(|_, result| match result {
            Ok(()) => vec![Tag::kind("Portfolio")],
            Err(_) => vec![],
        })
        .build()?;

    let acme = price.subscribe("ACME".into())?;
    acme.poll_every(Some(Duration::from_millis(200)))?;
    let holdings = portfolio.subscribe(())?;
    println!("ACME: {:?}", acme.settled().await.map(|p| *p));
    println!("portfolio: {:?}", holdings.settled().await.map(|h| h.len()));

    // The first order is refused: the optimistic holding is rolled back.
    let first = buy.mutate(("ACME".into(), 10)).await;
    println!(
        "first order: {first:?}; portfolio now {:?}",
        holdings.state().data()
    );
    // The second is accepted: the portfolio's tag is invalidated and it refetches.
    let second = buy.mutate(("ACME".into(), 10)).await;
    let refetched = holdings.settled().await.map_err(|e| e.to_string())?;
    println!("second order: {second:?}; portfolio now {refetched:?}");

    // Let the price poll a few times (one of them retried after a 503).
    tokio::time::sleep(Duration::from_millis(700)).await;
    println!(
        "ACME after polling: {:?} ({} quotes asked)",
        acme.state().data(),
        quotes.load(Ordering::SeqCst)
    );
    let ok = first.is_err() && second.is_ok() && refetched.len() == 1;
    if !ok {
        return Err("the dashboard did not behave as described".into());
    }
    Ok(())
}
