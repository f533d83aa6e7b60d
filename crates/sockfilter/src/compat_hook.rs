//! When the hook for 32-bit (ia32) system calls (bpf/compat.h) is
//! attached. It sits on the raw `sys_exit` tracepoint, so once attached it
//! runs at the exit of every system call of every process on the host
//! (~60 ns each here, docs/BENCHMARKS.md). It is attached at start wherever
//! the kernel runs 32-bit system calls at all: any 64-bit program can make
//! them with `int $0x80` without exec'ing anything 32-bit, so waiting for a
//! 32-bit exec (as sockfilter did before) let an unprivileged program
//! accept unreported. Only where the kernel has no ia32 entry, or ia32
//! emulation is switched off at boot (`ia32_emulation=0`, Linux 6.7+), is
//! it left unattached: there no process can make such calls, and a host
//! that wants to save the cost can switch them off so.
//!
//! As a second line, a 32-bit exec seen while it is unattached (counted by
//! the exec hook, `SF_CNT_COMPAT_EXECS`) still attaches it at once; an
//! enforcer that adopts pinned enforcement without it does the same and
//! says that the gap's 32-bit accepts and UDP connects were not reported.

use std::io::Read;

/// Whether the hook must be attached at start: the kernel can run 32-bit
/// system calls, or a 32-bit program already runs.
pub(crate) fn needed_at_start() -> bool {
    ia32_calls_possible() || any_ia32_process()
}

/// Whether this kernel runs 32-bit system calls: it has the ia32 entry
/// (`ia32_sys_call` in /proc/kallsyms) and the boot command line does not
/// switch ia32 emulation off. When either file cannot be read the answer
/// is yes (the hook costs time, its absence costs reports). A kernel built
/// to start with it off (`IA32_EMULATION_DEFAULT_DISABLED`) and not told
/// otherwise is taken as on.
fn ia32_calls_possible() -> bool {
    if !cfg!(target_arch = "x86_64") {
        return false;
    }
    if let Ok(cmdline) = std::fs::read_to_string("/proc/cmdline") {
        if ia32_switched_off(&cmdline) {
            return false;
        }
    }
    use std::io::BufRead;
    match std::fs::File::open("/proc/kallsyms") {
        // Read line by line: the file is ~10 MB, the symbol near its start.
        Ok(f) => std::io::BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .any(|l| {
                l.rsplit(' ')
                    .next()
                    .is_some_and(|name| name == "ia32_sys_call" || name == "__ia32_sys_accept4")
            }),
        Err(_) => true,
    }
}

/// Whether a kernel command line turns ia32 emulation off (the last
/// `ia32_emulation=` wins, as the kernel parses it; kernel arguments end
/// at `--`).
fn ia32_switched_off(cmdline: &str) -> bool {
    cmdline
        .split_whitespace()
        .take_while(|w| *w != "--")
        .filter_map(|w| w.strip_prefix("ia32_emulation="))
        .last()
        .is_some_and(|v| matches!(v, "0" | "n" | "N" | "no" | "off" | "false"))
}

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

    #[test]
    fn the_boot_parameter_switches_ia32_emulation_off() {
        assert!(ia32_switched_off("quiet ia32_emulation=0"));
        assert!(ia32_switched_off("ia32_emulation=false root=/dev/sda"));
        assert!(!ia32_switched_off("ia32_emulation=0 ia32_emulation=1"));
        assert!(!ia32_switched_off("quiet"));
        assert!(!ia32_switched_off("quiet -- ia32_emulation=0"));
    }
}
