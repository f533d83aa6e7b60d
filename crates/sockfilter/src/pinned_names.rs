//! The rule names of the policy in each slot, kept in bpffs next to the
//! pinned enforcement ([`crate::pinned`]), so that an enforcer that adopts a
//! dead one's state names the rules that decided the events the dead one
//! left in the ring buffer (instead of `rule: null`). No BPF program reads
//! them: they are a map of two entries (one per policy slot) that user space
//! creates and pins as `maps/rule_names`.
//!
//! An entry is the number of names (4 bytes, little-endian), then the
//! slot's names in order, each as a 2-byte little-endian length and its
//! bytes; what does not fit in 512 KiB is left out (those rules are
//! then unnamed after a crash).

use crate::bpf_syscall::{map_create, map_lookup_elem, map_update_elem, obj_get, obj_pin};
use aya_obj::generated::bpf_map_type;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// Bytes per slot.
const BLOB: usize = 512 << 10;

/// The map pinned at `path`, created and pinned there if there is none:
/// an array of two (policy slots) blobs of [`BLOB`] bytes.
fn open_or_create(path: &Path) -> io::Result<OwnedFd> {
    if let Ok(fd) = obj_get(path) {
        return Ok(fd);
    }
    let fd = map_create(
        bpf_map_type::BPF_MAP_TYPE_ARRAY,
        std::mem::size_of::<u32>() as u32,
        BLOB as u32,
        2,
    )?;
    obj_pin(fd.as_fd(), path)?;
    Ok(fd)
}

fn encode(names: &[String]) -> Vec<u8> {
    let mut blob = vec![0u8; 4];
    let mut count = 0u32;
    for name in names {
        let bytes = &name.as_bytes()[..name.len().min(usize::from(u16::MAX))];
        if blob.len() + 2 + bytes.len() > BLOB {
            break;
        }
        blob.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        blob.extend_from_slice(bytes);
        count += 1;
    }
    blob[..4].copy_from_slice(&count.to_le_bytes());
    blob.resize(BLOB, 0);
    blob
}

fn decode(blob: &[u8]) -> Vec<String> {
    let Some(count) = blob.get(..4) else {
        return Vec::new();
    };
    let count = u32::from_le_bytes([count[0], count[1], count[2], count[3]]);
    let mut names = Vec::new();
    let mut at = 4;
    for _ in 0..count {
        let Some(len) = blob.get(at..at + 2) else {
            break;
        };
        let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
        let Some(bytes) = blob.get(at + 2..at + 2 + len) else {
            break;
        };
        names.push(String::from_utf8_lossy(bytes).into_owned());
        at += 2 + len;
    }
    names
}

/// Writes the names of both slots to the map pinned at `path` (created if
/// needed).
pub fn save(path: &Path, slots: &[Vec<String>; 2]) -> io::Result<()> {
    let fd = open_or_create(path)?;
    for (slot, names) in slots.iter().enumerate() {
        let blob = encode(names);
        // SAFETY: the key is a u32 and the blob BLOB bytes, the sizes
        // open_or_create gives the map: only sockfilter pins in its scope's
        // directory, which it clears of another build's state first.
        unsafe { map_update_elem(fd.as_fd(), &(slot as u32).to_ne_bytes(), &blob) }?;
    }
    Ok(())
}

/// The names of both slots as saved at `path`; None when nothing is.
pub fn load(path: &Path) -> Option<[Vec<String>; 2]> {
    let fd = obj_get(path).ok()?;
    let mut out: [Vec<String>; 2] = Default::default();
    for (slot, names) in out.iter_mut().enumerate() {
        let mut blob = vec![0u8; BLOB];
        // SAFETY: as in save: the map's key and value sizes.
        unsafe { map_lookup_elem(fd.as_fd(), &(slot as u32).to_ne_bytes(), &mut blob) }.ok()?;
        *names = decode(&blob);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_survive_encoding_in_order_and_an_empty_slot_is_empty() {
        let names = vec!["ssh-in".to_string(), String::new(), "ünïcode\n".to_string()];
        assert_eq!(decode(&encode(&names)), names);
        assert!(decode(&encode(&[])).is_empty());
        assert!(decode(&[0u8; 16]).is_empty(), "a slot never written");
        assert!(decode(&[9, 0, 0, 0, 1]).is_empty(), "cut short");
    }

    #[test]
    fn what_does_not_fit_is_left_out() {
        let long = "x".repeat(60_000);
        let names: Vec<String> = (0..40).map(|_| long.clone()).collect();
        let back = decode(&encode(&names));
        assert!(!back.is_empty() && back.len() < 40);
        assert!(back.iter().all(|n| n == &long));
    }
}
