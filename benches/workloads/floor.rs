//! The floor: W1–W3 without a cache. Each entry is a `Vec<Message>` behind a `std::sync::Mutex`,
//! mutated in place, plus a tokio `watch` channel whose counter is bumped after every update; a
//! subscriber task per entry wakes on it and reads the length, like the runtime's subscribers.
//! Updates go through the same feed listeners (`Arc<dyn Fn>`) as the runtime path.

use std::pin::pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::data::{Message, WARMUP_SEED_OFFSET};
use crate::runtime::{Listener, tokio_runtime};
use crate::shared::{
    CHECK_EVERY, Payload, Probe, PushRun, apply, emitted_to, prepare, push_line, until, verify,
    warmup_cfg,
};
use crate::{Cfg, heap_bytes, peak_rss_mb};

struct Entry {
    data: Mutex<Vec<Message>>,
    changed: watch::Sender<u64>,
}

fn read(entry: &Entry) -> std::sync::MutexGuard<'_, Vec<Message>> {
    entry
        .data
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn watcher(entry: &Arc<Entry>, probe: Arc<Probe>) {
    let weak: Weak<Entry> = Arc::downgrade(entry);
    let mut rx = entry.changed.subscribe();
    rx.mark_changed();
    tokio::spawn(async move {
        let mut rx = pin!(rx);
        while rx.changed().await.is_ok() {
            let applied = probe.notified_at();
            let Some(entry) = weak.upgrade() else { break };
            std::hint::black_box(read(&entry).len());
            drop(entry);
            probe.read_done(applied);
        }
    });
}

async fn push(cfg: &Cfg, prefix: &str, seed_offset: u32) -> Result<Map<String, Value>, String> {
    let mut prep = prepare(cfg, prefix, seed_offset);
    let mut initial = prep.initial.take();
    let probes: Vec<Arc<Probe>> = prep.channels.iter().map(|_| Arc::default()).collect();
    let entries: Vec<Arc<Entry>> = prep
        .channels
        .iter()
        .map(|_| {
            Arc::new(Entry {
                data: Mutex::new(initial.take().unwrap_or_default()),
                changed: watch::channel(0).0,
            })
        })
        .collect();
    let listeners: Vec<Listener> = entries
        .iter()
        .zip(&probes)
        .map(|(entry, probe)| {
            watcher(entry, Arc::clone(probe));
            let (entry, probe) = (Arc::clone(entry), Arc::clone(probe));
            let l: Listener = Arc::new(move |p: Payload| {
                apply(&mut *read(&entry), p);
                entry.changed.send_modify(|v| *v += 1);
                probe.bump();
                true
            });
            l
        })
        .collect();
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
    let count = |p: &Arc<Probe>| p.notifications.load(std::sync::atomic::Ordering::Relaxed);
    let n0: u64 = probes.iter().map(count).sum();
    let mut stream = std::mem::take(&mut prep.stream).into_iter();
    let mut done = 0usize;
    let t0 = Instant::now();
    for (e, payload) in stream.by_ref() {
        listeners[e](payload);
        done += 1;
        if (done & CHECK_EVERY) == 0 && t0.elapsed() > cfg.budget {
            break;
        }
    }
    let e_count = entries.len();
    for (e, probe) in probes.iter().enumerate() {
        probe.set_target(emitted_to(e, e_count, done));
    }
    let t1 = Instant::now();
    let notified = until(Duration::from_secs(60), || {
        probes.iter().all(|p| p.final_seen())
    })
    .await;
    let t2 = Instant::now();
    let heap = heap_bytes();
    let peak = peak_rss_mb();
    drop(stream);
    let notifications = probes.iter().map(count).sum::<u64>() - n0;
    let (ok, final_length) = verify(cfg, prefix, seed_offset, done, |e| Some(read(&entries[e])));
    drop(listeners);
    drop(entries);

    let seconds = (t1 - t0).as_secs_f64();
    let run = PushRun {
        seconds,
        seconds_notified: (t2 - t0).as_secs_f64(),
        setup_seconds: 0.0,
        done,
        final_length,
        verified: ok && notified,
        notifications,
        heap_bytes: heap,
        peak_rss_mb: peak,
    };
    Ok(push_line(cfg, &prep, &run))
}

pub fn run(cfg: &Cfg) -> Result<Map<String, Value>, String> {
    let rt = tokio_runtime(cfg)?;
    rt.block_on(async {
        let warm = push(&warmup_cfg(cfg), "warm-", WARMUP_SEED_OFFSET).await?;
        let mut m = push(cfg, "", 0).await?;
        m.insert(
            "warmup_ok".into(),
            warm.get("verified").cloned().unwrap_or(Value::Null),
        );
        Ok(m)
    })
}
