//! Files that hold every process's command line and executable (the
//! history, the events files, the NATS queue) are created readable by the
//! daemon's user and group only (0640), whatever the umask the daemon was
//! started with, and an existing one that others can read (left by an older
//! version) loses those bits when the daemon opens it.

use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode new files get (before the umask, which can only take more away).
pub const MODE: u32 = 0o640;

/// Opens `path` with `options`, creating it with [`MODE`] and taking read,
/// write and execute for others off an existing file.
pub fn open(options: &mut OpenOptions, path: &Path) -> io::Result<File> {
    let file = options.mode(MODE).open(path)?;
    restrict_file(&file)?;
    Ok(file)
}

/// Takes the bits for others off an open file.
fn restrict_file(file: &File) -> io::Result<()> {
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o007 != 0 {
        file.set_permissions(Permissions::from_mode(mode & 0o7770))?;
    }
    Ok(())
}

/// Creates `path` empty with [`MODE`] if it does not exist, or takes the
/// bits for others off it if it does: for files that another library
/// creates (SQLite, which gives its `-wal` and `-shm` files the mode of
/// the database).
pub fn prepare(path: &Path) -> io::Result<()> {
    open(OpenOptions::new().create(true).append(true), path).map(drop)
}

/// Takes the bits for others off `path` if it exists.
pub fn restrict_existing(path: &Path) -> io::Result<()> {
    match File::open(path) {
        Ok(f) => restrict_file(&f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
