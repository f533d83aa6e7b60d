//! Enforcement that outlives the enforcer. `sockfilter enforce` pins its
//! programs, links and maps in bpffs, so that if it dies without cleaning
//! up (SIGKILL, panic, OOM kill) the kernel keeps enforcing the last policy;
//! the next `sockfilter enforce` for the same scope adopts what is pinned
//! and switches policy slots, with no moment unenforced. A clean stop
//! (SIGINT, SIGTERM) removes it all; `sockfilter unload` removes what a
//! dead enforcer left.
//!
//! Layout, one directory per scope (`host`, or `cgroup-ID` for `--cgroup`):
//!
//! ```text
//! /sys/fs/bpf/sockfilter/SCOPE/maps/NAME       every map of the object
//! /sys/fs/bpf/sockfilter/SCOPE/maps/rule_names the policies' rule names (crate::pinned_names)
//! /sys/fs/bpf/sockfilter/SCOPE/progs/NAME      every loaded program
//! /sys/fs/bpf/sockfilter/SCOPE/links/NAME      cgroup and tracepoint links
//! /sys/fs/bpf/sockfilter/SCOPE/links/netns_tag-INO-COOKIE  per network namespace:
//! /sys/fs/bpf/sockfilter/SCOPE/links/sk_lookup-INO-COOKIE  socket lookup's two links
//! /sys/fs/bpf/sockfilter/SCOPE/complete-HASH   made last: the state is whole,
//!                                              and of the object with this hash
//! ```
//!
//! A running enforcer holds an exclusive `flock` on its scope directory;
//! the kernel drops it when the process dies however it dies, which is how
//! `unload` and a new enforce tell a live enforcer from a dead one's
//! leftovers. Scope directories are created and removed under a lock on
//! `/sys/fs/bpf/sockfilter` itself.

use crate::bpf_syscall::{link_detach, obj_get, obj_pin};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Where bpffs is mounted (mounted there if it is not).
pub const BPFFS: &str = "/sys/fs/bpf";
/// The directory of every scope's pins.
pub const ROOT: &str = "/sys/fs/bpf/sockfilter";
/// Pin names of socket lookup's links in a namespace: `PREFIX` INO-COOKIE.
const TAG_LINK: &str = "netns_tag-";
const MAIN_LINK: &str = "sk_lookup-";

/// What a scope directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Nothing: start afresh.
    Empty,
    /// The whole state of an enforcer built with the same BPF object.
    Complete,
    /// The whole state of an enforcer built with another BPF object
    /// (another version of sockfilter): its hash.
    Foreign(String),
    /// Pins of an enforcer that died while starting.
    Partial,
}

/// The pin directory of one scope, locked by this process.
#[derive(Debug)]
pub struct PinnedScope {
    dir: PathBuf,
    _lock: File,
}

/// The name of a scope: `host`, or `cgroup-ID` for a cgroup subtree.
pub fn scope_name(cgroup: Option<&Path>) -> io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    match cgroup {
        None => Ok("host".to_string()),
        Some(dir) => Ok(format!("cgroup-{}", std::fs::metadata(dir)?.ino())),
    }
}

/// A short hash of the BPF object, so that only the same object is adopted.
pub fn object_hash(object: &[u8]) -> String {
    // FNV-1a: stable across builds and platforms, no dependency.
    let h = object.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{h:016x}")
}

impl PinnedScope {
    /// Mounts bpffs if needed, creates the scope's directory and locks it.
    /// Fails if a running enforcer holds it.
    pub fn lock(scope: &str) -> io::Result<PinnedScope> {
        ensure_bpffs()?;
        let root = Path::new(ROOT);
        std::fs::create_dir_all(root)?;
        let root_lock = File::open(root)?;
        flock(&root_lock, libc::LOCK_EX)?;
        let dir = root.join(scope);
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        let lock = File::open(&dir)?;
        if let Err(e) = flock(&lock, libc::LOCK_EX | libc::LOCK_NB) {
            return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                io::Error::other(format!(
                    "another sockfilter enforce is running for this scope ({} is locked); stop it first",
                    dir.display()
                ))
            } else {
                e
            });
        }
        make_subdirs(&dir)?;
        Ok(PinnedScope { dir, _lock: lock })
    }

    /// The scope's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the directory holds, compared with the object `hash`.
    pub fn state(&self, hash: &str) -> State {
        let mut complete = None;
        let mut any = false;
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(h) = name.strip_prefix("complete-") {
                complete = Some(h.to_string());
            }
        }
        for sub in ["maps", "progs", "links"] {
            any |= std::fs::read_dir(self.dir.join(sub))
                .map(|mut d| d.next().is_some())
                .unwrap_or(false);
        }
        match complete {
            Some(h) if h == hash => State::Complete,
            Some(h) => State::Foreign(h),
            None if any => State::Partial,
            None => State::Empty,
        }
    }

    /// Where map `name` is pinned.
    pub fn map_path(&self, name: &str) -> PathBuf {
        self.dir.join("maps").join(name)
    }

    /// Where program `name` is pinned.
    pub fn program_path(&self, name: &str) -> PathBuf {
        self.dir.join("progs").join(name)
    }

    /// Where the link of program `name` is pinned.
    pub fn link_path(&self, name: &str) -> PathBuf {
        self.dir.join("links").join(name)
    }

    /// Names of the pinned maps (or programs: `progs`).
    pub fn names(&self, sub: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.join(sub))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Pins socket lookup's two links in one network namespace: the tag
    /// program's (attached first, [`crate::netns_tag`]) and `sf_sk_lookup`'s.
    /// Named by the namespace's inode and cookie: the cookie is never
    /// reused while the system runs (an inode is), and an adopting enforcer
    /// needs it.
    pub fn pin_sk_lookup(
        &self,
        main: aya::programs::links::FdLink,
        tag: &OwnedFd,
        ino: u64,
        cookie: u64,
    ) -> io::Result<aya::programs::links::FdLink> {
        obj_pin(
            tag.as_fd(),
            &self.link_path(&format!("{TAG_LINK}{ino}-{cookie}")),
        )?;
        main.pin(self.link_path(&format!("{MAIN_LINK}{ino}-{cookie}")))
            .map(aya::programs::links::FdLink::from)
            .map_err(io::Error::other)
    }

    /// Unpins socket lookup's links in a namespace that died (the kernel
    /// detached them already): once no descriptor holds them either, the
    /// kernel frees them and the namespace's tag program.
    pub fn unpin_sk_lookup(&self, ino: u64, cookie: u64) {
        for prefix in [TAG_LINK, MAIN_LINK] {
            let _ = std::fs::remove_file(self.link_path(&format!("{prefix}{ino}-{cookie}")));
        }
    }

    /// The network namespaces that pinned socket-lookup links are attached
    /// to; the links of namespaces that are gone are unpinned.
    pub fn sk_lookup_namespaces(&self) -> Vec<crate::netns_tag::NetnsAttachment> {
        let mut out = Vec::new();
        for name in self.names("links") {
            let Some((ino, cookie)) = name
                .strip_prefix(TAG_LINK)
                .and_then(|rest| rest.split_once('-'))
                .and_then(|(i, c)| Some((i.parse::<u64>().ok()?, c.parse::<u64>().ok()?)))
            else {
                continue;
            };
            let path = self.link_path(&name);
            let live = obj_get(&path)
                .ok()
                .map(|fd| crate::netns_tag::NetnsAttachment::new(ino, cookie, fd, None))
                .filter(|a| a.is_live());
            match live {
                Some(a) => out.push(a),
                None => {
                    let _ = std::fs::remove_file(&path);
                    let _ =
                        std::fs::remove_file(self.link_path(&format!("{MAIN_LINK}{ino}-{cookie}")));
                }
            }
        }
        out
    }

    /// Marks the state whole, of the object with `hash`.
    pub fn mark_complete(&self, hash: &str) -> io::Result<()> {
        std::fs::create_dir(self.dir.join(format!("complete-{hash}")))
    }

    /// Removes everything pinned in the scope, detaching every link at
    /// once (also one some other process still holds open).
    pub fn clear(&self) -> Removed {
        remove_scope_contents(&self.dir)
    }

    /// Removes everything pinned in the scope, as [`PinnedScope::clear`],
    /// and makes its directories again, for another state.
    pub fn clear_for_another(&self) -> io::Result<Removed> {
        let removed = self.clear();
        make_subdirs(&self.dir)?;
        Ok(removed)
    }

    /// Removes everything and the directory: enforcement ends when this
    /// process closes its own descriptors.
    pub fn release(self) -> Removed {
        let removed = self.clear();
        let _ = std::fs::remove_dir(&self.dir);
        removed
    }
}

/// How many pins of each kind were removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Links (detached).
    pub links: usize,
    /// Programs.
    pub programs: usize,
    /// Maps.
    pub maps: usize,
}

/// What `sockfilter unload` did to one scope.
#[derive(Debug)]
pub enum Unloaded {
    /// A dead enforcer's state, removed.
    Removed {
        /// The scope directory.
        dir: PathBuf,
        /// What was in it.
        removed: Removed,
    },
    /// A running enforcer holds it: left alone (SIGTERM removes it).
    Running {
        /// The scope directory.
        dir: PathBuf,
    },
}

/// Removes every scope (or only the scope named `only`, see
/// [`scope_name`]) that no running enforcer holds: every sockfilter link
/// (detached), program and map pinned under [`ROOT`], and the directories.
/// Nothing outside [`ROOT`] is touched, so `watch` sessions and running
/// enforcers are left alone. Nothing pinned is not an error.
pub fn unload(only: Option<&str>) -> io::Result<Vec<Unloaded>> {
    let root = Path::new(ROOT);
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let root_lock = File::open(root)?;
    flock(&root_lock, libc::LOCK_EX)?;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root)?.flatten() {
        let dir = entry.path();
        if !dir.is_dir() || only.is_some_and(|o| entry.file_name() != o) {
            continue;
        }
        let Ok(lock) = File::open(&dir) else {
            continue; // removed meanwhile
        };
        if flock(&lock, libc::LOCK_EX | libc::LOCK_NB).is_err() {
            out.push(Unloaded::Running { dir });
            continue;
        }
        let removed = remove_scope_contents(&dir);
        // Go on with the other scopes whatever happens to this directory:
        // its pins are gone, which is what ends enforcement.
        let _ = std::fs::remove_dir(&dir);
        out.push(Unloaded::Removed { dir, removed });
    }
    drop(root_lock);
    let _ = std::fs::remove_dir(root); // only if empty
    Ok(out)
}

fn make_subdirs(dir: &Path) -> io::Result<()> {
    for sub in ["maps", "progs", "links"] {
        match std::fs::create_dir(dir.join(sub)) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

fn remove_scope_contents(dir: &Path) -> Removed {
    let mut removed = Removed::default();
    // Links first, detached explicitly: enforcement stops here, even if a
    // descriptor of the link is still open somewhere.
    for entry in std::fs::read_dir(dir.join("links"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let path = entry.path();
        let fd = obj_get(&path).ok();
        if let Some(fd) = &fd {
            // Refused only for links that cannot be detached, seen to below.
            let _ = link_detach(fd.as_fd());
        }
        if std::fs::remove_file(&path).is_ok() {
            removed.links += 1;
        }
        // Links that cannot be detached (tracing and BPF LSM links) end
        // when their last reference goes. Our descriptor, closed after the
        // pin, is that reference: closing frees the link before this
        // returns, where the pin's release (since Linux 6.5) only queues
        // the free on a workqueue, and enforcement would outlive unload.
        drop(fd);
    }
    for (sub, count) in [
        ("progs", &mut removed.programs),
        ("maps", &mut removed.maps),
    ] {
        for entry in std::fs::read_dir(dir.join(sub))
            .into_iter()
            .flatten()
            .flatten()
        {
            if std::fs::remove_file(entry.path()).is_ok() {
                *count += 1;
            }
        }
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let _ = std::fs::remove_dir(entry.path());
    }
    removed
}

/// Mounts bpffs at [`BPFFS`] unless a bpffs is mounted there.
fn ensure_bpffs() -> io::Result<()> {
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let fstype = f.iter().position(|x| *x == "-").and_then(|i| f.get(i + 1));
            f.get(4) == Some(&BPFFS) && fstype == Some(&"bpf")
        });
    if mounted {
        return Ok(());
    }
    std::fs::create_dir_all(BPFFS)?;
    nix::mount::mount(
        Some("bpf"),
        BPFFS,
        Some("bpf"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        Some("mode=0700"),
    )
    .map_err(|e| io::Error::other(format!("mounting bpffs at {BPFFS}: {e}")))
}

fn flock(f: &File, op: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A takeover reuses the pinned maps but not the object's global data
    /// (`.rodata` is frozen per load): mutable globals (`.data`, `.bss`)
    /// would silently restart from zero in the adopting enforcer. State the
    /// programs keep must live in maps.
    #[test]
    fn the_bpf_object_keeps_no_state_in_global_variables() {
        use aya_obj::EbpfSectionKind;
        let obj = aya_obj::Object::parse(crate::loader::OBJECT).unwrap();
        for (name, m) in &obj.maps {
            match m.section_kind() {
                EbpfSectionKind::Data => panic!("mutable global data in bpf/: {name}"),
                // Only the BTF anchor of struct sf_event (sockfilter.bpf.c),
                // which no program reads or writes.
                EbpfSectionKind::Bss => assert_eq!(
                    m.data().len(),
                    std::mem::size_of::<crate::abi::SfEvent>(),
                    "{name} holds more than _sf_event_btf: mutable globals in bpf/"
                ),
                _ => {}
            }
        }
        // Maps are pinned by name, global data (the names with a '.') never.
        for (name, m) in &obj.maps {
            let global = matches!(
                m.section_kind(),
                EbpfSectionKind::Rodata | EbpfSectionKind::Bss | EbpfSectionKind::Data
            );
            assert_eq!(name.contains('.'), global, "{name}");
        }
    }

    #[test]
    fn the_object_hash_is_stable_and_tells_objects_apart() {
        assert_eq!(object_hash(b""), "cbf29ce484222325");
        assert_ne!(object_hash(b"a"), object_hash(b"b"));
    }
}
