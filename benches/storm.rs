//! W7, a reconnect storm, and the memory of an entry on a shared connection (R31, R32).
//!
//! `cargo bench --bench storm [-- --entries=N] [--memory-only]` starts a topic server on a loopback port
//! (axum; the JSON framing with acknowledged subscriptions) and an `Api` whose N entries (10,000
//! by default) each stream one topic over one `SharedConnection`. It prints JSON lines in the
//! peers' format:
//!
//! Both ways an entry can take its topic are measured (`"fed"` in each line): `"connection"`,
//! the connection's own task feeding every entry (`stream_from(connection.source_versioned(…))`,
//! no task per entry), and `"handler"`, a lifecycle handler per entry streaming its `Topic`.
//!
//! - `memory`: RSS per streaming entry (entry, topic, stream attachment, and the handler if
//!   any), measured in a child process that holds only the client (the server's own state per
//!   topic is not in it): its `VmRSS` once one entry streams (the connection up), once N more
//!   are live, and once N more again. `bytes_per_entry` is what each of the second N cost (the
//!   trace, bounded, is full by then: the cost of one more entry); `bytes_per_entry_average`
//!   the average over the first N, the trace's filling included. Medians of three runs.
//! - `storm` (W7): the server restarts — every socket drops, new ones are refused for 500 ms —
//!   while one message per topic is published during the outage; the figure is the time from
//!   the server accepting again to every entry `Live` with its message. Checked: no message
//!   lost, none twice, every entry live.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::{Message as AxumMessage, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{SinkExt, StreamExt};
use livecache::core::{ConnectionConfig, StreamStatus, Version};
use livecache::ws::shared::{JsonFraming, SharedConnection};
use livecache::{Api, Subscription};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::broadcast;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Msg {
    id: u64,
}

#[derive(Default)]
struct Truth {
    next_id: u64,
    topics: BTreeMap<String, Vec<Msg>>,
}

#[derive(Clone)]
struct Hub {
    truth: Arc<Mutex<Truth>>,
    out: broadcast::Sender<Option<(String, Msg)>>,
    refusing: Arc<Mutex<Option<Instant>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Hub {
    fn publish(&self, topic: &str) -> Msg {
        let msg = {
            let mut truth = lock(&self.truth);
            truth.next_id += 1;
            let msg = Msg { id: truth.next_id };
            truth
                .topics
                .entry(topic.into())
                .or_default()
                .push(msg.clone());
            msg
        };
        let _ = self.out.send(Some((topic.into(), msg.clone())));
        msg
    }
}

async fn upgrade(State(hub): State<Hub>, ws: WebSocketUpgrade) -> Response {
    let refusing = lock(&hub.refusing).is_some_and(|until| Instant::now() < until);
    if refusing {
        return (StatusCode::SERVICE_UNAVAILABLE, "restarting").into_response();
    }
    ws.on_upgrade(move |socket| serve(socket, hub))
}

async fn serve(socket: WebSocket, hub: Hub) {
    let mut published = hub.out.subscribe();
    let (mut tx, mut rx) = socket.split();
    let mut topics: BTreeSet<String> = BTreeSet::new();
    loop {
        tokio::select! {
            incoming = rx.next() => match incoming {
                Some(Ok(AxumMessage::Text(text))) => {
                    let frame: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    let topic = frame["topic"].as_str().unwrap_or_default().to_owned();
                    if frame["type"].as_str() == Some("subscribe") {
                        topics.insert(topic.clone());
                        let ack = json!({ "type": "subscribed", "topic": topic }).to_string();
                        if tx.send(AxumMessage::Text(ack.into())).await.is_err() {
                            return;
                        }
                    } else if frame["type"].as_str() == Some("unsubscribe") {
                        topics.remove(&topic);
                    }
                }
                Some(Ok(AxumMessage::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            sent = published.recv() => match sent {
                Ok(Some((topic, msg))) if topics.contains(&topic) => {
                    let frame = json!({ "topic": topic, "message": msg }).to_string();
                    if tx.send(AxumMessage::Text(frame.into())).await.is_err() {
                        return;
                    }
                }
                // `None`: the server restarts; every socket drops.
                Ok(None) => return,
                Ok(Some(_)) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

fn rss_bytes() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kb| kb * 1024.0)
}

async fn all(subs: &[Subscription<Vec<Msg>>], done: impl Fn(&Subscription<Vec<Msg>>) -> bool) {
    while !subs.iter().all(&done) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let entries: usize = std::env::args()
        .find_map(|a| a.strip_prefix("--entries=").and_then(|n| n.parse().ok()))
        .unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // The memory figure is measured in a process of its own that holds only the client side
    // (the `Api`, its connection and entries): the parent runs the server, which would
    // otherwise count its own state per topic in the same RSS.
    if let Some(url) =
        std::env::args().find_map(|a| a.strip_prefix("--memory-client=").map(String::from))
    {
        let fed = if std::env::args().any(|a| a == "--fed=handler") {
            Fed::Handler
        } else {
            Fed::Connection
        };
        return rt.block_on(memory_client(url, entries, fed));
    }
    rt.block_on(run(entries))
}

/// How each entry takes its topic.
#[derive(Clone, Copy, Debug)]
enum Fed {
    /// The connection's task applies every entry's messages (`SharedConnection::source_versioned`).
    Connection,
    /// A lifecycle handler per entry streams its `Topic`.
    Handler,
}

impl Fed {
    fn name(self) -> &'static str {
        match self {
            Fed::Connection => "connection",
            Fed::Handler => "handler",
        }
    }
}

/// The endpoint whose entries each stream one topic.
type Topics = livecache::Endpoint<String, Vec<Msg>>;

/// The client side: an `Api` whose versioned endpoint streams each entry's topic over one
/// shared connection to `url`, its snapshot served by `snapshot`.
fn client<S, F>(
    url: String,
    snapshot: S,
    fed: Fed,
) -> Result<(Api, Topics), Box<dyn std::error::Error>>
where
    S: Fn(String) -> F + Send + Sync + 'static,
    F: std::future::Future<Output = Result<(Vec<Msg>, Version), livecache::BoxError>>
        + Send
        + 'static,
{
    let api = Api::builder().build();
    let connection = SharedConnection::builder(url, JsonFraming::<Msg>::new().acknowledged())
        .config(ConnectionConfig {
            backoff_base_ms: 50,
            backoff_cap_ms: 1_000,
            ..ConnectionConfig::default()
        })
        .inbound_capacity(64)
        .spawn()?;
    let builder = api
        .query::<String, Vec<Msg>>("topic")
        .query_fn_versioned(snapshot);
    let endpoint = match fed {
        Fed::Connection => builder.stream_from(
            connection.source_versioned(|topic: &String| topic.clone(), |m| Version::new(m.id)),
            |list, m| list.push(m),
        ),
        Fed::Handler => builder.on_cache_entry_added(move |topic, entry| {
            let topic = connection.topic(&entry, topic);
            async move {
                entry
                    .try_stream_versioned(topic, |m| Version::new(m.id), |list, m| list.push(m))
                    .await;
                Ok(())
            }
        }),
    }
    .build()?;
    Ok((api, endpoint))
}

/// Subscribe `n` topics (`t0`…) and wait until every entry is `Live`.
async fn subscribe_all(
    endpoint: &Topics,
    n: usize,
) -> Result<Vec<Subscription<Vec<Msg>>>, Box<dyn std::error::Error>> {
    subscribe_range(endpoint, 0..n).await
}

/// Subscribe the topics `t{i}` for `i` in `range` and wait until every entry is `Live`.
async fn subscribe_range(
    endpoint: &Topics,
    range: std::ops::Range<usize>,
) -> Result<Vec<Subscription<Vec<Msg>>>, Box<dyn std::error::Error>> {
    let subs: Vec<_> = range
        .map(|i| endpoint.subscribe(format!("t{i}")))
        .collect::<Result<_, _>>()?;
    let live = |s: &Subscription<Vec<Msg>>| s.state().stream == StreamStatus::Live;
    tokio::time::timeout(Duration::from_secs(120), all(&subs, live)).await?;
    Ok(subs)
}

/// The memory per streaming entry, in a process holding only the client: its RSS once one
/// entry streams (the connection is up), once `entries` more do, and once `entries` more again.
/// Prints one JSON object: the average over the first `entries` (which includes the trace's
/// share: it is bounded, and fills up as they come) and the cost of each of the second
/// `entries` (the trace full by then: what one more entry costs).
async fn memory_client(
    url: String,
    entries: usize,
    fed: Fed,
) -> Result<(), Box<dyn std::error::Error>> {
    let (_api, endpoint) = client(
        url,
        |_topic: String| async move { Ok((Vec::new(), Version::new(0))) },
        fed,
    )?;
    let first = endpoint.subscribe("warm-up".to_owned())?;
    let live = |s: &Subscription<Vec<Msg>>| s.state().stream == StreamStatus::Live;
    tokio::time::timeout(
        Duration::from_secs(30),
        all(std::slice::from_ref(&first), live),
    )
    .await?;
    let start = rss_bytes();
    let subs = subscribe_range(&endpoint, 0..entries).await?;
    let middle = rss_bytes();
    let more = subscribe_range(&endpoint, entries..2 * entries).await?;
    let end = rss_bytes();
    let n = entries as f64;
    println!(
        "{}",
        json!({ "average": (middle - start) / n, "marginal": (end - middle) / n })
    );
    drop((subs, more));
    Ok(())
}

/// Run the memory client `RUNS` times for `fed` and print the medians of its figures.
async fn memory(url: &str, entries: usize, fed: Fed) -> Result<(), Box<dyn std::error::Error>> {
    const RUNS: usize = 3;
    let (mut average, mut marginal) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let output = tokio::process::Command::new(std::env::current_exe()?)
            .arg(format!("--memory-client={url}"))
            .arg(format!("--entries={entries}"))
            .arg(format!("--fed={}", fed.name()))
            .stderr(std::process::Stdio::inherit())
            .output()
            .await?;
        if !output.status.success() {
            return Err(format!("the memory client failed: {}", output.status).into());
        }
        let figures: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        let read = |name: &str| figures[name].as_f64().ok_or(format!("no {name}"));
        average.push(read("average")?);
        marginal.push(read("marginal")?);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (average, marginal) = (median(average), median(marginal));
    println!(
        "{}",
        json!({
            "peer": "livecache", "workload": "memory", "entries": entries, "fed": fed.name(),
            "what": "RSS per streaming entry on one shared connection (entry, topic, stream, and its handler if fed by one), the client alone in its process; medians of 3 runs",
            "bytes_per_entry": marginal.round(), "bytes_per_entry_average": average.round(),
            "target_bytes": 2048, "met": marginal <= 2048.0,
        })
    );
    Ok(())
}

async fn run(entries: usize) -> Result<(), Box<dyn std::error::Error>> {
    let (out, _) = broadcast::channel(1 << 16);
    let hub = Hub {
        truth: Arc::default(),
        out,
        refusing: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/ws", get(upgrade))
        .with_state(hub.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let url = format!("ws://{addr}/ws");

    // ----- memory per streaming entry (a child process: the client alone) -----
    for fed in [Fed::Connection, Fed::Handler] {
        memory(&url, entries, fed).await?;
    }
    if std::env::args().any(|a| a == "--memory-only") {
        return Ok(());
    }
    for fed in [Fed::Connection, Fed::Handler] {
        storm(&hub, &url, entries, fed).await?;
    }
    Ok(())
}

/// W7 with `entries` entries fed as `fed`, on a fresh server state.
async fn storm(
    hub: &Hub,
    url: &str,
    entries: usize,
    fed: Fed,
) -> Result<(), Box<dyn std::error::Error>> {
    *lock(&hub.truth) = Truth::default();
    let truth = Arc::clone(&hub.truth);
    let (_api, endpoint) = client(
        url.to_owned(),
        move |topic: String| {
            let truth = lock(&truth);
            let messages = truth.topics.get(&topic).cloned().unwrap_or_default();
            let watermark = truth.next_id;
            async move { Ok((messages, Version::new(watermark))) }
        },
        fed,
    )?;
    let subs = subscribe_all(&endpoint, entries).await?;

    // ----- W7: the server restarts; one message per topic is published while it is down -----
    let down = Duration::from_millis(500);
    *lock(&hub.refusing) = Some(Instant::now() + down);
    let _ = hub.out.send(None);
    let published: Vec<Msg> = (0..entries)
        .map(|i| hub.publish(&format!("t{i}")))
        .collect();
    tokio::time::sleep(down).await;
    let back = Instant::now();
    let caught_up = |i: usize, s: &Subscription<Vec<Msg>>| {
        let state = s.state();
        state.stream == StreamStatus::Live
            && state.data().is_some_and(|d| d.last() == published.get(i))
    };
    tokio::time::timeout(Duration::from_secs(120), async {
        while !subs.iter().enumerate().all(|(i, s)| caught_up(i, s)) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await?;
    let seconds = back.elapsed().as_secs_f64();
    let truth = lock(&hub.truth);
    let (mut lost, mut doubled) = (0usize, 0usize);
    for (i, sub) in subs.iter().enumerate() {
        let expected = truth
            .topics
            .get(&format!("t{i}"))
            .cloned()
            .unwrap_or_default();
        let got = sub.state().data().cloned().unwrap_or_default();
        let ids: BTreeSet<u64> = got.iter().map(|m| m.id).collect();
        doubled += got.len() - ids.len();
        lost += expected.iter().filter(|m| !ids.contains(&m.id)).count();
    }
    println!(
        "{}",
        json!({
            "peer": "livecache", "workload": "storm", "entries": entries, "fed": fed.name(),
            "what": "W7: server restarted (refusing 500 ms); time from it accepting again to every entry live with the message published while down",
            "seconds": seconds, "lost": lost, "duplicated": doubled, "verified": lost == 0 && doubled == 0,
        })
    );
    Ok(())
}
