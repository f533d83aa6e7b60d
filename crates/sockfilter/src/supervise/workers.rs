//! The threads that perform emulated calls with the callers' credentials.
//!
//! A worker takes one caller's credentials ([`Creds::assume`]) when it
//! starts and keeps them: it serves only calls made with exactly those
//! credentials. There are at most [`MAX_WORKERS`] workers in all, whatever
//! the program does; a job that finds no free worker of its credentials
//! waits in the queue (the calling thread of the program stays held, as
//! in a blocking call), and an idle worker of other credentials gives its
//! place up to it. Idle workers end after [`IDLE`].

use super::credentials::Creds;
use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Most worker threads at once, for all callers together.
pub(super) const MAX_WORKERS: usize = 32;
/// How long a worker waits for work before it ends.
const IDLE: Duration = Duration::from_secs(5);

/// Work for a worker: runs with the credentials it was queued for; gets
/// `Err` when no thread could take them (it must then fail the call).
pub(super) type Work = Box<dyn FnOnce(Result<(), std::io::Error>) + Send>;

struct Job {
    creds: Arc<Creds>,
    work: Work,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    /// Workers by credentials: (all, idle).
    workers: HashMap<Arc<Creds>, (usize, usize)>,
    total: usize,
}

/// The pool of credential-bound workers.
#[derive(Default)]
pub(super) struct Workers {
    state: Mutex<State>,
    wake: Condvar,
    /// Asks the spawner thread for a worker with these credentials.
    spawn: Mutex<Option<Sender<Arc<Creds>>>>,
}

impl Workers {
    /// Queues `work` to run on a worker with credentials `creds`, starting
    /// one if there is room.
    pub(super) fn submit(self: &Arc<Self>, creds: Creds, work: Work) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let creds = match st.workers.get_key_value(&creds) {
            Some((k, _)) => k.clone(),
            None => Arc::new(creds),
        };
        st.queue.push_back(Job {
            creds: creds.clone(),
            work,
        });
        self.start_if_needed(&mut st, &creds);
        drop(st);
        self.wake.notify_all();
    }

    fn start_if_needed(self: &Arc<Self>, st: &mut State, creds: &Arc<Creds>) {
        let (_, idle) = st.workers.get(creds).copied().unwrap_or((0, 0));
        let waiting = st.queue.iter().filter(|j| j.creds == *creds).count();
        if waiting > idle && st.total < MAX_WORKERS {
            let e = st.workers.entry(creds.clone()).or_insert((0, 0));
            e.0 += 1;
            st.total += 1;
            if !self.request_worker(creds.clone()) {
                self.left(st, creds);
            }
        }
    }

    /// Has the spawner thread start a worker for `creds`. Workers are never
    /// started by a worker: a thread starts with its creator's credentials,
    /// and a worker's are a caller's, from which it could not take others.
    /// The spawner is started by the first `submit`, on the notification
    /// loop, with the supervisor's credentials.
    fn request_worker(self: &Arc<Self>, creds: Arc<Creds>) -> bool {
        let mut spawn = self.spawn.lock().unwrap_or_else(|e| e.into_inner());
        if spawn.is_none() {
            let (tx, rx) = channel::<Arc<Creds>>();
            let pool = Arc::downgrade(self);
            let started = std::thread::Builder::new()
                .name("sockfilter-spawn".into())
                .spawn(move || {
                    while let Ok(c) = rx.recv() {
                        let Some(pool) = pool.upgrade() else { return };
                        let p = pool.clone();
                        let cc = c.clone();
                        let spawned = std::thread::Builder::new()
                            .name("sockfilter-worker".into())
                            .spawn(move || p.work(cc));
                        if spawned.is_err() {
                            let mut st = pool.state.lock().unwrap_or_else(|e| e.into_inner());
                            pool.left(&mut st, &c);
                        }
                    }
                });
            if started.is_err() {
                return false;
            }
            *spawn = Some(tx);
        }
        spawn.as_ref().is_some_and(|tx| tx.send(creds).is_ok())
    }

    /// Bookkeeping for a worker that ended (or never started).
    fn left(&self, st: &mut State, creds: &Arc<Creds>) {
        st.total -= 1;
        if let Some(e) = st.workers.get_mut(creds) {
            e.0 -= 1;
            if e.0 == 0 {
                st.workers.remove(creds);
            }
        }
    }

    /// A worker's life: take the credentials, then serve their jobs.
    fn work(self: Arc<Self>, creds: Arc<Creds>) {
        let assumed = if Creds::current().as_ref() == Some(&*creds) {
            Ok(())
        } else {
            creds.assume()
        };
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(i) = st.queue.iter().position(|j| j.creds == creds) {
                let job = st.queue.remove(i).expect("position is in the queue");
                drop(st);
                let result = match &assumed {
                    Ok(()) => Ok(()),
                    Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
                };
                (job.work)(result);
                st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Give the place up to a job of other credentials that waits
            // for a worker when there is no room for one.
            let starved = st.total >= MAX_WORKERS
                && st.queue.iter().any(|j| {
                    let (_, idle) = st.workers.get(&j.creds).copied().unwrap_or((0, 0));
                    idle == 0
                });
            if starved || assumed.is_err() {
                break;
            }
            st.workers.get_mut(&creds).expect("own entry").1 += 1;
            let (guard, timeout) = self
                .wake
                .wait_timeout(st, IDLE)
                .unwrap_or_else(|e| e.into_inner());
            st = guard;
            st.workers.get_mut(&creds).expect("own entry").1 -= 1;
            if timeout.timed_out() && !st.queue.iter().any(|j| j.creds == creds) {
                break;
            }
        }
        self.left(&mut st, &creds);
        // Start workers for jobs this one leaves room for.
        let waiting: Vec<Arc<Creds>> = st.queue.iter().map(|j| j.creds.clone()).collect();
        for c in waiting {
            self.start_if_needed(&mut st, &c);
        }
        drop(st);
        self.wake.notify_all();
    }
}
