//! The bpf(2) system call, for what sockfilter asks of the kernel without
//! aya: the probes' and the namespace tag's program loads
//! ([`crate::features`], [`crate::netns_tag`]), and the pins of enforcement
//! that outlives its enforcer ([`crate::pinned`], [`crate::pinned_names`]).
//! aya does these only for objects it loaded itself, or not publicly.
//!
//! Every call takes aya's `bpf_attr` binding, zeroed and then filled through
//! the union member of its command, so that no offset is computed by hand:
//! the kernel rejects non-zero bytes it does not know, which the zeroing
//! rules out.

use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_link_info, bpf_map_type};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A `bpf_attr` with every field zero, the kernel's "unused" for each.
pub(crate) fn zeroed_attr() -> bpf_attr {
    // SAFETY: bpf_attr is a union of plain integers and arrays of them, for
    // which all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

/// The bpf(2) system call: command `cmd` on `attr`; the kernel's
/// non-negative return value, or the error it set.
///
/// # Safety
///
/// Every pointer the member of `attr` for `cmd` holds (paths, buffers,
/// instructions, keys, values) must be valid, for the length given beside
/// it or the one the kernel implies, while the call runs: the kernel reads
/// or writes through them.
pub(crate) unsafe fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<libc::c_long> {
    // SAFETY: attr is a whole bpf_attr, its pointers valid as the caller
    // promised; the size tells the kernel how much of it to read.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// [`bpf`] for a command that returns a new file descriptor, owned by the
/// caller from then on.
///
/// # Safety
///
/// As for [`bpf`]; and `cmd` must be a command whose success value is a new
/// descriptor (`BPF_PROG_LOAD`, `BPF_MAP_CREATE`, `BPF_OBJ_GET`,
/// `BPF_LINK_CREATE`, `BPF_RAW_TRACEPOINT_OPEN`, `BPF_ITER_CREATE`, ...).
pub(crate) unsafe fn bpf_fd(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<OwnedFd> {
    // SAFETY: passed on from the caller.
    let fd = unsafe { bpf(cmd, attr) }?;
    // SAFETY: the caller promised cmd returns a new descriptor, which no one
    // else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `path` as the NUL-terminated string bpf(2) takes.
fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)
}

/// Opens the object pinned at `path` (`BPF_OBJ_GET`).
pub(crate) fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let path = c_path(path)?;
    let mut attr = zeroed_attr();
    // SAFETY: writing the BPF_OBJ_GET member of the union; path outlives the
    // call, which returns a new descriptor.
    unsafe {
        attr.__bindgen_anon_4.pathname = path.as_ptr() as u64;
        bpf_fd(bpf_cmd::BPF_OBJ_GET, &mut attr)
    }
}

/// Pins the program, map or link `fd` at `path` in bpffs (`BPF_OBJ_PIN`).
pub(crate) fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let path = c_path(path)?;
    let mut attr = zeroed_attr();
    // SAFETY: writing the BPF_OBJ_PIN member of the union; path outlives the
    // call.
    unsafe {
        let u = &mut attr.__bindgen_anon_4;
        u.pathname = path.as_ptr() as u64;
        u.bpf_fd = fd.as_raw_fd() as u32;
        bpf(bpf_cmd::BPF_OBJ_PIN, &mut attr).map(drop)
    }
}

/// Detaches link `fd` from its hook (`BPF_LINK_DETACH`), for every process
/// that holds it, pinned or not. Tracing links cannot be: the kernel
/// refuses (`EOPNOTSUPP`).
pub(crate) fn link_detach(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = zeroed_attr();
    attr.link_detach.link_fd = fd.as_raw_fd() as u32;
    // SAFETY: BPF_LINK_DETACH takes only the descriptor, no pointer.
    unsafe { bpf(bpf_cmd::BPF_LINK_DETACH, &mut attr) }.map(drop)
}

/// What the kernel says of link `fd` (`BPF_OBJ_GET_INFO_BY_FD`). For a
/// descriptor of another kind the kernel fills in that kind's info instead.
pub(crate) fn link_info(fd: BorrowedFd<'_>) -> io::Result<bpf_link_info> {
    // SAFETY: bpf_link_info is plain integers and unions of them, for which
    // all-zero bytes are a valid value.
    let mut info: bpf_link_info = unsafe { std::mem::zeroed() };
    let mut attr = zeroed_attr();
    // SAFETY: writing the BPF_OBJ_GET_INFO_BY_FD member of the union; info,
    // of the size given, outlives the call, and the kernel writes at most
    // that many bytes of it.
    unsafe {
        let u = &mut attr.info;
        u.bpf_fd = fd.as_raw_fd() as u32;
        u.info_len = std::mem::size_of::<bpf_link_info>() as u32;
        u.info = &mut info as *mut bpf_link_info as u64;
        bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    }
    Ok(info)
}

/// The network namespace (inode) that netns link `fd` (socket lookup) is
/// attached to, as the kernel says; 0 once the namespace died.
pub(crate) fn link_netns(fd: BorrowedFd<'_>) -> Option<u32> {
    let info = link_info(fd).ok()?;
    // SAFETY: reading the netns member of the union, all integers: for a
    // link of another kind it reads what that kind wrote, or zero.
    Some(unsafe { info.__bindgen_anon_1.netns.netns_ino })
}

/// Creates a map of `map_type`, with keys and values of these sizes
/// (`BPF_MAP_CREATE`).
pub(crate) fn map_create(
    map_type: bpf_map_type,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> io::Result<OwnedFd> {
    let mut attr = zeroed_attr();
    // SAFETY: writing the BPF_MAP_CREATE member of the union.
    let u = unsafe { &mut attr.__bindgen_anon_1 };
    u.map_type = map_type as u32;
    u.key_size = key_size;
    u.value_size = value_size;
    u.max_entries = max_entries;
    // SAFETY: no pointer set; BPF_MAP_CREATE returns a new descriptor.
    unsafe { bpf_fd(bpf_cmd::BPF_MAP_CREATE, &mut attr) }
}

/// Copies the value of `key` in map `map` into `value`
/// (`BPF_MAP_LOOKUP_ELEM`).
///
/// # Safety
///
/// `key` and `value` must be at least the map's key and value sizes: the
/// kernel reads and writes that many bytes through them.
pub(crate) unsafe fn map_lookup_elem(
    map: BorrowedFd<'_>,
    key: &[u8],
    value: &mut [u8],
) -> io::Result<()> {
    // SAFETY: passed on from the caller; value is writable.
    unsafe { map_elem(bpf_cmd::BPF_MAP_LOOKUP_ELEM, map, key, value.as_mut_ptr()) }
}

/// Sets the value of `key` in map `map` to `value`, whether or not it had
/// one (`BPF_MAP_UPDATE_ELEM`, `BPF_ANY`).
///
/// # Safety
///
/// `key` and `value` must be at least the map's key and value sizes: the
/// kernel reads that many bytes through them.
pub(crate) unsafe fn map_update_elem(
    map: BorrowedFd<'_>,
    key: &[u8],
    value: &[u8],
) -> io::Result<()> {
    // SAFETY: passed on from the caller; the kernel only reads value.
    unsafe {
        map_elem(
            bpf_cmd::BPF_MAP_UPDATE_ELEM,
            map,
            key,
            value.as_ptr().cast_mut(),
        )
    }
}

/// One `BPF_MAP_*_ELEM` command on `key` and the value at `value` (flags 0:
/// `BPF_ANY` for an update).
///
/// # Safety
///
/// `key` and the memory at `value` must be at least the map's key and value
/// sizes, and `value` writable for a lookup.
unsafe fn map_elem(
    cmd: bpf_cmd,
    map: BorrowedFd<'_>,
    key: &[u8],
    value: *mut u8,
) -> io::Result<()> {
    let mut attr = zeroed_attr();
    // SAFETY: writing the BPF_MAP_*_ELEM member of the union; key and value
    // are valid for the map's sizes, as the caller promised.
    unsafe {
        let u = &mut attr.__bindgen_anon_2;
        u.map_fd = map.as_raw_fd() as u32;
        u.key = key.as_ptr() as u64;
        u.__bindgen_anon_1.value = value as u64;
        bpf(cmd, &mut attr).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// The map commands' fields land where the kernel reads them: what is
    /// stored under one key is read back under it, and not under another.
    #[test]
    fn a_value_stored_in_a_map_is_read_back_under_its_key() {
        let map = map_create(bpf_map_type::BPF_MAP_TYPE_ARRAY, 4, 8, 2).unwrap();
        let stored = 0x0102_0304_0506_0708u64.to_ne_bytes();
        // SAFETY: keys of 4 bytes, values of 8: the map's sizes.
        unsafe { map_update_elem(map.as_fd(), &1u32.to_ne_bytes(), &stored) }.unwrap();
        let (mut one, mut zero) = ([0u8; 8], [0xffu8; 8]);
        // SAFETY: as above.
        unsafe {
            map_lookup_elem(map.as_fd(), &1u32.to_ne_bytes(), &mut one).unwrap();
            map_lookup_elem(map.as_fd(), &0u32.to_ne_bytes(), &mut zero).unwrap();
        }
        assert_eq!(one, stored);
        assert_eq!(zero, [0; 8]);
        // SAFETY: as above.
        let beyond = unsafe { map_lookup_elem(map.as_fd(), &2u32.to_ne_bytes(), &mut one) };
        assert_eq!(beyond.unwrap_err().raw_os_error(), Some(libc::ENOENT));
    }
}
