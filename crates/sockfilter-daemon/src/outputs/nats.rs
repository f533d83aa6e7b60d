//! The NATS JetStream output.
//!
//! Every event first goes to an on-disk queue (a file of `MSGID<TAB>JSON`
//! lines beside the history database); a task publishes the queue, in
//! order, to JetStream as `SUBJECT.HOST` and advances past a record only
//! when the server acknowledged it. So a server that is down, restarting
//! or slow loses nothing up to the queue's bound, the queue survives a
//! restart of the daemon, and what exceeds the bound is counted in
//! `sockfilter_output_dropped_total{output}` and reported. Each record
//! carries a `Nats-Msg-Id`, so a batch re-sent after a lost
//! acknowledgement is stored once (JetStream's duplicate window).
//!
//! The same task keeps the host's current listeners in the key-value
//! bucket [`LISTENERS_BUCKET`], one key per host.

use crate::metrics::{Metrics, OutputLabels};
use anyhow::Context;
use async_nats::jetstream;
use bytes::Bytes;
use sockfilter_model::Event;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// The key-value bucket of current listeners, one key per host.
pub const LISTENERS_BUCKET: &str = "sockfilter-listeners";

/// Records published before their acknowledgements are awaited.
const BATCH: usize = 256;
/// How long to wait for the server before trying again.
const RETRY: Duration = Duration::from_millis(500);
/// The listeners key is rewritten at least this often (so its age tells
/// that the host is alive) and at most as often as they change.
pub const LISTENERS_REFRESH: Duration = Duration::from_secs(30);

/// What the NATS output needs.
pub struct NatsSettings {
    /// `nats://HOST:PORT`.
    pub url: String,
    /// The configured subject: events are published to `SUBJECT.HOST`, and
    /// the stream `SUBJECT` with dots as underscores captures `SUBJECT.>`.
    pub subject: String,
    /// The daemon's host: the last part of the subject and the key in the
    /// listeners bucket. It may itself contain dots (`web-01.example.com`).
    pub host: String,
    /// The on-disk queue.
    pub queue_path: PathBuf,
    /// The queue's bound in bytes.
    pub queue_bytes: u64,
    /// Where drops, errors and the pending count go.
    pub metrics: Metrics,
    /// This output's metric label.
    pub label: OutputLabels,
}

/// The on-disk queue, shared by the daemon's loop (appends) and the
/// publishing task (reads, then consumes what was acknowledged).
struct Queue {
    path: PathBuf,
    file: File,
    /// Offset of the first record not yet acknowledged.
    head: u64,
    /// End of the file.
    tail: u64,
    /// Records between head and tail.
    records: u64,
    bound: u64,
    /// A failed append left bytes past `tail` that could not be cut off
    /// yet: nothing is appended until they are.
    torn: bool,
}

impl Queue {
    fn open(path: &PathBuf, bound: u64) -> anyhow::Result<Queue> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the directory {}", dir.display()))?;
        }
        let file = crate::private_file::open(
            OpenOptions::new().create(true).read(true).append(true),
            path,
        )
        .with_context(|| format!("opening the NATS queue {}", path.display()))?;
        // Records left by a previous run are sent first.
        let text = std::fs::read(path).unwrap_or_default();
        let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        file.set_len(complete as u64)?;
        let records = text[..complete].iter().filter(|&&b| b == b'\n').count() as u64;
        Ok(Queue {
            path: path.clone(),
            file,
            head: 0,
            tail: complete as u64,
            records,
            bound,
            torn: false,
        })
    }

    /// Appends one record; false when the bound would be exceeded. An
    /// error (disk full) means the record is not in the queue: a part of it
    /// that reached the file is cut off again, so the next record starts
    /// at `tail`, where the reader expects it.
    fn push(&mut self, line: &[u8]) -> std::io::Result<bool> {
        if self.tail - self.head + line.len() as u64 > self.bound {
            return Ok(false);
        }
        if self.torn {
            self.file.set_len(self.tail)?;
            self.torn = false;
        }
        if let Err(e) = self.file.write_all(line) {
            if self.file.set_len(self.tail).is_err() {
                self.torn = true;
            }
            return Err(e);
        }
        self.tail += line.len() as u64;
        self.records += 1;
        Ok(true)
    }

    /// Up to `max` complete records from the head: (end offset, msg id, json).
    fn peek(&self, max: usize) -> std::io::Result<Vec<(u64, String, Bytes)>> {
        let len = (self.tail - self.head).min(4 * 1024 * 1024) as usize;
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, self.head)?;
        let mut out = Vec::new();
        let mut start = 0;
        for (i, _) in buf.iter().enumerate().filter(|(_, &b)| b == b'\n') {
            if out.len() == max {
                break;
            }
            let line = &buf[start..i];
            start = i + 1;
            let tab = line.iter().position(|&b| b == b'\t').unwrap_or(0);
            let id = String::from_utf8_lossy(&line[..tab]).into_owned();
            let json = Bytes::copy_from_slice(&line[(tab + 1).min(line.len())..]);
            out.push((self.head + start as u64, id, json));
        }
        Ok(out)
    }

    /// Forgets the records before `end`; empties the file once all are
    /// sent, and moves what waits to the start of the file once half the
    /// bound has been sent without the queue emptying.
    fn consume(&mut self, end: u64, n: u64) -> std::io::Result<()> {
        self.head = end;
        self.records -= n;
        if self.head == self.tail {
            self.file.set_len(0)?;
            self.head = 0;
            self.tail = 0;
        } else if self.head >= self.bound / 2 {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the file with only the records not yet acknowledged. Without
    /// it a server that never quite catches up (the queue never empty) would
    /// let the file grow past any bound, and a restart would send every
    /// acknowledged record in it again. At most the bound is copied, once
    /// per half bound sent: the file stays within 1.5 times the bound.
    fn compact(&mut self) -> std::io::Result<()> {
        let mut waiting = vec![0u8; (self.tail - self.head) as usize];
        self.file.read_exact_at(&mut waiting, self.head)?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        crate::private_file::open(
            OpenOptions::new().create(true).write(true).truncate(true),
            Path::new(&tmp),
        )?
        .write_all(&waiting)?;
        std::fs::rename(&tmp, &self.path)?;
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)?;
        self.tail -= self.head;
        self.head = 0;
        Ok(())
    }
}

/// A running NATS output.
pub struct NatsOutput {
    queue: Arc<Mutex<Queue>>,
    wake: Arc<Notify>,
    listeners: watch::Sender<Bytes>,
    /// Set on a clean stop: the publisher sends what is queued, marks the
    /// listeners stopped and ends.
    stopping: Arc<AtomicBool>,
    /// The publisher, until [`super::Output::stop`] hands it to the daemon.
    task: Option<tokio::task::JoinHandle<()>>,
    abort: tokio::task::AbortHandle,
    msg_prefix: String,
    seq: u64,
    metrics: Metrics,
    label: OutputLabels,
    dropped_reported: Instant,
    line: Vec<u8>,
}

impl Drop for NatsOutput {
    fn drop(&mut self) {
        self.abort.abort();
    }
}

impl NatsOutput {
    /// Opens the queue and starts publishing. The server need not be
    /// reachable yet: events wait in the queue.
    pub fn start(s: NatsSettings) -> anyhow::Result<NatsOutput> {
        let queue = Arc::new(Mutex::new(Queue::open(&s.queue_path, s.queue_bytes)?));
        let wake = Arc::new(Notify::new());
        let stopping = Arc::new(AtomicBool::new(false));
        let (listeners, listeners_rx) = watch::channel(Bytes::new());
        let host = s.host;
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let publisher = Publisher {
            url: s.url,
            subject: format!("{}.{host}", s.subject),
            stream_subject: s.subject,
            host: host.clone(),
            queue: queue.clone(),
            wake: wake.clone(),
            stopping: stopping.clone(),
            listeners: listeners_rx,
            metrics: s.metrics.clone(),
            label: s.label.clone(),
        };
        let task = tokio::spawn(publisher.run());
        let n = NatsOutput {
            queue,
            wake,
            listeners,
            stopping,
            abort: task.abort_handle(),
            task: Some(task),
            msg_prefix: format!("{host}-{boot:x}-"),
            seq: 0,
            metrics: s.metrics,
            label: s.label,
            dropped_reported: Instant::now() - Duration::from_secs(60),
            line: Vec::with_capacity(1024),
        };
        n.update_pending();
        Ok(n)
    }

    fn update_pending(&self) {
        let records = self.queue.lock().expect("not poisoned").records;
        self.metrics
            .output_pending
            .get_or_create(&self.label)
            .set(records as i64);
    }
}

impl super::Output for NatsOutput {
    fn send(&mut self, _event: &Event, json: &str) -> Result<(), String> {
        self.seq += 1;
        self.line.clear();
        self.line.extend_from_slice(self.msg_prefix.as_bytes());
        self.line.extend_from_slice(self.seq.to_string().as_bytes());
        self.line.push(b'\t');
        self.line.extend_from_slice(json.as_bytes());
        self.line.push(b'\n');
        let pushed = self.queue.lock().expect("not poisoned").push(&self.line);
        let queued = pushed.map_err(|e| {
            // Not in the queue, so never sent: a drop as well as an error.
            self.metrics.output_dropped.get_or_create(&self.label).inc();
            format!("writing the NATS queue (event dropped): {e}")
        })?;
        if !queued {
            let dropped = self.metrics.output_dropped.get_or_create(&self.label);
            dropped.inc();
            if self.dropped_reported.elapsed() >= Duration::from_secs(10) {
                self.dropped_reported = Instant::now();
                eprintln!(
                    "sockfilter: NATS queue full (server unreachable?): events dropped, {} so far",
                    dropped.get()
                );
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), String> {
        self.wake.notify_one();
        self.update_pending();
        Ok(())
    }

    fn pending(&self) -> u64 {
        self.queue.lock().expect("not poisoned").records
    }

    fn set_listeners(&mut self, json: &str) {
        self.listeners
            .send_replace(Bytes::copy_from_slice(json.as_bytes()));
    }

    fn stop(&mut self) -> Option<tokio::task::JoinHandle<()>> {
        self.stopping.store(true, Ordering::Release);
        self.wake.notify_one();
        self.task.take()
    }
}

/// The publishing task.
struct Publisher {
    url: String,
    /// Where events go: `SUBJECT.HOST`.
    subject: String,
    /// The configured `SUBJECT`, which names the stream.
    stream_subject: String,
    host: String,
    queue: Arc<Mutex<Queue>>,
    wake: Arc<Notify>,
    stopping: Arc<AtomicBool>,
    listeners: watch::Receiver<Bytes>,
    metrics: Metrics,
    label: OutputLabels,
}

impl Publisher {
    fn error(&self, what: &str, e: impl std::fmt::Display, last: &mut Instant) {
        self.metrics.output_errors.get_or_create(&self.label).inc();
        if last.elapsed() >= Duration::from_secs(10) {
            *last = Instant::now();
            eprintln!("sockfilter: NATS output {}: {what}: {e}", self.url);
        }
    }

    async fn run(mut self) {
        let client = loop {
            let options = async_nats::ConnectOptions::new()
                .retry_on_initial_connect()
                .max_reconnects(None)
                .reconnect_delay_callback(|n| Duration::from_millis((100 * n as u64).min(1000)));
            match options.connect(self.url.as_str()).await {
                Ok(c) => break c,
                Err(e) => {
                    self.error("connecting", e, &mut Instant::now());
                    tokio::time::sleep(RETRY).await;
                }
            }
        };
        let mut js = jetstream::new(client.clone());
        js.set_timeout(Duration::from_secs(2));
        let mut last_error = Instant::now() - Duration::from_secs(60);
        let stream = jetstream::stream::Config {
            name: self.stream_subject.replace('.', "_"),
            subjects: vec![format!("{}.>", self.stream_subject)],
            ..Default::default()
        };
        while let Err(e) = js.get_or_create_stream(stream.clone()).await {
            self.error("creating the stream", e, &mut last_error);
            tokio::time::sleep(RETRY).await;
        }
        let mut kv = None;
        let mut listeners_put = Instant::now() - LISTENERS_REFRESH;
        loop {
            if self.stopping.load(Ordering::Acquire) {
                return self.stop(&js, &client, &mut kv).await;
            }
            let sent = self.publish_batch(&js, &client).await;
            match sent {
                Ok(0) => {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), self.wake.notified()).await;
                }
                Ok(_) => {}
                Err(e) => {
                    self.error("publishing", e, &mut last_error);
                    tokio::time::sleep(RETRY).await;
                }
            }
            if self.listeners.has_changed().unwrap_or(false)
                || listeners_put.elapsed() >= LISTENERS_REFRESH
            {
                match self.put_listeners(&js, &mut kv).await {
                    Ok(()) => listeners_put = Instant::now(),
                    Err(e) => self.error("updating the listeners bucket", e, &mut last_error),
                }
            }
        }
    }

    /// On a clean stop: sends what is queued (what cannot be sent stays in
    /// the queue for the next start), then marks the host's listeners as
    /// those of a stopped daemon: they are what it last saw (the programs
    /// behind them usually go on running), and `fleet listeners` says so.
    async fn stop(
        &mut self,
        js: &jetstream::Context,
        client: &async_nats::Client,
        kv: &mut Option<jetstream::kv::Store>,
    ) {
        let mut last_error = Instant::now() - Duration::from_secs(60);
        loop {
            match self.publish_batch(js, client).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    self.error("publishing before the stop", e, &mut last_error);
                    break;
                }
            }
        }
        let last = self.listeners.borrow_and_update().clone();
        let mut value: serde_json::Value = serde_json::from_slice(&last)
            .unwrap_or_else(|_| serde_json::json!({ "host": self.host, "listeners": [] }));
        let now = sockfilter_model::event::rfc3339(std::time::SystemTime::now());
        value["time"] = now.clone().into();
        value["stopped"] = now.into();
        let put = async {
            if kv.is_none() {
                *kv = Some(listeners_bucket(js).await?);
            }
            let kv = kv.as_ref().expect("set above");
            kv.put(&self.host, value.to_string().into()).await?;
            anyhow::Ok(())
        };
        if let Err(e) = put.await {
            self.error("marking the listeners stopped", e, &mut last_error);
        }
    }

    /// Publishes up to [`BATCH`] queued records and waits for their
    /// acknowledgements; consumes them only when all were acknowledged.
    async fn publish_batch(
        &self,
        js: &jetstream::Context,
        client: &async_nats::Client,
    ) -> anyhow::Result<usize> {
        let batch = self.queue.lock().expect("not poisoned").peek(BATCH)?;
        let Some(&(end, _, _)) = batch.last() else {
            return Ok(0);
        };
        if client.connection_state() != async_nats::connection::State::Connected {
            anyhow::bail!("not connected; {} events wait in the queue", batch.len());
        }
        let mut acks = Vec::with_capacity(batch.len());
        for (_, id, json) in &batch {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            acks.push(
                js.publish_with_headers(self.subject.clone(), headers, json.clone())
                    .await?,
            );
        }
        for ack in acks {
            ack.await?;
        }
        let n = batch.len();
        self.queue
            .lock()
            .expect("not poisoned")
            .consume(end, n as u64)?;
        self.metrics
            .output_pending
            .get_or_create(&self.label)
            .set(self.queue.lock().expect("not poisoned").records as i64);
        Ok(n)
    }

    async fn put_listeners(
        &mut self,
        js: &jetstream::Context,
        kv: &mut Option<jetstream::kv::Store>,
    ) -> anyhow::Result<()> {
        let value = self.listeners.borrow_and_update().clone();
        if value.is_empty() {
            return Ok(());
        }
        if kv.is_none() {
            *kv = Some(listeners_bucket(js).await?);
        }
        kv.as_ref()
            .expect("set above")
            .put(&self.host, value)
            .await?;
        Ok(())
    }
}

/// Opens the listeners bucket, creating it if needed.
pub async fn listeners_bucket(js: &jetstream::Context) -> anyhow::Result<jetstream::kv::Store> {
    match js.get_key_value(LISTENERS_BUCKET).await {
        Ok(kv) => Ok(kv),
        Err(_) => Ok(js
            .create_key_value(jetstream::kv::Config {
                bucket: LISTENERS_BUCKET.into(),
                description: "sockfilter: the current listeners of each host".into(),
                history: 1,
                ..Default::default()
            })
            .await
            .context("creating the key-value bucket")?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_is_bounded_ordered_and_survives_reopening() {
        let path =
            std::env::temp_dir().join(format!("sockfilter-nats-queue-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut q = Queue::open(&path, 30).unwrap();
        assert!(q.push(b"a-1\t{\"n\":1}\n").unwrap());
        assert!(q.push(b"a-2\t{\"n\":2}\n").unwrap());
        assert!(!q.push(b"a-3\t{\"n\":3}\n").unwrap(), "over the bound");
        let batch = q.peek(1).unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].1, "a-1");
        assert_eq!(&batch[0].2[..], b"{\"n\":1}");
        q.consume(batch[0].0, 1).unwrap();
        drop(q);
        // A partial last line (a crash mid-write) is cut off on reopening.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"a-9\t{")
            .unwrap();
        let q = Queue::open(&path, 30).unwrap();
        let all = q.peek(10).unwrap();
        let ids: Vec<&str> = all.iter().map(|r| r.1.as_str()).collect();
        assert_eq!(
            ids,
            ["a-1", "a-2"],
            "unacknowledged records are sent again after a restart"
        );
        std::fs::remove_file(&path).unwrap();
    }

    /// A tmpfs of two pages mounted on a new directory, unmounted and
    /// removed when dropped (also when the test fails).
    struct TinyFs(PathBuf);

    impl TinyFs {
        fn mount(tag: &str) -> TinyFs {
            let dir = std::env::temp_dir().join(format!("sockfilter-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let target = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: plain mount(2) with NUL-terminated strings that outlive the call.
            let rc = unsafe {
                libc::mount(
                    c"tmpfs".as_ptr(),
                    target.as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    c"size=8k".as_ptr().cast(),
                )
            };
            assert_eq!(
                rc,
                0,
                "mounting a tmpfs on {} (needs root): {}",
                dir.display(),
                std::io::Error::last_os_error()
            );
            TinyFs(dir)
        }
    }

    impl Drop for TinyFs {
        fn drop(&mut self) {
            let target = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: umount2(2) of the directory this guard mounted.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
            let _ = std::fs::remove_dir(&self.0);
        }
    }

    /// A disk that fills up in the middle of a record: the record is
    /// refused, and once there is room again the records appended after it
    /// read back intact (the partial one does not sit between them).
    #[test]
    fn a_record_the_disk_could_not_take_leaves_no_partial_bytes() {
        let fs = TinyFs::mount("nats-queue-full");
        let filler = fs.0.join("filler");
        std::fs::write(&filler, vec![b'x'; 1000]).unwrap();
        let path = fs.0.join("queue.jsonl");
        let mut q = Queue::open(&path, 1 << 20).unwrap();
        let record =
            |n: u32| format!("a-{n:04}\t{{\"pad\":\"{}\"}}\n", "p".repeat(90)).into_bytes();
        let mut n = 0;
        let err = loop {
            match q.push(&record(n)) {
                Ok(queued) => assert!(queued),
                Err(e) => break e,
            }
            n += 1;
            assert!(n < 1000, "the 8 kB tmpfs never filled up");
        };
        assert!(n > 0, "{err}");
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            q.tail,
            "the part of record {n} that fit was cut off again"
        );
        // Room again (another file on the disk went away): later records
        // are appended after the last complete one.
        std::fs::remove_file(&filler).unwrap();
        assert!(q.push(&record(n + 1)).unwrap());
        let all = q.peek(10_000).unwrap();
        assert_eq!(all.len() as u32, n + 1);
        for (i, (_, id, json)) in all.iter().enumerate() {
            let want = if i as u32 == n { n + 1 } else { i as u32 };
            assert_eq!(id, &format!("a-{want:04}"));
            let v: serde_json::Value = serde_json::from_slice(json).unwrap();
            assert_eq!(v["pad"].as_str().unwrap().len(), 90);
        }
        drop(q);
        // And so does a restart.
        assert_eq!(Queue::open(&path, 1 << 20).unwrap().records as u32, n + 1);
    }

    #[test]
    fn the_file_stays_bounded_while_the_queue_never_empties() {
        let path = std::env::temp_dir().join(format!(
            "sockfilter-nats-queue-compact-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let mut q = Queue::open(&path, 100).unwrap();
        let record = |n: u32| format!("a-{n:03}\t{{}}\n"); // 9 bytes
                                                           // Five records always wait; one is sent for each one added.
        for n in 0..5 {
            assert!(q.push(record(n).as_bytes()).unwrap());
        }
        for n in 5..200 {
            assert!(q.push(record(n).as_bytes()).unwrap());
            let sent = q.peek(1).unwrap();
            assert_eq!(sent[0].1, format!("a-{:03}", n - 5), "in order");
            q.consume(sent[0].0, 1).unwrap();
            let size = std::fs::metadata(&path).unwrap().len();
            assert!(size <= 150, "{size} bytes on disk for a bound of 100");
        }
        // After a restart, only what was not acknowledged is sent again.
        drop(q);
        let q = Queue::open(&path, 100).unwrap();
        let first = &q.peek(1).unwrap()[0].1;
        assert!(first.as_str() >= "a-180", "{first}");
        std::fs::remove_file(&path).unwrap();
    }
}
