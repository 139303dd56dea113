//! The shared connection under a simulated network (R31, R32): the real tokio driver and a real
//! WebSocket topic server on turmoil's seeded, single-threaded network. The server publishes a
//! message to each topic every 100 ms for the first 30 simulated seconds while the network
//! misbehaves; then the entries must hold exactly the server's truth — every message once, in
//! order — and be `Live`; every wait between attempts must be within its backoff bound; and
//! once the entries are dropped no attempt may follow and no socket remain. The seed is printed
//! with a failure; `LIVECACHE_SIM_SEEDS=n` runs n more seeds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_tungstenite::tungstenite::Message as WsMessage;
use futures::StreamExt;
use livecache::Api;
use livecache::core::{ConnectionConfig, StreamStatus, Version};
use livecache::ws::shared::{Connector, JsonFraming, SharedConnection};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::time::Instant;

/// The topics of the first scenario.
const TOPICS: [&str; 3] = ["alpha", "beta", "gamma"];
const PORT: u16 = 9000;
/// The server publishes until this simulated time.
const PUBLISH_UNTIL: Duration = Duration::from_secs(30);
/// The client checks at this simulated time.
const CHECK_AT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Msg {
    id: u64,
}

/// The server's truth, which survives its restarts (a database, say).
#[derive(Default)]
struct Truth {
    next_id: u64,
    topics: BTreeMap<String, Vec<Msg>>,
}

type Shared = Arc<Mutex<Truth>>;

fn lock(truth: &Shared) -> std::sync::MutexGuard<'_, Truth> {
    match truth.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The server host: accepts WebSockets, takes subscriptions, publishes while it runs.
async fn server(truth: Shared) -> turmoil::Result {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
    let (out, _) = broadcast::channel::<(String, Msg)>(4096);
    let publisher = out.clone();
    let publishing = Arc::clone(&truth);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while turmoil::elapsed() < PUBLISH_UNTIL {
            tick.tick().await;
            for topic in TOPICS {
                let msg = {
                    let mut truth = lock(&publishing);
                    truth.next_id += 1;
                    let msg = Msg { id: truth.next_id };
                    truth
                        .topics
                        .entry(topic.into())
                        .or_default()
                        .push(msg.clone());
                    msg
                };
                let _ = publisher.send((topic.into(), msg));
            }
        }
    });
    accept(listener, out).await
}

/// Accept WebSockets for ever: each takes subscriptions (acknowledged once taken: what is
/// published from then on reaches it) and gets the messages of its topics.
async fn accept(
    listener: turmoil::net::TcpListener,
    out: broadcast::Sender<(String, Msg)>,
) -> turmoil::Result {
    loop {
        let (stream, _) = listener.accept().await?;
        let mut published = out.subscribe();
        tokio::spawn(async move {
            let Ok(socket) = async_tungstenite::tokio::accept_async(stream).await else {
                return;
            };
            let (mut tx, mut rx) = socket.split();
            let mut topics: BTreeSet<String> = BTreeSet::new();
            loop {
                tokio::select! {
                    biased;
                    incoming = rx.next() => match incoming {
                        Some(Ok(WsMessage::Text(text))) => {
                            let frame: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                            let topic = frame["topic"].as_str().unwrap_or_default().to_owned();
                            match frame["type"].as_str() {
                                Some("subscribe") => {
                                    topics.insert(topic.clone());
                                    // Acknowledged once taken: what is published from now on
                                    // reaches this socket.
                                    let ack = serde_json::json!({ "type": "subscribed", "topic": topic });
                                    if tx.send(WsMessage::text(ack.to_string())).await.is_err() {
                                        return;
                                    }
                                }
                                Some("unsubscribe") => { topics.remove(&topic); }
                                _ => {}
                            }
                        }
                        Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                        Some(Ok(_)) => {}
                    },
                    sent = published.recv() => match sent {
                        Ok((topic, msg)) if topics.contains(&topic) => {
                            let frame = serde_json::json!({ "topic": topic, "message": msg });
                            if tx.send(WsMessage::text(frame.to_string())).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        });
    }
}

/// Connects over the simulated network, noting when each attempt starts.
struct Simulated {
    attempts: Log<Instant>,
}

/// What a scenario notes as it runs, in simulated time.
type Log<T> = Arc<Mutex<Vec<T>>>;

fn note<T>(log: &Log<T>, item: T) {
    match log.lock() {
        Ok(mut log) => log.push(item),
        Err(poisoned) => poisoned.into_inner().push(item),
    }
}

fn read<T: Clone>(log: &Log<T>) -> Vec<T> {
    match log.lock() {
        Ok(log) => log.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

impl Connector for Simulated {
    type Stream = turmoil::net::TcpStream;

    fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> futures::future::BoxFuture<'static, std::io::Result<Self::Stream>> {
        note(&self.attempts, Instant::now());
        let host = host.to_owned();
        Box::pin(async move { turmoil::net::TcpStream::connect((host.as_str(), port)).await })
    }
}

/// Note each `Reconnecting { attempt }` an entry is told, with when it was told: the machine
/// tells it as the connection (or an attempt) fails and starts waiting out retry `attempt`'s
/// delay.
fn watch_reconnects(sub: &livecache::Subscription<Vec<Msg>>) -> Log<(Instant, u32)> {
    let log: Log<(Instant, u32)> = Arc::default();
    let noted = Arc::clone(&log);
    let mut changes = sub.changes();
    tokio::spawn(async move {
        while let Some(state) = changes.next().await {
            if let StreamStatus::Reconnecting { attempt, .. } = state.stream {
                note(&noted, (Instant::now(), attempt));
            }
        }
    });
    log
}

/// Every wait between attempts is within its backoff bound (R32): after an entry is told
/// `Reconnecting { attempt: n }`, the next attempt starts within `backoff_bound(n - 1)` (the
/// entry is told as the wait starts, or a tick later; one tick of slack).
fn check_backoff(
    config: &ConnectionConfig,
    reconnects: &[(Instant, u32)],
    attempts: &[Instant],
    tick: Duration,
    seed: u64,
) -> Result<(), String> {
    for &(told, attempt) in reconnects {
        let Some(next) = attempts.iter().find(|&&at| at >= told) else {
            return Err(format!("seed {seed}: no attempt after reconnect {attempt}"));
        };
        let waited = next.duration_since(told);
        let bound = Duration::from_millis(config.backoff_bound(attempt.saturating_sub(1))) + tick;
        if waited > bound {
            return Err(format!(
                "seed {seed}: attempt {attempt} waited {waited:?}, over its bound {bound:?}"
            ));
        }
    }
    Ok(())
}

/// The versioned endpoint of the clients: one entry per topic, its snapshot read straight from
/// the server's store (with its watermark), its messages streamed over one shared connection
/// (simulated, acknowledged subscriptions).
fn topic_endpoint(
    api: &Api,
    truth: &Shared,
    config: ConnectionConfig,
    keep: Duration,
    attempts: &Log<Instant>,
    fed: Fed,
) -> Result<livecache::Endpoint<String, Vec<Msg>>, livecache::Error> {
    let connection = SharedConnection::builder(
        format!("ws://server:{PORT}/ws"),
        JsonFraming::<Msg>::new().acknowledged(),
    )
    .config(config)
    .connector(Simulated {
        attempts: Arc::clone(attempts),
    })
    .spawn()?;
    let snapshot_truth = Arc::clone(truth);
    let builder = api
        .query::<String, Vec<Msg>>("topic")
        .keep_unused_data_for(keep)
        .query_fn_versioned(move |topic: String| {
            let truth = lock(&snapshot_truth);
            let messages = truth.topics.get(&topic).cloned().unwrap_or_default();
            let watermark = truth.next_id;
            async move { Ok((messages, Version::new(watermark))) }
        });
    match fed {
        Fed::ByHandler => builder.on_cache_entry_added(move |topic, entry| {
            let topic = connection.topic(&entry, topic);
            async move {
                entry
                    .try_stream_versioned(topic, |m| Version::new(m.id), |list, m| list.push(m))
                    .await;
                Ok(())
            }
        }),
        Fed::ByConnection => builder.stream_from(
            connection.source_versioned(|topic: &String| topic.clone(), |m| Version::new(m.id)),
            |list, m| list.push(m),
        ),
    }
    .build()
}

/// How an entry gets its topic's messages: a lifecycle handler streams its `Topic`, or the
/// connection's own task feeds it (`SharedConnection::source_versioned`).
#[derive(Clone, Copy, Debug)]
enum Fed {
    ByHandler,
    ByConnection,
}

/// The client host: entries for every topic on one shared connection; at the end, the data
/// must be the truth.
async fn client(truth: Shared, seed: u64, fed: Fed) -> turmoil::Result {
    let api = Api::builder().build();
    let config = ConnectionConfig {
        backoff_base_ms: 100,
        backoff_cap_ms: 2_000,
        connect_timeout_ms: 1_000,
        heartbeat_ms: Some(500),
        idle_timeout_ms: 2_000,
        stable_after_ms: 1_000,
        linger_ms: 200,
        seed,
        ..ConnectionConfig::default()
    };
    let attempts: Log<Instant> = Arc::default();
    let endpoint = topic_endpoint(&api, &truth, config, Duration::ZERO, &attempts, fed)?;
    let subs: Vec<_> = TOPICS
        .iter()
        .map(|t| endpoint.subscribe((*t).to_owned()))
        .collect::<Result<_, _>>()?;
    let reconnects = watch_reconnects(&subs[0]);
    tokio::time::sleep(CHECK_AT).await;
    for (topic, sub) in TOPICS.iter().zip(&subs) {
        let state = sub.state();
        let expected = lock(&truth).topics.get(*topic).cloned().unwrap_or_default();
        let got = state.data().cloned().unwrap_or_default();
        if got != expected {
            let (g, e): (Vec<u64>, Vec<u64>) = (
                got.iter().map(|m| m.id).collect(),
                expected.iter().map(|m| m.id).collect(),
            );
            return Err(
                format!("seed {seed}, {fed:?}, topic {topic}: data {g:?}, truth {e:?}").into(),
            );
        }
        if state.stream != StreamStatus::Live {
            return Err(format!("seed {seed}, topic {topic}: {:?}", state.stream).into());
        }
    }
    let reconnects = read(&reconnects);
    if reconnects.is_empty() {
        return Err(format!("seed {seed}: the faults made no reconnect").into());
    }
    check_backoff(&config, &reconnects, &read(&attempts), TICK, seed)?;
    // Every entry gone: the connection lingers, then closes, and nothing connects again.
    check_the_end(subs, Duration::from_secs(10), &attempts, seed).await
}

/// Drop the entries' subscriptions; `settle` later, the connection's one open socket must be
/// closed and no attempt made since. turmoil counts an attempt abandoned before the server
/// answered (during a partition) as a socket for ever, so the check is on the difference.
async fn check_the_end<S>(
    subs: Vec<S>,
    settle: Duration,
    attempts: &Log<Instant>,
    seed: u64,
) -> turmoil::Result {
    let before = turmoil::established_tcp_stream_count();
    drop(subs);
    let left = Instant::now();
    tokio::time::sleep(settle).await;
    let after = turmoil::established_tcp_stream_count();
    if after + 1 != before {
        return Err(format!("seed {seed}: {before} sockets before, {after} after").into());
    }
    if let Some(late) = read(attempts).iter().find(|&&at| at > left) {
        let late = late.duration_since(left);
        return Err(format!("seed {seed}: an attempt {late:?} after the last entry left").into());
    }
    Ok(())
}

/// turmoil's default tick.
const TICK: Duration = Duration::from_millis(1);

/// A fault at a simulated time.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// The server restarts (its sockets drop).
    Bounce,
    /// The link goes down: nothing passes, nothing is closed (a half-open connection).
    Partition,
    /// The link comes back.
    Repair,
    /// Messages in flight are held…
    Hold,
    /// …then delivered.
    Release,
}

fn run(seed: u64, faults: &[(Duration, Fault)], fed: Fed) {
    let truth: Shared = Arc::default();
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(120))
        .rng_seed(seed)
        .build();
    let server_truth = Arc::clone(&truth);
    sim.host("server", move || server(Arc::clone(&server_truth)));
    sim.client("client", client(Arc::clone(&truth), seed, fed));
    drive(&mut sim, faults.to_vec(), seed);
}

/// Step `sim` until its client is done, bringing each fault about at its time.
fn drive(sim: &mut turmoil::Sim<'_>, mut faults: Vec<(Duration, Fault)>, seed: u64) {
    faults.sort_by_key(|(at, _)| *at);
    let mut pending = faults.into_iter().peekable();
    loop {
        while let Some((_, fault)) = pending.next_if(|(at, _)| sim.elapsed() >= *at) {
            match fault {
                Fault::Bounce => sim.bounce("server"),
                Fault::Partition => sim.partition("server", "client"),
                Fault::Repair => sim.repair("server", "client"),
                Fault::Hold => sim.hold("server", "client"),
                Fault::Release => sim.release("server", "client"),
            }
        }
        match sim.step() {
            Ok(true) => return,
            Ok(false) => {}
            Err(error) => panic!("seed {seed}: {error}"),
        }
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn r32_sim_server_restart_partition_and_held_messages_lose_nothing() {
    let faults = [
        (secs(5), Fault::Bounce),
        (secs(8), Fault::Hold),
        (secs(9), Fault::Release),
        // Thirty seconds without a link: the heartbeat finds it, attempts back off to the cap.
        (secs(12), Fault::Partition),
        (secs(42), Fault::Repair),
        (secs(45), Fault::Bounce),
    ];
    let extra: u64 = std::env::var("LIVECACHE_SIM_SEEDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    for seed in 0..=extra {
        for fed in [Fed::ByHandler, Fed::ByConnection] {
            run(seed, &faults, fed);
        }
    }
}

/// The second scenario's server: `topics` topics, one message to a topic picked by the seeded
/// generator every 50 ms until `until`.
async fn busy_server(truth: Shared, topics: usize, until: Duration, seed: u64) -> turmoil::Result {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
    let (out, _) = broadcast::channel::<(String, Msg)>(65_536);
    let publisher = out.clone();
    let publishing = Arc::clone(&truth);
    tokio::spawn(async move {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        while turmoil::elapsed() < until {
            tick.tick().await;
            let topic = format!("t{}", rng.usize(0..topics));
            let msg = {
                let mut truth = lock(&publishing);
                truth.next_id += 1;
                let msg = Msg { id: truth.next_id };
                truth
                    .topics
                    .entry(topic.clone())
                    .or_default()
                    .push(msg.clone());
                msg
            };
            let _ = publisher.send((topic, msg));
        }
    });
    accept(listener, out).await
}

/// The second scenario's client: `topics` entries on one connection; at `check_at` every entry
/// must hold its topic's truth and be `Live`.
async fn busy_client(
    truth: Shared,
    topics: usize,
    check_at: Duration,
    seed: u64,
    fed: Fed,
) -> turmoil::Result {
    let api = Api::builder().build();
    let config = ConnectionConfig {
        backoff_base_ms: 200,
        backoff_cap_ms: 5_000,
        connect_timeout_ms: 2_000,
        heartbeat_ms: Some(2_000),
        idle_timeout_ms: 6_000,
        stable_after_ms: 5_000,
        linger_ms: 500,
        seed,
        ..ConnectionConfig::default()
    };
    let attempts: Log<Instant> = Arc::default();
    let endpoint = topic_endpoint(
        &api,
        &truth,
        config,
        Duration::from_secs(60),
        &attempts,
        fed,
    )?;
    let subs: Vec<_> = (0..topics)
        .map(|i| endpoint.subscribe(format!("t{i}")))
        .collect::<Result<_, _>>()?;
    let reconnects = watch_reconnects(&subs[0]);
    tokio::time::sleep(check_at).await;
    check_backoff(
        &config,
        &read(&reconnects),
        &read(&attempts),
        BUSY_TICK,
        seed,
    )?;
    let mut wrong = Vec::new();
    for (i, sub) in subs.iter().enumerate() {
        let state = sub.state();
        let expected = lock(&truth)
            .topics
            .get(&format!("t{i}"))
            .cloned()
            .unwrap_or_default();
        if state.data().cloned().unwrap_or_default() != expected
            || state.stream != StreamStatus::Live
        {
            wrong.push(format!("t{i}: {:?}", state.stream));
        }
    }
    if !wrong.is_empty() {
        return Err(format!(
            "seed {seed}, {fed:?}: {} entries wrong: {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        )
        .into());
    }
    // Every entry gone after its 60 s grace: the connection lingers, closes, and stays closed.
    check_the_end(subs, Duration::from_secs(90), &attempts, seed).await
}

/// The second scenario's tick: coarser, for an hour of 1,000 entries.
const BUSY_TICK: Duration = Duration::from_millis(20);

/// R32: 1,000 entries on one connection through a simulated hour in which the network goes
/// down and up at random (the server restarts, the link is partitioned for seconds to a
/// minute, messages are held then released), faults drawn from the seed; at the end every
/// entry holds exactly its topic's truth and is `Live`, every wait between attempts was within
/// its backoff bound, and once the entries are dropped the socket closes and nothing connects.
#[test]
fn r32_sim_a_thousand_entries_through_an_hour_of_random_faults() {
    const ENTRIES: usize = 1_000;
    const HOUR: Duration = Duration::from_secs(3_600);
    let extra: u64 = std::env::var("LIVECACHE_SIM_SEEDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    for seed in 0..=extra {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut faults = Vec::new();
        let mut at = secs(60);
        while at < HOUR - secs(300) {
            let fault = match rng.u8(0..3) {
                0 => vec![(at, Fault::Bounce)],
                1 => vec![
                    (at, Fault::Partition),
                    (at + secs(rng.u64(2..60)), Fault::Repair),
                ],
                _ => vec![
                    (at, Fault::Hold),
                    (at + secs(rng.u64(1..10)), Fault::Release),
                ],
            };
            faults.extend(fault);
            at += secs(rng.u64(120..400));
        }
        for fed in [Fed::ByHandler, Fed::ByConnection] {
            let truth: Shared = Arc::default();
            let mut sim = turmoil::Builder::new()
                .simulation_duration(HOUR + secs(600))
                .tick_duration(BUSY_TICK)
                .tcp_capacity(1 << 16)
                .rng_seed(seed)
                .build();
            let server_truth = Arc::clone(&truth);
            let until = HOUR - secs(120);
            sim.host("server", move || {
                busy_server(Arc::clone(&server_truth), ENTRIES, until, seed)
            });
            sim.client(
                "client",
                busy_client(Arc::clone(&truth), ENTRIES, HOUR, seed, fed),
            );
            drive(&mut sim, faults.clone(), seed);
        }
    }
}
