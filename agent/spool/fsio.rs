//! Small durable file-system steps the spool is built from: private directories, atomic
//! replace (write temp, fsync, rename, fsync dir), moving a file aside without overwriting.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::SpoolError;

/// Create `dir` (and parents) with mode 0700 if it does not exist.
pub fn create_private_dir(dir: &Path) -> Result<(), SpoolError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(SpoolError::io("creating directory", dir))
}

/// fsync a directory so renames, creations and removals in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(SpoolError::io("syncing directory", dir))
}

/// Replace `path` with `bytes` atomically, mode 0600: write `path.tmp`, fsync, rename over
/// `path`, fsync the directory (the fsyncs only if `durable`).
pub fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> Result<(), SpoolError> {
    let tmp = tmp_path(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(SpoolError::io("creating", &tmp))?;
    file.write_all(bytes).map_err(SpoolError::io("writing", &tmp))?;
    if durable {
        file.sync_all().map_err(SpoolError::io("syncing", &tmp))?;
    }
    drop(file);
    fs::rename(&tmp, path).map_err(SpoolError::io("renaming into place", path))?;
    if durable {
        sync_dir(parent(path))?;
    }
    Ok(())
}

/// `path` with `.tmp` appended to its file name.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// The directory holding `path` (`.` for a bare name).
pub fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Move `file` into `dir` under its own name, or `name.1`, `name.2`, … if taken: never
/// overwrites. Both directories are fsynced if `durable`. Returns the new path.
pub fn move_aside(file: &Path, dir: &Path, durable: bool) -> Result<PathBuf, SpoolError> {
    create_private_dir(dir)?;
    let name = file.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    let mut target = dir.join(&name);
    let mut n = 0u32;
    while target.exists() {
        n += 1;
        let mut numbered = name.clone();
        numbered.push(format!(".{n}"));
        target = dir.join(numbered);
    }
    fs::rename(file, &target).map_err(SpoolError::io("moving to quarantine", file))?;
    if durable {
        sync_dir(dir)?;
        sync_dir(parent(file))?;
    }
    Ok(target)
}

/// Create `path` (it must not exist) with mode 0600, write `bytes` and (if `sync`) fsync it.
pub fn write_new(path: &Path, bytes: &[u8], sync: bool) -> Result<(), SpoolError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(SpoolError::io("creating", path))?;
    file.write_all(bytes).map_err(SpoolError::io("writing", path))?;
    if sync {
        file.sync_all().map_err(SpoolError::io("syncing", path))?;
    }
    Ok(())
}
