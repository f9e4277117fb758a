//! Atomic persistence of an opaque blob (the availability store encoded by the core).
//!
//! [`save`] writes `PATH.tmp`, fsyncs it, renames it over `PATH` and fsyncs the directory, so after
//! a crash at any point `PATH` holds either the previous complete blob or the new one, never a
//! mixture. A leftover `PATH.tmp` is ignored by [`load`] and overwritten by the next [`save`].

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Atomically replaces the contents of `path` with `blob`.
pub fn save(path: impl AsRef<Path>, blob: &[u8]) -> io::Result<()> {
    let path = path.as_ref();
    let tmp = tmp_path(path);
    {
        let mut file = File::create(&tmp)?;
        file.write_all(blob)?;
        file.sync_all()?;
    }
    replace(&tmp, path)
}

/// Atomically replaces `path` with the already written and synced file `tmp` (rename, then
/// fsync of the directory).
pub fn replace(tmp: &Path, path: &Path) -> io::Result<()> {
    fs::rename(tmp, path)?;
    sync_parent_dir(path)
}

/// Reads the blob at `path`; `Ok(None)` when the file does not exist.
pub fn load(path: impl AsRef<Path>) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(blob) => Ok(Some(blob)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// `PATH.tmp`: the file name with `.tmp` appended, in the same directory (so rename is atomic).
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".tmp");
    PathBuf::from(name)
}

#[cfg(unix)]
fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_parent_dir(_path: &Path) -> io::Result<()> {
    // Directories cannot be opened for fsync on this platform; rename is the commit point.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_is_none_and_save_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.bin");
        assert_eq!(load(&path).unwrap(), None);
        save(&path, b"first").unwrap();
        assert_eq!(load(&path).unwrap().as_deref(), Some(&b"first"[..]));
        save(&path, b"").unwrap();
        assert_eq!(load(&path).unwrap().as_deref(), Some(&b""[..]));
        assert!(!tmp_path(&path).exists());
    }

    #[test]
    fn crash_before_rename_keeps_the_last_complete_blob() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.bin");
        save(&path, b"complete v1").unwrap();
        // Simulate a crash after writing the temp file but before the rename.
        fs::write(tmp_path(&path), b"half-writ").unwrap();
        assert_eq!(load(&path).unwrap().as_deref(), Some(&b"complete v1"[..]));
        // The next save overwrites the stale temp file and commits.
        save(&path, b"complete v2").unwrap();
        assert_eq!(load(&path).unwrap().as_deref(), Some(&b"complete v2"[..]));
        assert!(!tmp_path(&path).exists());
    }

    #[test]
    fn relative_path_in_current_dir_syncs() {
        // A bare file name has an empty parent; the directory fsync must use ".".
        assert_eq!(tmp_path(Path::new("s")), PathBuf::from("s.tmp"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested.bin");
        save(&path, b"x").unwrap();
        assert!(sync_parent_dir(Path::new("bare-name")).is_ok());
    }
}
