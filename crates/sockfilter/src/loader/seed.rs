//! The processes that run before sockfilter: their executables recorded in
//! the kernel's process map at start, as exec would have.

use crate::abi::{SfExe, EXE_LEN, SEEDED_EXEC_ID};
use aya::maps::{HashMap as BpfHashMap, MapData};
use aya::Ebpf;
use std::collections::HashMap;

/// Fills `exe_by_pid` for processes that were running before sockfilter,
/// with their parents. Their exec ids are [`SEEDED_EXEC_ID`] | pid: unique
/// among them, and never one the kernel gives.
pub(super) fn seed_executables(bpf: &mut Ebpf) {
    let Some(map) = bpf.map_mut("exe_by_pid") else {
        return;
    };
    let Ok(mut m) = BpfHashMap::<&mut MapData, u32, SfExe>::try_from(map) else {
        return;
    };
    let records: HashMap<u32, SfExe> = crate::procfs::pids()
        .into_iter()
        .filter_map(|pid| Some((pid, seed_record(pid)?)))
        .collect();
    for (&pid, x) in &records {
        let mut x = *x;
        if records.contains_key(&x.ppid) {
            x.parent_exec_id = SEEDED_EXEC_ID | u64::from(x.ppid);
        }
        // BPF_NOEXIST: an exec seen by the kernel since attach is newer.
        let _ = m.insert(pid, x, 1 /* BPF_NOEXIST */);
    }
}

/// A process's record as /proc shows it (parent_exec_id not yet known).
fn seed_record(pid: u32) -> Option<SfExe> {
    let path = crate::procfs::exe(pid)?;
    let bytes = path.as_bytes();
    // The file itself, through the /proc link (whatever path led to it).
    let (dev, ino) = crate::enforce::file_identity(&format!("/proc/{pid}/exe"))?;
    let mut x = SfExe {
        len: 0,
        truncated: 0,
        ino,
        dev,
        ppid: crate::procfs::ppid(pid).unwrap_or(0),
        exec_id: SEEDED_EXEC_ID | u64::from(pid),
        parent_exec_id: 0,
        path: [0; EXE_LEN],
    };
    // The kernel keeps at most EXE_LEN - 1 bytes (resolve_path).
    if bytes.len() >= EXE_LEN {
        x.truncated = 1;
    } else {
        x.len = bytes.len() as u32;
        x.path[..bytes.len()].copy_from_slice(bytes);
    }
    Some(x)
}
