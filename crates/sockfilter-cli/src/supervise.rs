//! `sockfilter supervise`: run a program with its socket calls held until a
//! policy (or the user, with `--ask`) decides. See `docs/supervise.md`.

use crate::supervise_names::NameLearner;
use anyhow::Context;
use sockfilter::supervise::{Operation, Request, SuperviseError, Supervisor, Verdict};
use sockfilter_model::event::{Endpoint, Event};
use sockfilter_model::policy::{self, Policy, Subject};
use sockfilter_model::text::{escape, escape_or};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::Mutex;

/// Arguments of `sockfilter supervise`.
#[derive(clap::Args)]
pub struct Args {
    /// Policy file deciding every held call (default without one: allow).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Ask on the terminal about calls the policy leaves to its default (all
    /// calls without a policy).
    #[arg(long)]
    pub ask: bool,
    /// Write one JSON event per decision to FILE (the `watch --json` shape).
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// Print one line per decision on standard error.
    #[arg(long, short)]
    pub verbose: bool,
    /// The command to run, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Runs `sockfilter supervise`; the exit status is the command's (128 + N
/// when it died of signal N), 2 for a bad policy, 127 when the command is not
/// found, 126 when it cannot be executed.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let policy = match &args.policy {
        Some(path) => match Policy::load(path) {
            Ok(p) => {
                // A name rule needs the names the program resolved: the
                // kernel's DNS learner (BPF, so root) supplies them; without
                // it such a rule would never match, so it is refused rather
                // than ignored.
                if let Some(r) = p.rules.iter().find(|r| r.remote_host.is_some()) {
                    if !nix::unistd::geteuid().is_root() {
                        eprintln!(
                            "sockfilter: {}:{}: rule {:?} has `remote_host`, which supervise applies only as root (names are learned from DNS answers by a BPF program in the kernel)",
                            path.display(),
                            r.line,
                            r.name
                        );
                        return Ok(ExitCode::from(2));
                    }
                }
                Some(p)
            }
            Err(err) => {
                eprintln!("sockfilter: {err}");
                return Ok(ExitCode::from(2));
            }
        },
        None => None,
    };
    let asker = if args.ask {
        match File::options().read(true).write(true).open("/dev/tty") {
            Ok(tty) => Some(Asker {
                tty: Mutex::new(tty),
                always: Mutex::new(HashMap::new()),
            }),
            Err(err) => {
                eprintln!("sockfilter: --ask needs a controlling terminal: /dev/tty: {err}");
                return Ok(ExitCode::from(2));
            }
        }
    } else {
        None
    };
    let events = match &args.events {
        Some(path) => {
            Some(Mutex::new(File::create(path).with_context(|| {
                format!("cannot write {}", path.display())
            })?))
        }
        None => None,
    };
    let verbose = args.verbose;
    let learner = match &policy {
        Some(p) if p.rules.iter().any(|r| r.remote_host.is_some()) => {
            Some(NameLearner::start().context("remote_host rules")?)
        }
        _ => None,
    };
    let learner = learner.map(std::sync::Arc::new);
    let learner_for_decide = learner.clone();

    let decide = move |req: &Request| -> Verdict {
        let decision = policy.as_ref().map(|p| {
            let name = match (&learner_for_decide, req.op) {
                (Some(l), Operation::Connect) => l.name_of(req),
                _ => None,
            };
            let mut subject = subject(req);
            subject.remote_host = name.as_deref();
            let d = p.decide(&subject);
            (d.action, d.rule.map(str::to_string))
        });
        match (decision, &asker) {
            (Some((action, Some(rule))), _) => verdict(action).with_rule(rule),
            (_, Some(asker)) => asker.ask(req),
            (Some((action, None)), None) => verdict(action),
            (None, None) => Verdict::allow(),
        }
    };
    let on_event = move |ev: &Event| {
        if let Some(out) = &events {
            let mut line = ev.to_json().to_string();
            line.push('\n');
            let mut f = out.lock().unwrap_or_else(|e| e.into_inner());
            let _ = f.write_all(line.as_bytes());
        }
        if verbose {
            eprintln!("sockfilter: {}", describe_event(ev));
        }
    };

    let mut cmd = Command::new(&args.command[0]);
    cmd.args(&args.command[1..]);
    if let Some(l) = &learner {
        l.enter(&mut cmd);
    }
    let mut supervisor =
        Supervisor::new(decide).on_warning(|w| eprintln!("sockfilter: warning: {w}"));
    if args.events.is_some() || verbose {
        supervisor = supervisor.on_event(on_event);
    }
    match supervisor.run(&mut cmd) {
        Ok(status) => Ok(match (status.code(), status.signal()) {
            (Some(code), _) => ExitCode::from(code as u8),
            (None, Some(sig)) => ExitCode::from((128 + sig) as u8),
            (None, None) => ExitCode::FAILURE,
        }),
        Err(err @ SuperviseError::NotFound { .. }) => {
            eprintln!("sockfilter: {err}");
            Ok(ExitCode::from(127))
        }
        Err(err @ SuperviseError::NotExecutable { .. }) => {
            eprintln!("sockfilter: {err}");
            Ok(ExitCode::from(126))
        }
        Err(err) => Err(err.into()),
    }
}

fn verdict(action: policy::Action) -> Verdict {
    match action {
        policy::Action::Allow => Verdict::allow(),
        policy::Action::Deny => Verdict::deny(),
        policy::Action::Audit => Verdict::audit(),
    }
}

fn subject(req: &Request) -> Subject<'_> {
    let mut s = Subject::new(req.op, req.proto, req.family);
    s.local = req.local;
    s.remote = req.remote;
    s.exe = req.exe.as_deref();
    s.comm = Some(&req.comm);
    s.uid = Some(req.uid);
    s.cgroup = req.cgroup.as_deref();
    s
}

fn ep(e: Option<Endpoint>) -> String {
    e.map_or_else(|| "-".to_string(), |e| e.to_string())
}

fn describe_event(ev: &Event) -> String {
    let owner = ev.owner.as_ref();
    let mut s = format!(
        "{} {} {} {} local {} remote {} pid {} ({})",
        ev.verdict.as_str(),
        ev.kind,
        ev.proto.as_str(),
        ev.family.as_str(),
        ev.local,
        ep(ev.remote),
        owner.map_or(0, |o| o.pid),
        escape(owner.map_or("", |o| o.comm.as_str())),
    );
    match &ev.rule {
        Some(rule) => s.push_str(&format!(" rule {rule}")),
        None => s.push_str(" (default)"),
    }
    s
}

/// What an "always" answer holds for: operation, executable, endpoint.
type AlwaysKey = (Operation, Option<String>, Endpoint);

/// `--ask`: one question at a time on the controlling terminal.
struct Asker {
    tty: Mutex<File>,
    /// (operation, executable, endpoint) -> allow, for "always" answers.
    always: Mutex<HashMap<AlwaysKey, bool>>,
}

impl Asker {
    /// The endpoint an "always" answer holds for: the local one for bind and
    /// listen, the remote one for connect, the peer's address (any port) for
    /// accept.
    fn key(req: &Request) -> Option<AlwaysKey> {
        let e = match req.op {
            Operation::Bind | Operation::Listen => req.local?,
            Operation::Connect => req.remote?,
            Operation::Accept => Endpoint::new(req.remote?.ip, 0),
        };
        Some((req.op, req.exe.clone(), e))
    }

    fn ask(&self, req: &Request) -> Verdict {
        let mut tty = self.tty.lock().unwrap_or_else(|e| e.into_inner());
        let key = Self::key(req);
        if let Some(k) = &key {
            if let Some(&allow) = self.always.lock().unwrap().get(k) {
                return if allow {
                    Verdict::allow()
                } else {
                    Verdict::deny()
                };
            }
        }
        // comm and exe are the program's to choose: escaped, so that no
        // escape sequence or newline of theirs reaches the terminal.
        let prompt = format!(
            "\r\nsockfilter: pid {} ({}, {}) uid {} wants to {} {} {} local {} remote {}\r\n\
             [a]llow once [A]llow always [d]eny once [D]eny always ",
            req.pid,
            escape(&req.comm),
            escape_or(req.exe.as_deref(), "?"),
            req.uid,
            req.op,
            req.proto.as_str(),
            req.family.as_str(),
            ep(req.local),
            ep(req.remote),
        );
        let _ = tty.write_all(prompt.as_bytes());
        let _ = tty.flush();
        let answer = read_key(&mut tty);
        let (allow, always, word) = match answer {
            Some(b'a') => (true, false, "allow once"),
            Some(b'A') => (true, true, "allow always"),
            Some(b'D') => (false, true, "deny always"),
            _ => (false, false, "deny once"),
        };
        let _ = tty.write_all(format!("{word}\r\n").as_bytes());
        if always {
            if let Some(k) = key {
                self.always.lock().unwrap().insert(k, allow);
            }
        }
        if allow {
            Verdict::allow()
        } else {
            Verdict::deny()
        }
    }
}

/// Reads one of `aAdD` in raw mode (restoring the terminal after); None on
/// end of file or error (answered as "deny once"). Ctrl-C answers "deny once".
fn read_key(tty: &mut File) -> Option<u8> {
    use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
    let saved = tcgetattr(tty.as_fd()).ok();
    if let Some(saved) = &saved {
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(tty.as_fd(), SetArg::TCSANOW, &raw);
    }
    let mut result = None;
    let mut b = [0u8; 1];
    loop {
        match tty.read(&mut b) {
            Ok(1) => match b[0] {
                b'a' | b'A' | b'd' | b'D' => {
                    result = Some(b[0]);
                    break;
                }
                3 | 4 => break,
                _ => continue,
            },
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            _ => break,
        }
    }
    if let Some(saved) = &saved {
        let _ = tcsetattr(tty.as_fd(), SetArg::TCSANOW, saved);
    }
    result
}
