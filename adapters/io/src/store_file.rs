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

    /// Set in the child process [`relative_path_in_current_dir_syncs`] starts.
    const RELATIVE_CHILD: &str = "TIERSWARM_STORE_FILE_RELATIVE_CHILD";

    #[test]
    fn relative_path_in_current_dir_syncs() {
        // A bare file name has an empty parent; the directory fsync must use ".". The current
        // directory is process-wide, so the save runs in a child process of this test binary
        // started in a scratch directory (see `relative_path_child`).
        assert_eq!(tmp_path(Path::new("s")), PathBuf::from("s.tmp"));
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "store_file::tests::relative_path_child",
                "--ignored",
            ])
            .args(["--nocapture", "--test-threads", "1"])
            .env(RELATIVE_CHILD, "1")
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(fs::read(dir.path().join("bare.bin")).unwrap(), b"relative");
        assert!(!dir.path().join("bare.bin.tmp").exists());
    }

    /// Saves to and loads from a bare file name in the current directory; only does so in the
    /// child process started by [`relative_path_in_current_dir_syncs`].
    #[test]
    #[ignore = "run by relative_path_in_current_dir_syncs in a scratch directory"]
    fn relative_path_child() {
        if std::env::var_os(RELATIVE_CHILD).is_none() {
            return;
        }
        save("bare.bin", b"relative").unwrap();
        assert_eq!(load("bare.bin").unwrap().as_deref(), Some(&b"relative"[..]));
    }
}
