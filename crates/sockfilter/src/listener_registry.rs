//! Who called `listen()`, as enforce's kernel listener registry knows it.
//!
//! While `sockfilter enforce` runs (and after it died: its programs keep
//! running through their pins), the kernel registers every TCP listener at
//! `listen()` with the process that called it (`bpf/listeners.h`), in the
//! map `listeners` that enforce pins under `/sys/fs/bpf/sockfilter/SCOPE/`
//! ([`crate::pinned`]). No other record of that caller exists: once a
//! server forks, the descriptor table says only who holds the socket. So
//! `sockfilter listeners` reads the pinned registries to name the caller.

use crate::abi::{SfListenKey, SfListener};
use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use std::collections::HashMap;
use std::path::Path;

/// The process that called `listen()` on one TCP listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenCaller {
    /// Its thread-group id.
    pub pid: u32,
    /// Its real uid.
    pub uid: u32,
    /// Its command name at the call.
    pub comm: String,
}

/// Every TCP listener in the pinned registries of every enforce scope, by
/// socket cookie, whose caller the kernel saw calling `listen()`.
///
/// Entries that enforce wrote itself at start for listeners older than it
/// (whose caller it could not know: it took the lowest pid holding them)
/// are left out. No pinned registry (no enforce ran) gives an empty map;
/// `Err` only when bpffs has registries that cannot be read (not root).
pub fn listen_callers() -> std::io::Result<HashMap<u64, ListenCaller>> {
    let mut callers = HashMap::new();
    let Ok(scopes) = std::fs::read_dir(crate::pinned::ROOT) else {
        return Ok(callers);
    };
    for scope in scopes.flatten() {
        let path = scope.path().join("maps/listeners");
        if path.exists() {
            read_registry(&path, &mut callers)?;
        }
    }
    Ok(callers)
}

/// Adds the entries of the registry pinned at `path` to `callers`.
fn read_registry(path: &Path, callers: &mut HashMap<u64, ListenCaller>) -> std::io::Result<()> {
    let failed = |e: &dyn std::fmt::Display| {
        std::io::Error::other(format!("reading {}: {e}", path.display()))
    };
    let data = MapData::from_pin(path).map_err(|e| failed(&e))?;
    let map = Map::from_map_data(data).map_err(|e| failed(&e))?;
    let registry =
        BpfHashMap::<MapData, SfListenKey, SfListener>::try_from(map).map_err(|e| failed(&e))?;
    for entry in registry.iter() {
        // An entry removed while walking ends the walk early at worst.
        let Ok((_, l)) = entry else { break };
        if l.from_snapshot != 0 {
            continue;
        }
        let comm_len = l
            .owner
            .comm
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(l.owner.comm.len());
        callers.insert(
            l.cookie,
            ListenCaller {
                pid: l.owner.pid,
                uid: l.owner.uid,
                comm: String::from_utf8_lossy(&l.owner.comm[..comm_len]).into_owned(),
            },
        );
    }
    Ok(())
}
