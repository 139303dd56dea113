//! W5, end to end: a loopback WebSocket server (async-tungstenite on its own thread and runtime)
//! sends U pre-serialised W1 messages as text frames as fast as it can; the client side is one of
//!
//! * `runtime`: livecache — an endpoint whose lifecycle handler opens the socket with
//!   `livecache::ws::connect::<Message>` and attaches it with `EntryHandle::try_stream(socket,
//!   |draft, m| draft.push(m))`; a subscriber waits until it has seen all U messages;
//! * `shared`: the same through a `livecache::ws::shared::SharedConnection` (JSON framing): the
//!   handler takes its topic with `SharedConnection::topic` and attaches it with `try_stream`;
//!   the server waits for the topic's subscription, then sends each message in the framing's
//!   envelope (`{"topic":T,"message":M}`, serialised before the clock starts);
//! * `floor`: a bare async-tungstenite read loop that decodes each frame into a `Message`
//!   (serde_json) and pushes it onto a `Vec` — the same work without the cache;
//! * `socket`: the bare read loop without decoding (frames counted only);
//! * `shared-fed`: `shared` with no handler: the endpoint is fed by the connection's own task
//!   (`EndpointBuilder::stream_from(connection.source(…), push)`);
//! * `shared-floor`: `floor` for `shared`'s frames: the bare loop subscribes, then decodes each
//!   envelope (its topic and message, serde_json) and pushes the message — the same bytes and
//!   the same decoding without the cache.
//!
//! The clock starts when the server starts sending (after the handshake) and stops when the
//! U-th message is in the destination.

use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_tungstenite::tokio::{accept_async, connect_async};
use async_tungstenite::tungstenite::Message as Frame;
use futures::{SinkExt, StreamExt};
use livecache::Api;
use serde_json::{Map, Value, json};
use tokio::sync::Notify;

use crate::data::{self, FNV_OFFSET, Message};
use crate::runtime::{recording, tokio_runtime};
use crate::shared::Probe;
use crate::{Cfg, heap_bytes, mb, ns_per, peak_rss_mb};

struct Server {
    url: String,
    started: Arc<Mutex<Option<Instant>>>,
    thread: std::thread::JoinHandle<()>,
}

/// Serve `frames` to the first client that connects (after its first frame, a subscription, if
/// `after_subscribe`), then wait for it to close.
fn serve(frames: Vec<String>, after_subscribe: bool) -> Result<Server, String> {
    let started: Arc<Mutex<Option<Instant>>> = Arc::default();
    let stamp = Arc::clone(&started);
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
                return;
            };
            let _ = tx.send(listener.local_addr().ok());
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let _ = tcp.set_nodelay(true);
            let Ok(mut ws) = accept_async(tcp).await else {
                return;
            };
            if after_subscribe {
                while let Some(Ok(frame)) = ws.next().await {
                    if frame.is_text() {
                        break;
                    }
                }
            }
            if let Ok(mut t) = stamp.lock() {
                *t = Some(Instant::now());
            }
            for f in frames {
                if ws.feed(Frame::text(f)).await.is_err() {
                    return;
                }
            }
            let _ = ws.flush().await;
            // Until the client closes (a client whose runtime stopped never does: not for ever).
            let closed = async { while let Some(Ok(_)) = ws.next().await {} };
            let _ = tokio::time::timeout(Duration::from_secs(2), closed).await;
        });
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(10))
        .ok()
        .flatten()
        .ok_or("the server did not start")?;
    Ok(Server {
        url: format!("ws://{addr}/ws"),
        started,
        thread,
    })
}

struct Outcome {
    seconds: f64,
    done: usize,
    verified: bool,
    notifications: u64,
    heap: usize,
    peak: Option<f64>,
}

async fn client(
    cfg: &Cfg,
    url: &str,
    n: usize,
    prefix: &str,
    seed_offset: u32,
) -> Result<(Instant, Outcome), String> {
    match cfg.path.as_str() {
        "runtime" | "shared" | "shared-fed" => cache_client(cfg, url, n, prefix, seed_offset).await,
        "shared-floor" => bare_client(Bare::Envelope, url, n, prefix, seed_offset).await,
        "floor" => bare_client(Bare::Decode, url, n, prefix, seed_offset).await,
        _ => bare_client(Bare::Count, url, n, prefix, seed_offset).await,
    }
}

fn check(data: &[Message], n: usize, prefix: &str, seed_offset: u32) -> bool {
    let mut rng = data::Mulberry32::new(data::SEED_APPEND + seed_offset);
    let ch = data::channel_name(prefix, 0);
    data.len() == n
        && data.iter().enumerate().all(|(j, m)| {
            m.id == j as u64 && m.text == data::make_message(&mut rng, j as u64, &ch).text
        })
}

/// What the bare read loop does with each frame.
#[derive(Clone, Copy, PartialEq)]
enum Bare {
    /// Counts it (`socket`).
    Count,
    /// Decodes it as a message and pushes it (`floor`).
    Decode,
    /// Subscribes first, then decodes each frame as the JSON framing's envelope and pushes its
    /// message (`shared-floor`).
    Envelope,
}

async fn bare_client(
    bare: Bare,
    url: &str,
    n: usize,
    prefix: &str,
    seed_offset: u32,
) -> Result<(Instant, Outcome), String> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[allow(dead_code)]
        topic: String,
        message: Message,
    }
    let (mut ws, _) = connect_async(url).await.map_err(|e| e.to_string())?;
    if bare == Bare::Envelope {
        let topic = data::channel_name(prefix, 0);
        let subscribe = json!({ "type": "subscribe", "topic": topic }).to_string();
        ws.send(Frame::text(subscribe))
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut messages: Vec<Message> = Vec::new();
    let mut frames = 0usize;
    while frames < n {
        match ws.next().await {
            Some(Ok(Frame::Text(text))) => {
                frames += 1;
                let bytes = text.as_bytes();
                match bare {
                    Bare::Count => {
                        std::hint::black_box(text.len());
                    }
                    Bare::Decode => {
                        messages.push(serde_json::from_slice(bytes).map_err(|e| e.to_string())?)
                    }
                    Bare::Envelope => {
                        let envelope: Envelope =
                            serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
                        messages.push(envelope.message);
                    }
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.to_string()),
            None => break,
        }
    }
    let t1 = Instant::now();
    let heap = heap_bytes();
    let peak = peak_rss_mb();
    drop(ws);
    let verified = match bare {
        Bare::Count => frames == n,
        Bare::Decode | Bare::Envelope => check(&messages, n, prefix, seed_offset),
    };
    Ok((
        t1,
        Outcome {
            seconds: 0.0,
            done: frames,
            verified,
            notifications: 0,
            heap,
            peak,
        },
    ))
}

async fn cache_client(
    cfg: &Cfg,
    url: &str,
    n: usize,
    prefix: &str,
    seed_offset: u32,
) -> Result<(Instant, Outcome), String> {
    let api = Api::builder()
        .keep_unused_data_for(Duration::ZERO)
        .recording(recording(&cfg.recording))
        .build();
    let probe = Arc::new(Probe::default());
    probe.set_target(n as u64);
    let url = url.to_owned();
    let counted = Arc::clone(&probe);
    let shared = if cfg.path == "shared" || cfg.path == "shared-fed" {
        let framing = livecache::ws::shared::JsonFraming::<Message>::new();
        let connection = livecache::ws::shared::SharedConnection::builder(url.clone(), framing)
            .spawn()
            .map_err(|e| e.to_string())?;
        Some(connection)
    } else {
        None
    };
    let builder = api
        .query::<String, Vec<Message>>("messages")
        .query_fn(|_channel: String| async { Ok(Vec::new()) });
    let builder = match (shared, cfg.path.as_str()) {
        (Some(connection), "shared-fed") => builder.stream_from(
            connection.source(|channel: &String| channel.clone()),
            move |draft, m| {
                draft.push(m);
                counted.bump();
            },
        ),
        (shared, _) => builder.on_cache_entry_added(move |channel, entry| {
            let (url, counted) = (url.clone(), Arc::clone(&counted));
            let topic = shared.as_ref().map(|c| c.topic(&entry, channel));
            async move {
                let push = move |draft: &mut livecache::Draft<'_, Vec<Message>>, m| {
                    draft.push(m);
                    counted.bump();
                };
                match topic {
                    Some(topic) => entry.try_stream(topic, push).await,
                    None => {
                        let socket = livecache::ws::connect::<Message>(url).await?;
                        entry.try_stream(socket, push).await
                    }
                };
                Ok(())
            }
        }),
    };
    let endpoint = builder.build().map_err(|e| e.to_string())?;
    let sub = Arc::new(
        endpoint
            .subscribe(data::channel_name(prefix, 0))
            .map_err(|e| e.to_string())?,
    );
    // The subscriber: reads the state on every change; wakes the driver once it saw all U.
    let done = Arc::new(Notify::new());
    let weak = Arc::downgrade(&sub);
    let (watch_probe, watch_done) = (Arc::clone(&probe), Arc::clone(&done));
    let changes = sub.changes();
    tokio::spawn(async move {
        let mut changes = pin!(changes);
        while let Some(state) = changes.next().await {
            drop(state);
            let is_final = watch_probe.notified();
            let Some(sub) = weak.upgrade() else { break };
            std::hint::black_box(sub.state().data().map(Vec::len));
            drop(sub);
            if is_final {
                watch_probe.saw_final();
                watch_done.notify_one();
                break;
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(120), done.notified())
        .await
        .map_err(|_| format!("timed out with {} of {n} applied", probe.applied()))?;
    let t1 = Instant::now();
    let heap = heap_bytes();
    let peak = peak_rss_mb();
    let data = sub.state().data.ok_or("no data")?;
    let verified = check(&data, n, prefix, seed_offset);
    drop(data);
    let notifications = probe
        .notifications
        .load(std::sync::atomic::Ordering::Relaxed);
    drop(sub);
    // Wait for the removal (which drops and closes the socket).
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while !api.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    Ok((
        t1,
        Outcome {
            seconds: 0.0,
            done: probe.applied() as usize,
            verified,
            notifications,
            heap,
            peak,
        },
    ))
}

fn measure(
    rt: &tokio::runtime::Runtime,
    cfg: &Cfg,
    n: usize,
    prefix: &str,
    seed_offset: u32,
) -> Result<Outcome, String> {
    let shared = cfg.path.starts_with("shared");
    let topic = data::channel_name(prefix, 0);
    let frames: Vec<String> = data::gen_append(n, prefix, seed_offset)
        .iter()
        .map(|m| {
            let message = serde_json::to_value(m).unwrap_or_default();
            let frame = if shared {
                json!({ "topic": topic, "message": message })
            } else {
                message
            };
            frame.to_string()
        })
        .collect();
    let server = serve(frames, shared)?;
    let (t1, mut out) = rt.block_on(client(cfg, &server.url, n, prefix, seed_offset))?;
    let t0 = server
        .started
        .lock()
        .ok()
        .and_then(|t| *t)
        .ok_or("the server never started sending")?;
    out.seconds = (t1 - t0).as_secs_f64();
    let _ = server.thread.join();
    Ok(out)
}

pub fn run(cfg: &Cfg) -> Result<Map<String, Value>, String> {
    let n = cfg.updates;
    let hash = data::hex(data::hash_json_lines(
        &data::gen_append(n, "", 0),
        FNV_OFFSET,
    ));
    let rt = tokio_runtime(cfg)?;
    let warm = measure(&rt, cfg, n.min(2000), "warm-", data::WARMUP_SEED_OFFSET)?;
    let out = measure(&rt, cfg, n, "", 0)?;
    let mut m = Map::new();
    let what = match cfg.path.as_str() {
        "runtime" => "livecache::ws::connect + EntryHandle::try_stream(push) into the cache",
        "shared" => "livecache::ws::shared::SharedConnection topic + EntryHandle::try_stream(push)",
        "shared-fed" => {
            "livecache::ws::shared::SharedConnection::source + EndpointBuilder::stream_from(push), no handler"
        }
        "shared-floor" => {
            "bare async-tungstenite read loop: decode the envelope (serde_json) + Vec::push"
        }
        "floor" => "bare async-tungstenite read loop: decode (serde_json) + Vec::push",
        _ => "bare async-tungstenite read loop: frames only",
    };
    m.insert(
        "payload".into(),
        json!(format!(
            "loopback WebSocket text frames (~86 B JSON messages); {what}"
        )),
    );
    m.insert("payload_bytes".into(), json!(86));
    m.insert("seconds".into(), json!(out.seconds));
    m.insert("seconds_notified".into(), json!(out.seconds));
    m.insert("setup_seconds".into(), json!(0));
    m.insert("updates_done".into(), json!(out.done));
    m.insert("completed".into(), json!(out.done == n));
    m.insert("final_length".into(), json!(out.done));
    m.insert("expected_length".into(), json!(n));
    m.insert("verified".into(), json!(out.verified));
    m.insert("notifications".into(), json!(out.notifications));
    m.insert("heap_used_mb".into(), json!(mb(out.heap as f64)));
    m.insert("peak_rss_mb".into(), json!(out.peak));
    m.insert("ns_per_update".into(), json!(ns_per(out.seconds, out.done)));
    m.insert("workload_hash".into(), json!(hash));
    m.insert("warmup_ok".into(), json!(warm.verified));
    Ok(m)
}
