//! Naming an event's ancestry: the parent's executable and the owner's
//! command line, from the exec ids the kernel puts in each record (see
//! `struct sf_exe` and `struct sf_exec` in bpf/sockfilter.h).
//!
//! An exec id names one exec (kept by the forks that run the same image).
//! The kernel writes one record per exec, with its executable and
//! arguments, to the `execs` ring buffer; they are read into a bounded
//! table here, so events carry integers only, no event costs a /proc read,
//! and an exec is named even after its process is gone. An exec the table
//! does not hold (older than sockfilter, its record lost or forgotten) is
//! asked of the kernel's per-process record, and for its arguments of
//! /proc, once, while its process still runs it.

use crate::abi::{SfEvent, SfExec, ARGS_LEN, EXE_LEN};
use crate::loader::{LoadError, Probe};
use aya::maps::{MapData, RingBuf};
use sockfilter_model::event::{Event, EventKind};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use tokio::io::unix::AsyncFd;

/// Execs remembered at most; the oldest are forgotten first (counted).
pub const MAX_EXECS: usize = 8192;

/// What is known of one exec.
#[derive(Debug, Clone, Default)]
struct Exec {
    exe: Option<Arc<str>>,
    cmdline: Option<Arc<[String]>>,
    /// The command line was looked for (a record has one, or /proc was
    /// asked): not to be asked again.
    cmdline_known: bool,
}

/// The exec table and the ring buffer that fills it.
pub struct Ancestry {
    execs: HashMap<u64, Exec>,
    /// Insertion order, for forgetting the oldest.
    order: VecDeque<u64>,
    evicted: u64,
    ring: Option<AsyncFd<RingBuf<MapData>>>,
}

impl Ancestry {
    /// A table fed by the `execs` ring buffer of `probe`. Must be called
    /// inside a tokio runtime.
    pub fn new(probe: &mut Probe) -> Result<Self, LoadError> {
        let ring = probe
            .take_execs()
            .ok_or_else(|| LoadError::Object("ring buffer map `execs` missing".into()))?;
        // SAFETY: as for the events ring in watch.rs: the RingBuf owns its
        // map's fd for as long as the AsyncFd lives.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| LoadError::Object(format!("polling the exec ring buffer: {e}")))?;
        Ok(Ancestry {
            execs: HashMap::new(),
            order: VecDeque::new(),
            evicted: 0,
            ring: Some(ring),
        })
    }

    /// Execs forgotten because the table was full. An event naming one of
    /// them is named again from the kernel's record while its process
    /// runs that exec; after that its parent_exe or cmdline is null.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Waits until the kernel asks to be read (its buffer is half full).
    pub async fn readable(&mut self) {
        match &mut self.ring {
            Some(r) => {
                if let Ok(mut g) = r.readable_mut().await {
                    g.clear_ready();
                }
            }
            None => std::future::pending().await,
        }
    }

    /// Reads every exec record waiting; returns how many.
    pub fn drain(&mut self) -> usize {
        let Some(ring) = self.ring.as_mut() else {
            return 0;
        };
        let mut records = Vec::new();
        let ring = ring.get_mut();
        while let Some(rec) = ring.next() {
            if let Some(x) = SfExec::from_bytes(&rec) {
                records.push(x);
            }
        }
        let n = records.len();
        for x in records {
            self.insert(x.exec_id, exec_of_record(&x));
        }
        n
    }

    /// Fills the owner's `parent_exe`, and on a `listen` its `cmdline`,
    /// from the record's exec ids.
    pub fn fill(&mut self, e: &mut Event, raw: &SfEvent, probe: &Probe) {
        let Some(owner) = e.owner.as_mut() else {
            return;
        };
        if raw.ppid != 0 && raw.parent_exec_id != 0 {
            owner.parent_exe = self
                .exec(raw.parent_exec_id, raw.ppid, probe)
                .and_then(|x| x.exe.clone());
        }
        if e.kind == EventKind::Listen && raw.exec_id != 0 {
            owner.cmdline = self.cmdline(raw.exec_id, raw.pid, probe);
        }
    }

    /// Exec `id`, run by `pid` when the event was written: from the table,
    /// after reading the records not read yet, or else from the kernel's
    /// record of `pid` if it still names that exec.
    fn exec(&mut self, id: u64, pid: u32, probe: &Probe) -> Option<&mut Exec> {
        if !self.execs.contains_key(&id) {
            self.drain();
        }
        if !self.execs.contains_key(&id) {
            let Some(rec) = probe.exe_record(pid).filter(|r| r.exec_id == id) else {
                // Gone, or exec'd again since: unknown for good (exec ids
                // are never reused, and its record was read above had it
                // been sent), remembered as such so that later events
                // naming it cost no system call.
                self.insert(
                    id,
                    Exec {
                        cmdline_known: true,
                        ..Default::default()
                    },
                );
                return None;
            };
            let exe = crate::loader::exe_string(&rec).or_else(|| {
                // Too long for the kernel's buffer; the process runs it.
                (rec.truncated != 0)
                    .then(|| crate::procfs::exe(pid))
                    .flatten()
            });
            self.insert(
                id,
                Exec {
                    exe: exe.map(Into::into),
                    ..Default::default()
                },
            );
        }
        self.execs.get_mut(&id)
    }

    fn cmdline(&mut self, id: u64, pid: u32, probe: &Probe) -> Option<Arc<[String]>> {
        let x = self.exec(id, pid, probe)?;
        if !x.cmdline_known {
            // No record (older than sockfilter, or lost): exec() just
            // checked that `pid` still runs this exec.
            x.cmdline = crate::procfs::cmdline(pid).map(Into::into);
            x.cmdline_known = true;
        }
        x.cmdline.clone()
    }

    fn insert(&mut self, id: u64, x: Exec) {
        if self.execs.len() >= MAX_EXECS && !self.execs.contains_key(&id) {
            if let Some(old) = self.order.pop_front() {
                self.execs.remove(&old);
                self.evicted += 1;
            }
        }
        if self.execs.insert(id, x).is_none() {
            self.order.push_back(id);
        }
    }
}

fn exec_of_record(x: &SfExec) -> Exec {
    let exe_len = (x.exe_len as usize).min(EXE_LEN);
    let args_len = (x.args_len as usize).min(ARGS_LEN);
    Exec {
        exe: (exe_len > 0).then(|| String::from_utf8_lossy(&x.exe[..exe_len]).into()),
        cmdline: crate::procfs::split_args(&x.args[..args_len]).map(Into::into),
        cmdline_known: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> Ancestry {
        Ancestry {
            execs: HashMap::new(),
            order: VecDeque::new(),
            evicted: 0,
            ring: None,
        }
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_oldest_counting_them() {
        let mut a = empty();
        for id in 1..=MAX_EXECS as u64 + 2 {
            a.insert(id, Exec::default());
        }
        assert_eq!(a.execs.len(), MAX_EXECS);
        assert_eq!(a.evicted(), 2);
        assert!(!a.execs.contains_key(&1) && !a.execs.contains_key(&2));
        assert!(a.execs.contains_key(&3));
        // Naming an exec again is not a new entry.
        a.insert(3, Exec::default());
        assert_eq!((a.execs.len(), a.evicted()), (MAX_EXECS, 2));
    }

    #[test]
    fn a_record_gives_the_exe_and_the_arguments_exactly() {
        // SAFETY: plain data; all-zero is valid.
        let mut r: SfExec = unsafe { std::mem::zeroed() };
        r.exe[..7].copy_from_slice(b"/bin/nc");
        r.exe_len = 7;
        let args = b"nc\0-l\0\x1b[2J\n\0";
        r.args[..args.len()].copy_from_slice(args);
        r.args_len = args.len() as u32;
        let x = exec_of_record(&r);
        assert_eq!(x.exe.as_deref(), Some("/bin/nc"));
        assert_eq!(
            x.cmdline.as_deref(),
            Some(&["nc".to_string(), "-l".into(), "\x1b[2J\n".into()][..])
        );
        // Lengths beyond the buffers never panic.
        r.exe_len = u32::MAX;
        r.args_len = u32::MAX;
        let _ = exec_of_record(&r);
        r.exe_len = 0;
        r.args_len = 0;
        let x = exec_of_record(&r);
        assert_eq!((x.exe, x.cmdline), (None, None));
    }
}
