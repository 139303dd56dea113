//! `ws_frames`: arbitrary WebSocket frame sequences through `ws::Decoder` and a stream
//! attachment (`try_stream`) on a real `Api`.
//!
//! One current-thread tokio runtime, one `Api` and one endpoint are built per process and
//! reused. Each input subscribes to a fresh entry whose query function returns the input's
//! initial data; the endpoint's lifecycle handler attaches, before or after the first data,
//! a stream fed through a channel: every data frame goes through the decoder, a close frame
//! becomes the fatal `WsError::Closed` that `WsStream` yields for it, and ping/pong frames are
//! answered by the socket and never reach the decoder (as in `WsStream`). The driver may yield to
//! the runtime between frames, so the query function, the handler and the stream interleave.
//!
//! Checked against an oracle that classifies each frame from the documented rules alone (size
//! limit, UTF-8 for binary frames, JSON, the message schema, validation, filter):
//!
//! - the decoder's output for every frame it saw is the oracle's, frame by frame;
//! - its counters are the oracle's counts, kind by kind;
//! - the entry's final data is the initial data followed by exactly the valid messages, in order;
//! - the attachment's `StreamEnd`: `applied` = valid messages, `skipped` = rejected frames, and
//!   the reason (stream ended, or failed with the close frame);
//! - the trace: one `stream_skipped` per rejected frame (with the decoder's reason), the
//!   `stream_ended` counts, and `check_invariants` over the whole lifetime.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use futures::StreamExt;
use futures::channel::{mpsc, oneshot};
use livecache::core::Draft;
use livecache::core::{StreamEnd, StreamEndReason};
use livecache::core::{TraceEvent, TraceKind};
use livecache::ws::{Decoder, WsCounts, WsError};
use livecache::{Api, Endpoint};
use livecache_model::{Config, EndpointSpec, check_invariants};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::json;

/// The decoder's size limit in bytes: small, so that oversized frames are cheap.
const LIMIT: usize = 96;

/// The most frames one input sends.
const MAX_FRAMES: usize = 64;

/// The endpoint's name (keys are `ws([serial,[initial data]])`).
const ENDPOINT: &str = "ws";

/// The message type: a channel and a value; the entry's data is the list of values.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Msg {
    ch: u8,
    v: i32,
}

/// Validation (the streaming guide's `isMessage`): negative values are invalid.
fn valid(m: &Msg) -> bool {
    m.v >= 0
}

/// The filter (the guide's channel check): odd channels are someone else's.
fn keep(m: &Msg) -> bool {
    m.ch.is_multiple_of(2)
}

/// An arbitrary JSON value (often not a message).
#[derive(Debug)]
struct AnyJson(Value);

impl<'a> Arbitrary<'a> for AnyJson {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(AnyJson(json::value(u, 3)?))
    }
}

/// One frame from the server, or a pause of the driver.
#[derive(Arbitrary, Debug)]
enum Frame {
    /// A well-formed message, padded with spaces (which may push it over the limit).
    Message {
        msg: Msg,
        binary: bool,
        pad: u8,
    },
    /// A message-shaped object with arbitrary field values (schema errors, overflows, …).
    Fields {
        ch: AnyJson,
        v: AnyJson,
        binary: bool,
    },
    /// Arbitrary JSON.
    Json {
        value: AnyJson,
        binary: bool,
    },
    /// An arbitrary text frame (always UTF-8, as tungstenite guarantees).
    Text(String),
    /// An arbitrary binary frame (maybe not UTF-8).
    Binary(Vec<u8>),
    /// A message beyond the size limit.
    Oversized {
        msg: Msg,
        extra: u16,
        binary: bool,
    },
    /// Control frames: answered or ignored by the socket, never decoded.
    Ping,
    Pong,
    /// The server closes the connection: the stream fails with `WsError::Closed`.
    Close {
        code: u16,
        reason: String,
    },
    /// The driver yields to the runtime this many times before the next frame.
    Yield(u8),
}

/// The input: the entry's initial data, when the handler attaches, and the frames.
#[derive(Arbitrary, Debug)]
struct Input {
    initial: Vec<i32>,
    attach_before_data: bool,
    frames: Vec<Frame>,
}

/// What reaches the attachment's stream.
#[derive(Debug)]
enum Wire {
    Data { payload: Vec<u8>, binary: bool },
    Close { code: u16, reason: String },
}

/// What became of one decoded frame, as the decoder said or as the oracle says it must be.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Message(Msg),
    Filtered,
    TooLarge,
    NotUtf8,
    NotJson,
    Schema,
    Invalid,
}

impl Outcome {
    fn rejected(&self) -> bool {
        !matches!(self, Outcome::Message(_) | Outcome::Filtered)
    }

    /// What the decoder returned, as an outcome (`None` for errors a decoder never returns).
    fn of(decoded: &Option<Result<Msg, WsError>>) -> Option<Outcome> {
        Some(match decoded {
            None => Outcome::Filtered,
            Some(Ok(m)) => Outcome::Message(m.clone()),
            Some(Err(WsError::TooLarge { .. })) => Outcome::TooLarge,
            Some(Err(WsError::NotUtf8)) => Outcome::NotUtf8,
            Some(Err(WsError::NotJson(_))) => Outcome::NotJson,
            Some(Err(WsError::Schema(_))) => Outcome::Schema,
            Some(Err(WsError::Invalid)) => Outcome::Invalid,
            Some(Err(_)) => return None,
        })
    }
}

/// The oracle: what a data frame must become, from the documented rules alone, in their order.
fn classify(payload: &[u8], binary: bool) -> Outcome {
    if payload.len() > LIMIT {
        return Outcome::TooLarge;
    }
    if binary && std::str::from_utf8(payload).is_err() {
        return Outcome::NotUtf8;
    }
    // "JSON" is the syntax alone (RFC 8259, as serde_json checks it: at most 128 levels of
    // nesting); whether the numbers fit the message's fields is the schema's business.
    if serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_err() {
        return Outcome::NotJson;
    }
    match serde_json::from_slice::<Msg>(payload) {
        Err(_) => Outcome::Schema,
        Ok(m) if !valid(&m) => Outcome::Invalid,
        Ok(m) if !keep(&m) => Outcome::Filtered,
        Ok(m) => Outcome::Message(m),
    }
}

/// The decoder's view of each frame it decoded: its outcome and, for a rejection, its reason.
type Log = Arc<Mutex<Vec<(Outcome, Option<String>)>>>;

/// What one input hands to the lifecycle handler of its entry.
struct Job {
    frames: mpsc::UnboundedReceiver<Wire>,
    decoder: Decoder<Msg>,
    log: Log,
    before_data: bool,
    done: oneshot::Sender<StreamEnd>,
}

/// The runtime, api and endpoint shared by every input of the process.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    api: Api,
    endpoint: Endpoint<(u64, Vec<i32>), Vec<i32>>,
    serial: u64,
}

/// The job of the input being run; the handler takes it.
static JOB: Mutex<Option<Job>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn fixture() -> &'static Mutex<Fixture> {
    static FIXTURE: OnceLock<Mutex<Fixture>> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime builds");
        let (api, endpoint) = {
            let _entered = runtime.enter();
            let api = Api::builder().build();
            let endpoint = api
                .query::<(u64, Vec<i32>), Vec<i32>>(ENDPOINT)
                .query_fn(|(_, initial): (u64, Vec<i32>)| async move { Ok(initial) })
                .on_cache_entry_added(|_arg, entry| {
                    let job = lock(&JOB).take();
                    async move {
                        let Some(job) = job else { return Ok(()) };
                        let end =
                            attach(entry, job.frames, job.decoder, job.log, job.before_data).await;
                        let _ = job.done.send(end);
                        Ok(())
                    }
                })
                .build()
                .expect("the endpoint registers");
            (api, endpoint)
        };
        Mutex::new(Fixture {
            runtime,
            api,
            endpoint,
            serial: 0,
        })
    })
}

/// The handler's work: decode the frames and attach them to the entry.
async fn attach(
    entry: livecache::EntryHandle<livecache::BeforeData, Vec<i32>>,
    frames: mpsc::UnboundedReceiver<Wire>,
    decoder: Decoder<Msg>,
    log: Log,
    before_data: bool,
) -> StreamEnd {
    let stream = frames.filter_map(move |wire| {
        let item = match wire {
            Wire::Close { code, reason } => Some(Err(WsError::Closed { code, reason })),
            Wire::Data { payload, binary } => {
                let decoded = decoder.decode(&payload, binary);
                let outcome = Outcome::of(&decoded)
                    .unwrap_or_else(|| panic!("decode returned a fatal error: {decoded:?}"));
                let reason = match &decoded {
                    Some(Err(e)) => Some(e.to_string()),
                    _ => None,
                };
                lock(&log).push((outcome, reason));
                decoded
            }
        };
        std::future::ready(item)
    });
    let apply = |list: &mut Draft<'_, Vec<i32>>, m: Msg| list.push(m.v);
    if before_data {
        entry.try_stream(stream, apply).await
    } else {
        match entry.data_loaded().await {
            Ok((loaded, _first)) => loaded.try_stream(stream, apply).await,
            Err(_) => StreamEnd {
                reason: StreamEndReason::RemovedBeforeLoaded,
                applied: 0,
                skipped: 0,
            },
        }
    }
}

/// A message's JSON text.
fn text(m: &Msg) -> Vec<u8> {
    serde_json::to_vec(m).expect("a message serialises")
}

/// The fuzz body. See the module docs for what it checks.
///
/// # Panics
///
/// On any violated property: that is the finding.
pub fn ws_frames(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(mut input) = Input::arbitrary(&mut u) else {
        return;
    };
    input.initial.truncate(4);
    input.frames.truncate(MAX_FRAMES);
    let mut fixture = lock(fixture());
    fixture.serial += 1;
    let fixture = &*fixture;
    fixture.runtime.block_on(run(fixture, input));
}

async fn run(fixture: &Fixture, input: Input) {
    let Fixture {
        api,
        endpoint,
        serial,
        ..
    } = fixture;
    // A previous input that panicked (in the replay test) may have left things behind.
    lock(&JOB).take();
    api.reset();
    settle(api).await;
    api.take_trace();

    let decoder = Decoder::<Msg>::new(LIMIT)
        .with_validation(valid)
        .with_filter(keep);
    let stats = decoder.stats();
    let log: Log = Arc::default();
    let (tx, rx) = mpsc::unbounded();
    let (done_tx, done_rx) = oneshot::channel();
    *lock(&JOB) = Some(Job {
        frames: rx,
        decoder,
        log: Arc::clone(&log),
        before_data: input.attach_before_data,
        done: done_tx,
    });
    let arg = (*serial, input.initial.clone());
    let sub = endpoint.subscribe(arg.clone()).expect("subscribes");

    // Send the frames; the oracle follows them up to the first close (the attachment ends
    // there and reads no further).
    let mut expected: Vec<Outcome> = Vec::new();
    let mut closed: Option<WsError> = None;
    for frame in &input.frames {
        let wire = match frame {
            Frame::Yield(n) => {
                for _ in 0..n % 8 {
                    tokio::task::yield_now().await;
                }
                continue;
            }
            Frame::Ping | Frame::Pong => continue,
            Frame::Close { code, reason } => Wire::Close {
                code: *code,
                reason: reason.clone(),
            },
            Frame::Message { msg, binary, pad } => {
                let mut payload = text(msg);
                payload.resize(payload.len() + usize::from(*pad), b' ');
                Wire::Data {
                    payload,
                    binary: *binary,
                }
            }
            Frame::Fields { ch, v, binary } => Wire::Data {
                payload: serde_json::to_vec(&serde_json::json!({ "ch": ch.0, "v": v.0 }))
                    .expect("JSON serialises"),
                binary: *binary,
            },
            Frame::Json { value, binary } => Wire::Data {
                payload: serde_json::to_vec(&value.0).expect("JSON serialises"),
                binary: *binary,
            },
            Frame::Text(s) => Wire::Data {
                payload: s.clone().into_bytes(),
                binary: false,
            },
            Frame::Binary(b) => Wire::Data {
                payload: b.clone(),
                binary: true,
            },
            Frame::Oversized { msg, extra, binary } => {
                let mut payload = text(msg);
                payload.resize(LIMIT + 1 + usize::from(*extra) % 1024, b' ');
                Wire::Data {
                    payload,
                    binary: *binary,
                }
            }
        };
        if closed.is_none() {
            match &wire {
                Wire::Data { payload, binary } => expected.push(classify(payload, *binary)),
                Wire::Close { code, reason } => {
                    closed = Some(WsError::Closed {
                        code: *code,
                        reason: reason.clone(),
                    });
                }
            }
        }
        // The receiver is gone once the attachment ended: later frames go nowhere.
        let _ = tx.unbounded_send(wire);
    }
    drop(tx);

    let end = match tokio::time::timeout(Duration::from_secs(10), done_rx).await {
        Ok(Ok(end)) => end,
        Ok(Err(_)) => panic!("the handler ended without reporting (did it panic?)"),
        Err(_) => panic!("the attachment did not end within 10 s"),
    };
    let data = sub.state().data().cloned();
    drop(sub);
    let _ = endpoint.remove(&arg);
    settle(api).await;
    let trace = api.take_trace();

    check(
        &input,
        &expected,
        closed,
        &end,
        data,
        &log,
        stats.snapshot(),
        &trace,
    );
}

/// Let every task finish its work: the handler ends, the lifetime is released.
async fn settle(api: &Api) {
    for _ in 0..64 {
        tokio::task::yield_now().await;
        if api.in_flight() == (0, 0) {
            return;
        }
    }
    panic!(
        "the runtime still tracks {:?} after removal",
        api.in_flight()
    );
}

/// Compare everything observed with the oracle.
#[allow(clippy::too_many_arguments)]
fn check(
    input: &Input,
    expected: &[Outcome],
    closed: Option<WsError>,
    end: &StreamEnd,
    data: Option<Vec<i32>>,
    log: &Log,
    counts: WsCounts,
    trace: &[TraceEvent],
) {
    let context = || format!("input: {input:#?}\ntrace:\n{}", lines(trace));
    let log = lock(log).clone();

    // The decoder, frame by frame.
    let decoded: Vec<Outcome> = log.iter().map(|(o, _)| o.clone()).collect();
    assert_eq!(
        decoded,
        expected,
        "decoder outcomes differ from the oracle\n{}",
        context()
    );

    // Its counters, kind by kind.
    let count = |f: fn(&Outcome) -> bool| expected.iter().filter(|o| f(o)).count() as u64;
    let want = WsCounts {
        messages: count(|o| matches!(o, Outcome::Message(_))),
        filtered: count(|o| matches!(o, Outcome::Filtered)),
        not_utf8: count(|o| matches!(o, Outcome::NotUtf8)),
        not_json: count(|o| matches!(o, Outcome::NotJson)),
        schema: count(|o| matches!(o, Outcome::Schema)),
        invalid: count(|o| matches!(o, Outcome::Invalid)),
        too_large: count(|o| matches!(o, Outcome::TooLarge)),
        control: 0,
    };
    assert_eq!(counts, want, "decoder counters\n{}", context());
    let rejected = count(Outcome::rejected);

    // The entry's data: the initial data and exactly the valid messages, in order.
    let mut want_data = input.initial.clone();
    want_data.extend(expected.iter().filter_map(|o| match o {
        Outcome::Message(m) => Some(m.v),
        _ => None,
    }));
    assert_eq!(data.as_ref(), Some(&want_data), "final data\n{}", context());

    // The attachment's end.
    let reason = match &closed {
        Some(close) => StreamEndReason::StreamFailed(close.to_string()),
        None => StreamEndReason::StreamEnded,
    };
    let want_end = StreamEnd {
        reason,
        applied: want.messages,
        skipped: rejected,
    };
    assert_eq!(end, &want_end, "stream end\n{}", context());

    // The trace: one stream_skipped per rejection with the decoder's reason, the end's counts,
    // and the lifetime's invariants.
    let reasons: Vec<&str> = log.iter().filter_map(|(_, r)| r.as_deref()).collect();
    let skipped: Vec<&str> = trace
        .iter()
        .filter_map(|e| match &e.kind {
            TraceKind::StreamSkipped { reason, .. } => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(skipped, reasons, "stream_skipped reasons\n{}", context());
    let ends: Vec<(u64, u64)> = trace
        .iter()
        .filter_map(|e| match &e.kind {
            TraceKind::StreamEnded {
                applied, skipped, ..
            } => Some((*applied, *skipped)),
            _ => None,
        })
        .collect();
    assert_eq!(
        ends,
        [(want.messages, rejected)],
        "stream_ended events\n{}",
        context()
    );
    let config = Config {
        endpoints: vec![EndpointSpec {
            retry: None,
            name: ENDPOINT.to_owned(),
            keep_ms: Some(60_000),
            lifecycle: true,
            versions: None,
            max_buffered: None,
            stream_failure_rejects: false,
        }],
        record_patches: false,
    };
    if let Err(e) = check_invariants(&config, trace) {
        panic!("trace invariant: {e}\n{}", context());
    }
}

fn lines(trace: &[TraceEvent]) -> String {
    trace.iter().map(|e| format!("  {e}\n")).collect()
}
