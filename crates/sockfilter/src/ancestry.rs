//! Naming an event's ancestry: the parent's executable and the owner's
//! command line, from the exec ids the kernel puts in each record (see
//! `struct sf_exe` in bpf/sockfilter.h).
//!
//! An exec id names one exec (kept by the forks that run the same image),
//! so what is learnt about it once holds for every later event that names
//! it: the table below is filled once per exec, not once per event, and no
//! event costs a /proc read.

use crate::abi::SfEvent;
use crate::loader::Probe;
use sockfilter_model::event::Event;
use std::collections::{HashMap, VecDeque};

/// Execs remembered at most; the oldest are forgotten first (counted).
pub const MAX_EXECS: usize = 16384;

/// What is known of one exec.
#[derive(Debug, Clone, Default)]
struct Exec {
    exe: Option<String>,
}

/// The exec table, and where its entries come from.
#[derive(Debug, Default)]
pub struct Ancestry {
    execs: HashMap<u64, Exec>,
    /// Insertion order, for forgetting the oldest.
    order: VecDeque<u64>,
    evicted: u64,
}

impl Ancestry {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Execs forgotten because the table was full. An event naming one of
    /// them is named again from the kernel's record while its process
    /// lives; after that its parent_exe is null.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Fills the owner's `parent_exe` from the record's parent exec id.
    pub fn fill(&mut self, e: &mut Event, raw: &SfEvent, probe: &Probe) {
        let Some(owner) = e.owner.as_mut() else {
            return;
        };
        if raw.ppid != 0 && raw.parent_exec_id != 0 {
            owner.parent_exe = self.exe(raw.parent_exec_id, raw.ppid, probe);
        }
    }

    /// The executable of exec `id`, run by process `pid` when the event
    /// was written. Asked of the kernel once per exec: the record of `pid`
    /// names it only while it still runs that exec.
    fn exe(&mut self, id: u64, pid: u32, probe: &Probe) -> Option<String> {
        if let Some(x) = self.execs.get(&id) {
            return x.exe.clone();
        }
        let rec = probe.exe_record(pid)?;
        if rec.exec_id != id {
            return None; // gone, or exec'd again since: unknown
        }
        let exe = crate::loader::exe_string(&rec).or_else(|| {
            // Too long for the kernel's buffer; the process still runs it.
            (rec.truncated != 0)
                .then(|| crate::procfs::exe(pid))
                .flatten()
        });
        self.insert(id, Exec { exe: exe.clone() });
        exe
    }

    fn insert(&mut self, id: u64, x: Exec) {
        if self.execs.len() >= MAX_EXECS {
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
