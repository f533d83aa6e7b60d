//! The file output: one JSON event per line, rotated by size
//! (`events.jsonl` -> `events.jsonl.1` -> ... -> `.KEEP`, the oldest removed).

use anyhow::Context;
use sockfilter_model::Event;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// An open events file.
pub struct FileOutput {
    path: PathBuf,
    out: BufWriter<File>,
    /// Bytes in the current file, written or buffered.
    size: u64,
    rotate_bytes: u64,
    keep: u32,
}

impl FileOutput {
    /// Opens (creating it and its directory) `path` for appending.
    pub fn open(path: &Path, rotate_bytes: u64, keep: u32) -> anyhow::Result<FileOutput> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the directory {}", dir.display()))?;
        }
        let file = Self::open_file(path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(FileOutput {
            path: path.to_owned(),
            out: BufWriter::with_capacity(64 * 1024, file),
            size,
            rotate_bytes,
            keep,
        })
    }

    fn open_file(path: &Path) -> anyhow::Result<File> {
        crate::private_file::open(OpenOptions::new().create(true).append(true), path)
            .with_context(|| format!("opening the events file {}", path.display()))
    }

    fn numbered(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        p.into()
    }

    /// Shifts `.1`..`.KEEP-1` up by one, renames the file to `.1` and starts
    /// a new one. With `keep = 0` the old file is simply removed.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.keep).rev() {
                let from = self.numbered(n);
                if from.exists() {
                    std::fs::rename(&from, self.numbered(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.numbered(1))?;
        }
        let file = Self::open_file(&self.path).map_err(std::io::Error::other)?;
        self.out = BufWriter::with_capacity(64 * 1024, file);
        self.size = 0;
        Ok(())
    }

    fn write_line(&mut self, json: &str) -> Result<(), String> {
        let line_len = json.len() as u64 + 1;
        if self.size > 0 && self.size + line_len > self.rotate_bytes {
            self.rotate()
                .map_err(|e| format!("rotating {}: {e}", self.path.display()))?;
        }
        self.out
            .write_all(json.as_bytes())
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|e| format!("writing {}: {e}", self.path.display()))?;
        self.size += line_len;
        Ok(())
    }
}

impl super::Output for FileOutput {
    fn send(&mut self, _event: &Event, json: &str) -> Result<(), String> {
        self.write_line(json)
    }

    fn send_lost(&mut self, json: &str) -> Result<(), String> {
        self.write_line(json)
    }

    fn flush(&mut self) -> Result<(), String> {
        self.out
            .flush()
            .map_err(|e| format!("writing {}: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Output;
    use super::*;

    fn event() -> Event {
        let v = serde_json::json!({"event":"bind","time":"2026-01-01T00:00:00.000000Z","verdict":"allow",
            "pid":1,"uid":0,"comm":"x","exe":null,"cgroup":null,"proto":"udp","family":"ipv4",
            "local":{"ip":"127.0.0.1","port":53},"remote":null,"socket":1,"existing":false,"rule":null});
        Event::from_json(&v).unwrap()
    }

    #[test]
    fn rotates_by_size_and_keeps_the_newest_files() {
        let dir =
            std::env::temp_dir().join(format!("sockfilter-file-output-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub/events.jsonl");
        let mut out = FileOutput::open(&path, 100, 2).unwrap();
        let line = "x".repeat(59); // 60 bytes with the newline: one line per file
        for i in 0..5 {
            out.send(&event(), &format!("{line}{i}")[1..]).unwrap();
        }
        out.flush().unwrap();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert!(read(&path).ends_with("4\n"));
        assert!(read(&dir.join("sub/events.jsonl.1")).ends_with("3\n"));
        assert!(read(&dir.join("sub/events.jsonl.2")).ends_with("2\n"));
        assert!(!dir.join("sub/events.jsonl.3").exists());
        // Every file, the ones rotation starts too, is closed to others.
        use std::os::unix::fs::PermissionsExt;
        for p in [path.clone(), dir.join("sub/events.jsonl.1")] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o007, 0, "{} is {mode:o}", p.display());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
