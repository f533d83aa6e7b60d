//! The hook for 32-bit (ia32) system calls (bpf/compat.h), attached only
//! while it can matter. It sits on the raw `sys_exit` tracepoint, so once
//! attached it runs at the exit of every system call of every process on
//! the host (~60 ns each here, docs/BENCHMARKS.md), for the rare 32-bit
//! program. So it is loaded (and verified) at start but attached only when
//! a 32-bit program runs: one that already runs at start (found here), or
//! one exec'd later, which the exec hook counts (`SF_CNT_COMPAT_EXECS`) and
//! wakes user space for at once.
//!
//! The window this leaves: between the first exec of a 32-bit program and
//! the attach (user space woken, one `bpf_link_create`; 12–18 ms, once
//! 92 ms, measured on a busy 2-core VM: docs/BENCHMARKS.md), that program's
//! accepts and UDP connects are not reported (its closes still are). A
//! 64-bit program that makes 32-bit system calls itself (`int $0x80`)
//! does not exec a 32-bit image and is not seen until a 32-bit program
//! runs. Persistent enforcement defers it too, and pins it once attached
//! (so it outlives the enforcer, as the 32-bit program may); an enforcer
//! that adopts pinned enforcement without it attaches it at once if the
//! exec hook counted a 32-bit exec meanwhile, and says that the 32-bit
//! accepts and UDP connects of the gap were not reported.

use std::io::Read;

/// Whether any process on the host runs a 32-bit x86 (EM_386) executable.
/// Processes whose executable cannot be read (kernel threads, gone) are
/// skipped.
pub(crate) fn any_ia32_process() -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .any(|e| is_ia32_elf(&e.path().join("exe")))
}

/// Whether `path` is an ELF file of class 32 for machine EM_386.
fn is_ia32_elf(path: &std::path::Path) -> bool {
    let mut header = [0u8; 20];
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    if f.read_exact(&mut header).is_err() {
        return false;
    }
    const ELFCLASS32: u8 = 1;
    const EM_386: u16 = 3;
    header[..4] == *b"\x7fELF"
        && header[4] == ELFCLASS32
        && u16::from_le_bytes([header[18], header[19]]) == EM_386
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_is_not_ia32() {
        assert!(!is_ia32_elf(std::path::Path::new("/proc/self/exe")));
        assert!(!is_ia32_elf(std::path::Path::new("/nonexistent")));
    }
}
