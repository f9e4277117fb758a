//! Positional unit reads and writes in the data file.
//!
//! [`DataFile`] takes `&self` for every read and write, so one handle can be shared (e.g. in an
//! `Arc`) by tasks on a blocking pool. On Unix it uses `pread`/`pwrite`
//! ([`FileExt`](std::os::unix::fs::FileExt)); elsewhere it falls back to seek + read/write under
//! a lock.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

use bytes::Bytes;

use crate::content::{unit_len, ContentError, UNIT_LEN};

/// The file being shared or downloaded, addressed by unit.
#[derive(Debug)]
pub struct DataFile {
    file: File,
    len: u64,
    #[cfg(not(unix))]
    lock: std::sync::Mutex<()>,
}

impl DataFile {
    /// Opens an existing file read-only for serving; its length on disk is the file length.
    pub fn open(path: impl AsRef<Path>) -> io::Result<DataFile> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(Self::from_parts(file, len))
    }

    /// Opens (creating if absent) the output file for a download of `len` bytes and sets its
    /// length. Existing contents are kept, so a restarted download resumes; a file of another
    /// length is truncated or extended (with zeros) to `len`.
    pub fn create(path: impl AsRef<Path>, len: u64) -> io::Result<DataFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if file.metadata()?.len() != len {
            file.set_len(len)?;
        }
        Ok(Self::from_parts(file, len))
    }

    fn from_parts(file: File, len: u64) -> DataFile {
        DataFile {
            file,
            len,
            #[cfg(not(unix))]
            lock: std::sync::Mutex::new(()),
        }
    }

    /// The file length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads unit `unit` (64 KiB, or less for the last unit).
    pub fn read_unit(&self, unit: u64) -> io::Result<Bytes> {
        let n = unit_len(self.len, unit).map_err(invalid_input)?;
        let mut buf = vec![0u8; n as usize];
        self.read_exact_at(&mut buf, unit * UNIT_LEN)?;
        Ok(Bytes::from(buf))
    }

    /// Writes unit `unit`; `data` must be exactly the unit's length.
    pub fn write_unit(&self, unit: u64, data: &[u8]) -> io::Result<()> {
        let n = unit_len(self.len, unit).map_err(invalid_input)?;
        if data.len() as u64 != n {
            return Err(invalid_input(ContentError::DataLength {
                unit,
                expected: n,
                actual: data.len() as u64,
            }));
        }
        self.write_all_at(data, unit * UNIT_LEN)
    }

    /// The BLAKE3 hash of the whole file as it is on disk (one sequential pass, 1 MiB reads):
    /// the content root when the file is right.
    pub fn hash(&self) -> io::Result<[u8; 32]> {
        const BLOCK: u64 = 1 << 20;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; BLOCK.min(self.len) as usize];
        let mut offset = 0;
        while offset < self.len {
            let n = BLOCK.min(self.len - offset) as usize;
            self.read_exact_at(&mut buf[..n], offset)?;
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        Ok(*hasher.finalize().as_bytes())
    }

    /// Flushes written data to disk (`fsync`).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    /// Reads exactly `buf.len()` bytes at `offset`.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        #[cfg(unix)]
        {
            std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
        }
        #[cfg(not(unix))]
        {
            use std::io::{Read, Seek, SeekFrom};
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            let mut file = &self.file;
            file.seek(SeekFrom::Start(offset))?;
            file.read_exact(buf)
        }
    }

    /// Writes all of `data` at `offset`.
    pub fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        #[cfg(unix)]
        {
            std::os::unix::fs::FileExt::write_all_at(&self.file, data, offset)
        }
        #[cfg(not(unix))]
        {
            use std::io::{Seek, SeekFrom, Write};
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            let mut file = &self.file;
            file.seek(SeekFrom::Start(offset))?;
            file.write_all(data)
        }
    }
}

fn invalid_input(e: ContentError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}

/// Writes `len` pseudo-random bytes (xorshift64 from `seed`) to a new file at `path`, 1 MiB at a
/// time: sample content for demos and benchmarks.
pub fn write_pseudo_random(path: &Path, len: u64, seed: u64) -> io::Result<()> {
    use std::io::Write as _;
    let mut w = io::BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut x = seed | 1;
    let mut block = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for chunk in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        w.write_all(&block[..n])?;
        left -= n as u64;
    }
    w.into_inner()
        .map_err(io::IntoInnerError::into_error)?
        .sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_round_trip_and_resume_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        let len = 2 * UNIT_LEN + 100;
        let file = DataFile::create(&path, len).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
        let unit2 = vec![2u8; 100];
        let unit0 = vec![9u8; UNIT_LEN as usize];
        file.write_unit(2, &unit2).unwrap();
        file.write_unit(0, &unit0).unwrap();
        file.sync().unwrap();
        assert_eq!(&file.read_unit(2).unwrap()[..], &unit2[..]);
        assert_eq!(&file.read_unit(0).unwrap()[..], &unit0[..]);
        assert_eq!(
            &file.read_unit(1).unwrap()[..],
            &[0u8; UNIT_LEN as usize][..]
        );
        drop(file);

        // Reopening for the same download keeps what was written.
        let file = DataFile::create(&path, len).unwrap();
        assert_eq!(&file.read_unit(0).unwrap()[..], &unit0[..]);
        let served = DataFile::open(&path).unwrap();
        assert_eq!(served.len(), len);
        assert_eq!(&served.read_unit(2).unwrap()[..], &unit2[..]);
    }

    #[test]
    fn bad_units_and_lengths_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = DataFile::create(dir.path().join("x"), UNIT_LEN + 1).unwrap();
        assert!(file.read_unit(2).is_err());
        assert!(file.read_unit(u64::MAX).is_err());
        assert!(file.write_unit(1, &[0, 0]).is_err());
        assert!(file.write_unit(0, &[0; 10]).is_err());
        file.write_unit(1, &[5]).unwrap();
        assert_eq!(&file.read_unit(1).unwrap()[..], &[5]);
    }
}
