//! The library consumer: a `Watcher` in the runner, counting events and recording arrivals.

use crate::host::cpu_seconds_path;
use crate::realtime_ns;
use anyhow::bail;
use sockfilter::watch::{Item, WatchOptions, Watcher};
use sockfilter_model::event::EventKind;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

/// One listen/connect event as the consumer saw it.
pub(crate) struct Arrival {
    pub(crate) kind: EventKind,
    pub(crate) cookie: u64,
    pub(crate) arrival_ns: u64,
    pub(crate) event_ns: u64,
}

struct Shared {
    tid: AtomicU64,
    events: AtomicU64,
    lost: AtomicU64,
    arrivals: Mutex<Vec<Arrival>>,
    stop: tokio::sync::Notify,
}

/// The in-process consumer: a Watcher on its own thread and runtime.
pub(crate) struct Consumer {
    shared: Arc<Shared>,
    handle: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl Consumer {
    pub(crate) fn start(cg: &Path, record: bool) -> anyhow::Result<Consumer> {
        let shared = Arc::new(Shared {
            tid: AtomicU64::new(0),
            events: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            arrivals: Mutex::new(Vec::new()),
            stop: tokio::sync::Notify::new(),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let sh = shared.clone();
        let cg = cg.to_path_buf();
        let handle = std::thread::spawn(move || -> anyhow::Result<()> {
            // SAFETY: gettid has no preconditions.
            sh.tid
                .store(unsafe { libc::gettid() } as u64, Ordering::Relaxed);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let mut w = match Watcher::start(WatchOptions {
                    cgroup: Some(cg),
                    existing: false,
                }) {
                    Ok(w) => w,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return Ok(());
                    }
                };
                let _ = tx.send(Ok(()));
                loop {
                    let item = tokio::select! {
                        biased;
                        _ = sh.stop.notified() => break,
                        item = w.next() => item,
                    };
                    match item {
                        None => break,
                        Some(Item::Lost(n)) => {
                            sh.lost.fetch_add(n, Ordering::Relaxed);
                        }
                        Some(Item::Event(e)) => {
                            sh.events.fetch_add(1, Ordering::Relaxed);
                            if record && matches!(e.kind, EventKind::Listen | EventKind::Connect) {
                                let arrival_ns = realtime_ns();
                                let event_ns = e
                                    .time
                                    .duration_since(UNIX_EPOCH)
                                    .map(|d| d.as_nanos() as u64)
                                    .unwrap_or(0);
                                sh.arrivals.lock().unwrap().push(Arrival {
                                    kind: e.kind,
                                    cookie: e.socket,
                                    arrival_ns,
                                    event_ns,
                                });
                            }
                        }
                    }
                }
                Ok(())
            })
        });
        match rx.recv() {
            Ok(Ok(())) => Ok(Consumer { shared, handle }),
            Ok(Err(e)) => bail!("Watcher::start: {e}"),
            Err(_) => bail!("consumer thread ended: {:?}", handle.join()),
        }
    }

    /// CPU seconds of the consumer thread.
    pub(crate) fn cpu(&self) -> f64 {
        let tid = self.shared.tid.load(Ordering::Relaxed);
        cpu_seconds_path(&format!("/proc/self/task/{tid}/stat"))
    }

    pub(crate) fn events(&self) -> u64 {
        self.shared.events.load(Ordering::Relaxed)
    }

    pub(crate) fn lost(&self) -> u64 {
        self.shared.lost.load(Ordering::Relaxed)
    }

    pub(crate) fn take_arrivals(&self) -> Vec<Arrival> {
        std::mem::take(&mut *self.shared.arrivals.lock().unwrap())
    }

    pub(crate) fn stop(self) {
        self.shared.stop.notify_one();
        let _ = self.handle.join();
    }
}
