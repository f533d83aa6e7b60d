//! The public entry points: [`Supervisor`] starts a command under
//! supervision, [`Supervised`] is the running command.

use super::child::{child_setup, fetch_listener};
use super::credentials::Creds;
use super::filter;
use super::notify::{eventfd, notify_loop, Core};
use super::request::{Request, Verdict};
use super::sys::pipe;
use super::waiter::Waiter;
use sockfilter_model::event::Event;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::mem::zeroed;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Why a command could not be started under supervision.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// The command was not found (exit status 127 by shell convention).
    #[error("{program}: command not found")]
    NotFound {
        /// The program as given.
        program: String,
    },
    /// The command could not be executed (exit status 126 by shell convention).
    #[error("{program}: cannot execute: {source}")]
    NotExecutable {
        /// The program as given.
        program: String,
        /// The error of `execve`.
        source: io::Error,
    },
    /// Installing the seccomp filter or taking its listener failed.
    #[error("cannot install the seccomp filter: {0}")]
    Seccomp(io::Error),
    /// Another system error while starting.
    #[error("{0}")]
    Io(#[from] io::Error),
}

pub(super) type DecideFn = dyn Fn(&Request) -> Verdict + Send + Sync;
pub(super) type EventFn = dyn Fn(&Event) + Send + Sync;
type WarnFn = dyn Fn(&str) + Send + Sync;

/// Runs commands with their socket calls held until the decision callback answers.
pub struct Supervisor {
    decide: Box<DecideFn>,
    on_event: Option<Box<EventFn>>,
    on_warning: Option<Box<WarnFn>>,
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor").finish_non_exhaustive()
    }
}

impl Supervisor {
    /// A supervisor that decides every held call with `decide`.
    ///
    /// `decide` runs on the supervisor's threads, with its credentials,
    /// possibly on two at once (the notification loop, and the thread that
    /// waits for blocked `accept`s); while it runs, the calling thread of
    /// the program waits.
    pub fn new(decide: impl Fn(&Request) -> Verdict + Send + Sync + 'static) -> Self {
        Supervisor {
            decide: Box::new(decide),
            on_event: None,
            on_warning: None,
        }
    }

    /// Calls `f` with one [`Event`] per decision (also for calls allowed
    /// without a rule). `sendto`/`sendmsg` to a destination a socket already
    /// sent to with an allowing verdict is not decided again and not reported.
    pub fn on_event(mut self, f: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Box::new(f));
        self
    }

    /// Calls `f` with a message when supervision starts with a guarantee
    /// missing because the kernel lacks a feature (today: the Landlock TCP
    /// backstop, see `docs/security.md`).
    pub fn on_warning(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.on_warning = Some(Box::new(f));
        self
    }

    /// Starts `cmd` under supervision and returns at once; the held calls are
    /// served by a background thread until every supervised task is gone.
    pub fn spawn(self, cmd: &mut Command) -> Result<Supervised, SuperviseError> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let filter = Arc::new(filter::program()?);
        let (report_r, report_w) = pipe()?;
        let (ack_r, ack_w) = pipe()?;
        let fds = [
            report_w.as_raw_fd(),
            ack_r.as_raw_fd(),
            report_r.as_raw_fd(),
            ack_w.as_raw_fd(),
        ];
        let child_filter = filter.clone();
        // SAFETY: the closure runs in the forked child and only makes
        // async-signal-safe system calls on memory prepared before the fork.
        unsafe {
            cmd.pre_exec(move || child_setup(&child_filter, fds));
        }
        let fetcher = std::thread::spawn(move || fetch_listener(report_r, ack_w));
        let spawned = cmd.spawn();
        drop(report_w);
        drop(ack_r);
        let fetched = fetcher
            .join()
            .map_err(|_| io::Error::other("listener thread panicked"))?;
        let child = match spawned {
            Ok(child) => child,
            Err(err) => {
                return Err(match fetched {
                    // The filter was installed: execve itself failed.
                    Ok(Some(_)) => match err.kind() {
                        io::ErrorKind::NotFound => SuperviseError::NotFound { program },
                        _ => SuperviseError::NotExecutable {
                            program,
                            source: err,
                        },
                    },
                    _ if err.raw_os_error() == Some(libc::EBUSY) => {
                        SuperviseError::Seccomp(io::Error::other(
                            "this process is already supervised: the kernel allows one \
                             seccomp listener per process tree (EBUSY)",
                        ))
                    }
                    _ => SuperviseError::Seccomp(err),
                });
            }
        };
        let installed = match fetched {
            Ok(Some(installed)) => installed,
            Ok(None) => {
                return Err(SuperviseError::Seccomp(io::Error::other(
                    "the child did not report its listener",
                )))
            }
            Err(err) => return Err(SuperviseError::Seccomp(err)),
        };
        if installed.landlock_errno != 0 {
            if let Some(warn) = &self.on_warning {
                warn(&format!(
                    "no Landlock TCP backstop ({}; needs Landlock ABI 4, Linux 6.7, with \
                     landlock in the kernel's lsm= list): a multi-threaded program can get \
                     a TCP bind or connect through undecided by racing dup2() against a call \
                     on a non-IP socket (docs/security.md)",
                    io::Error::from_raw_os_error(installed.landlock_errno)
                ));
            }
        }
        let core = Arc::new(Core {
            listener: installed.listener,
            decide: self.decide,
            on_event: self.on_event,
            sent: Mutex::new(HashSet::new()),
            cgroups: Mutex::new(HashMap::new()),
            own_creds: Creds::current(),
            workers: Arc::default(),
            completions: Mutex::new(Vec::new()),
            wake: eventfd()?,
            in_flight: Default::default(),
            waiter: Arc::new(Waiter::new()?),
        });
        raise_open_files_limit();
        let done = Arc::new(AtomicBool::new(false));
        let loop_done = done.clone();
        let thread = std::thread::Builder::new()
            .name("sockfilter-supervise".into())
            .spawn(move || {
                // Marks the end also when a callback panics: the listener is
                // then closed and the program's held calls fail with ENOSYS.
                struct Done(Arc<AtomicBool>);
                impl Drop for Done {
                    fn drop(&mut self) {
                        self.0.store(true, Ordering::SeqCst);
                    }
                }
                let _done = Done(loop_done);
                notify_loop(&core);
            })?;
        Ok(Supervised {
            child,
            thread: Some(thread),
            done,
        })
    }

    /// Runs `cmd` under supervision until it exits and every descendant it
    /// left behind is gone, forwarding SIGINT, SIGTERM, SIGHUP and SIGQUIT to
    /// it. A second such signal after the command exited stops supervising
    /// the remaining descendants (their held calls then fail with `ENOSYS`).
    ///
    /// Blocks those signals and SIGCHLD in the calling thread while it runs.
    pub fn run(self, cmd: &mut Command) -> Result<ExitStatus, SuperviseError> {
        use nix::sys::signal::{SigSet, SigmaskHow, Signal};
        let mut set = SigSet::empty();
        for s in [
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGQUIT,
            Signal::SIGCHLD,
        ] {
            set.add(s);
        }
        let mut old = SigSet::empty();
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))
            .map_err(io::Error::from)?;
        // The command starts with the signal mask of the caller, not ours.
        let child_mask = *old.as_ref();
        // SAFETY: pthread_sigmask is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                libc::pthread_sigmask(libc::SIG_SETMASK, &child_mask, std::ptr::null_mut());
                Ok(())
            });
        }
        let result = self.spawn(cmd).and_then(|mut sup| {
            let pid = sup.id() as libc::pid_t;
            let mut status = None;
            loop {
                if status.is_none() {
                    status = sup.child.try_wait()?;
                }
                if let Some(st) = status {
                    if sup.finished() {
                        return Ok(st);
                    }
                }
                let ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 100_000_000,
                };
                // SAFETY: siginfo_t is plain data.
                let mut info: libc::siginfo_t = unsafe { zeroed() };
                // SAFETY: plain system call on a valid signal set and siginfo.
                let sig = unsafe { libc::sigtimedwait(set.as_ref() as *const _, &mut info, &ts) };
                // A signal from the terminal (SI_KERNEL) already reached the
                // command, which shares our process group: forward only those
                // sent to sockfilter itself.
                if sig > 0
                    && sig != libc::SIGCHLD
                    && (info.si_code != libc::SI_KERNEL || status.is_some())
                {
                    match status {
                        // SAFETY: plain system call.
                        None => unsafe {
                            libc::kill(pid, sig);
                        },
                        Some(st) => return Ok(st),
                    }
                }
            }
        });
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
        result
    }
}

/// A command running under supervision.
#[derive(Debug)]
pub struct Supervised {
    child: Child,
    thread: Option<JoinHandle<()>>,
    done: Arc<AtomicBool>,
}

impl Supervised {
    /// The command's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The command's process, e.g. to take its piped standard streams.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// True once no supervised task is left (the command and every
    /// descendant have exited and been reaped).
    pub fn finished(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }

    /// Waits for the command to exit, then for every descendant it left
    /// behind, and returns the command's status.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.child.wait()?;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Ok(status)
    }
}

/// Each held call holds a pidfd and a duplicate of a socket while it waits:
/// let the supervisor open as many files as its hard limit allows.
fn raise_open_files_limit() {
    // SAFETY: rlimit is plain data.
    let mut lim: libc::rlimit = unsafe { zeroed() };
    // SAFETY: valid pointers to an rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
