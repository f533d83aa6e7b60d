//! The entry point of the Rust API: choose what to watch with a [`Session`],
//! then either consume the events as a [`Stream`] ([`Session::start`]) or
//! run a [`SocketFilter`] over them ([`Session::run_filter`]).
//!
//! Everything runs inside the caller's tokio runtime (either flavour). The
//! BPF programs stay attached for as long as the [`EventStream`] lives and
//! are detached when it is dropped.
//!
//! ```no_run
//! use sockfilter::model::EventKind;
//! use sockfilter::session::Session;
//! use sockfilter::watch::Item;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let mut events = Session::new()
//!         .events([EventKind::Listen])
//!         .existing(true)
//!         .start()?;
//!     while let Some(item) = events.next().await {
//!         if let Item::Event(e) = item {
//!             println!("{} listens on {}", e.owner.map(|o| o.comm).unwrap_or_default(), e.local);
//!         }
//!     }
//!     Ok(())
//! }
//! ```
//!
//! [`EventStream`] implements [`futures_core::Stream`], so `StreamExt`
//! combinators of `futures-util` or `tokio-stream` work on it too.

use crate::diag::{destroy, DestroyTarget};
use crate::filter::{DropOutcome, FlowVerdict, SocketFilter};
use crate::loader::LoadError;
use crate::watch::{Item, WatchOptions, Watcher};
use futures_core::Stream;
use sockfilter_model::flow::{Change, FlowTable};
use sockfilter_model::{Event, EventKind};
use std::collections::HashSet;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

/// What to watch: which kinds of event, which cgroup, and whether to start
/// with the sockets that already exist. A builder; [`Session::new`] watches
/// every kind, every process, and includes existing sockets.
///
/// ```
/// use sockfilter::model::EventKind;
/// use sockfilter::session::Session;
/// let s = Session::new()
///     .events([EventKind::Listen, EventKind::Accept])
///     .cgroup("/sys/fs/cgroup/my-service")
///     .existing(false);
/// assert!(s.wants(EventKind::Listen));
/// assert!(!s.wants(EventKind::Close));
/// ```
#[derive(Debug, Clone)]
pub struct Session {
    kinds: Vec<EventKind>,
    cgroup: Option<PathBuf>,
    existing: bool,
}

impl Default for Session {
    fn default() -> Self {
        Session::new()
    }
}

impl Session {
    /// Every kind of event, every process on the host, existing sockets
    /// first.
    pub fn new() -> Session {
        Session {
            kinds: Vec::new(),
            cgroup: None,
            existing: true,
        }
    }

    /// Only these kinds of event. An empty list means every kind.
    pub fn events(mut self, kinds: impl IntoIterator<Item = EventKind>) -> Session {
        self.kinds = kinds.into_iter().collect();
        self
    }

    /// Only processes in this cgroup v2 subtree (a directory of the cgroup2
    /// mount, e.g. `/sys/fs/cgroup/system.slice/nginx.service`). Without it
    /// the programs attach to the cgroup2 root. cgroup-BPF programs are
    /// exclusive down a hierarchy: a session on the root and one on a
    /// descendant cannot run at the same time.
    pub fn cgroup(mut self, dir: impl Into<PathBuf>) -> Session {
        self.cgroup = Some(dir.into());
        self
    }

    /// Whether to report the sockets that exist at start (as events with
    /// `existing: true`, and flows with `existing`) before the live stream.
    pub fn existing(mut self, yes: bool) -> Session {
        self.existing = yes;
        self
    }

    /// Whether events of this kind are delivered.
    pub fn wants(&self, kind: EventKind) -> bool {
        self.kinds.is_empty() || self.kinds.contains(&kind)
    }

    /// Attaches the programs and takes the snapshot of existing sockets.
    /// Must be called inside a tokio runtime; needs root. The returned stream
    /// yields [`Item`]s (events of the chosen kinds, and [`Item::Lost`] when
    /// the kernel dropped events) and never ends while it lives.
    pub fn start(self) -> Result<EventStream, LoadError> {
        let watcher = Watcher::start(WatchOptions {
            cgroup: self.cgroup.clone(),
            existing: self.existing,
        })?;
        Ok(EventStream {
            watcher: Some(watcher),
            pending: None,
            session: self,
        })
    }

    /// Starts the session and runs `filter` over it until the stream ends
    /// (which it does not while attached): see [`Session::run_filter_until`].
    pub async fn run_filter<F: SocketFilter>(self, filter: F) -> Result<F, LoadError> {
        self.run_filter_until(filter, std::future::pending::<()>())
            .await
    }

    /// Starts the session and runs `filter` until `stop` completes (for
    /// example `tokio::signal::ctrl_c()`), then detaches and returns the
    /// filter. See [`EventStream::run_filter_until`].
    pub async fn run_filter_until<F: SocketFilter, S: Future>(
        self,
        filter: F,
        stop: S,
    ) -> Result<F, LoadError> {
        Ok(self.start()?.run_filter_until(filter, stop).await)
    }
}

type Pending = Pin<Box<dyn Future<Output = (Watcher, Option<Item>)> + Send>>;

/// A running session: a [`Stream`] of [`Item`]s. Dropping it detaches every
/// BPF program.
pub struct EventStream {
    watcher: Option<Watcher>,
    pending: Option<Pending>,
    session: Session,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl EventStream {
    /// The session this stream was started from.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The next item of every kind, ignoring the session's kind filter.
    fn poll_any(&mut self, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        if self.pending.is_none() {
            let Some(mut w) = self.watcher.take() else {
                return Poll::Ready(None);
            };
            self.pending = Some(Box::pin(async move {
                let item = w.next().await;
                (w, item)
            }));
        }
        let fut = self.pending.as_mut().expect("set above");
        match fut.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready((w, item)) => {
                self.pending = None;
                self.watcher = Some(w);
                Poll::Ready(item)
            }
        }
    }

    async fn next_any(&mut self) -> Option<Item> {
        std::future::poll_fn(|cx| self.poll_any(cx)).await
    }

    /// The next item (an event of the chosen kinds, or [`Item::Lost`]).
    /// Cancel-safe: dropping the future loses nothing.
    pub async fn next(&mut self) -> Option<Item> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// Runs `filter` until `stop` completes or the stream ends, and returns
    /// it. Every event goes into a [`FlowTable`]; the filter's event
    /// callbacks are called for the session's kinds, `handle_new_flow` for
    /// every flow that enters the table, and a [`FlowVerdict::Drop`] is
    /// carried out at once with [`destroy`] (its result and latency go to
    /// [`SocketFilter::on_drop`]). When the kernel drops events, the table is
    /// resynchronised with the sockets that exist (sock_diag), so flows whose
    /// `close` was lost do not stay forever.
    pub async fn run_filter_until<F: SocketFilter, S: Future>(
        mut self,
        mut filter: F,
        stop: S,
    ) -> F {
        let mut table = FlowTable::new();
        filter.on_start();
        let mut stop = std::pin::pin!(stop);
        loop {
            let item = tokio::select! {
                biased;
                _ = &mut stop => break,
                item = self.next_any() => item,
            };
            match item {
                None => break,
                Some(Item::Lost(n)) => {
                    filter.on_lost(n);
                    resync(&mut table);
                }
                Some(Item::Event(e)) => self.dispatch(&mut filter, &mut table, &e),
            }
        }
        filter
    }

    fn dispatch<F: SocketFilter>(&self, filter: &mut F, table: &mut FlowTable, e: &Event) {
        if self.session.wants(e.kind) {
            match e.kind {
                EventKind::Bind => filter.on_bind(e),
                EventKind::Listen => filter.on_listen(e),
                EventKind::Connect => filter.on_connect(e),
                EventKind::Accept => filter.on_accept(e),
                EventKind::Close => filter.on_close(e),
            }
        }
        for update in table.apply(e) {
            if update.change == Change::Opened
                && filter.handle_new_flow(&update.flow) == FlowVerdict::Drop
            {
                let result = destroy(&DestroyTarget::from(&update.flow));
                let latency = SystemTime::now().duration_since(e.time).unwrap_or_default();
                filter.on_drop(&update.flow, &DropOutcome { result, latency });
            }
            filter.on_flow_update(&update);
        }
    }
}

/// After lost events: keep only the flows whose socket still exists.
fn resync(table: &mut FlowTable) {
    if let Ok(sockets) = crate::diag::sockets_all_namespaces() {
        let live: HashSet<u64> = sockets.iter().map(|s| s.cookie).collect();
        table.retain(|f| live.contains(&f.id));
    }
}

impl Stream for EventStream {
    type Item = Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let this = self.get_mut();
        loop {
            match this.poll_any(cx) {
                Poll::Ready(Some(Item::Event(e))) if !this.session.wants(e.kind) => continue,
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_defaults_watch_everything() {
        let s = Session::new();
        assert!(EventKind::ALL.iter().all(|&k| s.wants(k)));
        assert!(s.existing);
        assert!(s.cgroup.is_none());
        let s = s.events([EventKind::Close]).existing(false).cgroup("/x");
        assert!(s.wants(EventKind::Close) && !s.wants(EventKind::Bind));
        assert_eq!(s.cgroup.as_deref(), Some(std::path::Path::new("/x")));
    }

    fn assert_send<T: Send>() {}

    #[test]
    fn the_stream_can_move_between_tasks() {
        assert_send::<EventStream>();
    }
}
