//! Finding the cgroup v2 hierarchy and naming cgroups by id.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Where cgroup v2 is mounted, read from `/proc/self/mountinfo` (hybrid
/// layouts mount it at `/sys/fs/cgroup/unified`, pure v2 at `/sys/fs/cgroup`).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    parse_cgroup2_mount(&info)
}

fn parse_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // "36 35 0:30 / /sys/fs/cgroup rw,... - cgroup2 cgroup2 rw"
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let root = left.split_whitespace().nth(3)?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2" && root == "/").then(|| PathBuf::from(unescape(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let digits: String = chars.clone().take(3).collect();
            if let Ok(v) = u8::from_str_radix(&digits, 8) {
                out.push(v as char);
                for _ in 0..3 {
                    chars.next();
                }
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// The cgroup v2 path of a process, as in `/proc/PID/cgroup` ("0::/a/b").
pub fn cgroup_of_pid(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// Maps cgroup ids (the inode numbers of cgroup2 directories, which is what
/// `bpf_get_current_cgroup_id()` returns) to paths, caching what it finds.
pub struct CgroupNames {
    root: PathBuf,
    cache: Mutex<HashMap<u64, String>>,
}

impl CgroupNames {
    /// Names cgroups below `root`, the cgroup2 mount point.
    pub fn new(root: PathBuf) -> Self {
        CgroupNames {
            root,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The path of cgroup `id` relative to the hierarchy root ("/" for the root).
    /// Rescans the hierarchy once on a miss; None if the cgroup is gone.
    pub fn name(&self, id: u64) -> Option<String> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cache.get(&id) {
            return Some(p.clone());
        }
        cache.clear();
        scan(&self.root, &self.root, &mut cache);
        cache.get(&id).cloned()
    }
}

/// Every cgroup of the hierarchy mounted at `root`: its path as
/// /proc/PID/cgroup shows it, and its id.
pub fn hierarchy(root: &Path) -> Vec<(String, u64)> {
    let mut by_id = HashMap::new();
    scan(root, root, &mut by_id);
    by_id.into_iter().map(|(id, path)| (path, id)).collect()
}

fn scan(root: &Path, dir: &Path, out: &mut HashMap<u64, String>) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    let rel = dir.strip_prefix(root).unwrap_or(Path::new(""));
    out.insert(meta.ino(), format!("/{}", rel.display()));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            scan(root, &entry.path(), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hybrid_and_pure_v2_mounts() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_cgroup2_mount(hybrid),
            Some("/sys/fs/cgroup/unified".into())
        );
        let pure = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(parse_cgroup2_mount(pure), Some("/sys/fs/cgroup".into()));
        let bind_of_subtree = "30 23 0:26 /sub /mnt/x rw - cgroup2 cgroup2 rw\n";
        assert_eq!(parse_cgroup2_mount(bind_of_subtree), None);
        assert_eq!(parse_cgroup2_mount("garbage\n"), None);
        assert_eq!(unescape("/a\\040b"), "/a b");
    }
}
