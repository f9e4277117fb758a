//! Positional unit reads and writes in the data file.
//!
//! [`DataFile`] takes `&self` for every read and write, so one handle can be shared (e.g. in an
//! `Arc`) by tasks on a blocking pool. On Unix it uses `pread`/`pwrite`
//! ([`FileExt`](std::os::unix::fs::FileExt)); elsewhere it falls back to seek + read/write under
//! a lock. A whole unit is read with seek + read under the lock everywhere: that reads into
//! memory not zeroed first (a `pread` needs an initialised buffer).
//!
//! ## Trust: serving without re-verifying every unit
//!
//! A [`DataFile`] also remembers whether its contents are *trusted*: hashed whole against the
//! content root and unchanged since, as far as the file's metadata tells ([`FileStamp`]: length,
//! modification and status-change times to the nanosecond, inode and device, from `fstat` on
//! the open handle). Trust is granted only by [`trust_if_unchanged`](DataFile::trust_if_unchanged)
//! around a whole-file hash the caller checked against the root ([`TrustCheck`]); it is dropped
//! by every write through the handle (before the write) and by the first
//! [`still_trusted`](DataFile::still_trusted) that finds the metadata changed, and it is never
//! granted again except by another whole-file check. For a download, that check uses the
//! pieces read back as they completed ([`read_back`](crate::read_back)), so its trust carries that
//! module's limit too. The session serves a unit of a trusted,
//! unchanged file without re-verifying it against its proof; a download in progress serves so
//! the units it verified and wrote itself while no other program writes to its file
//! ([`DataFile::vouches_for`]); every other unit is verified.
//!
//! **The limit.** A change that leaves the length, both times and the inode as they were is not
//! noticed: e.g. two writes within the filesystem's timestamp granularity (about one jiffy,
//! 1–10 ms, on many Linux filesystems), or stores through a shared memory mapping into pages
//! already dirty. Such a file may have a unit sent that no longer matches its proof. It is never
//! *accepted* anywhere: the receiving peer verifies every unit against the root, rejects it and
//! disconnects the sender. On targets other than Unix there is no stamp and nothing is ever
//! trusted (every served unit is verified).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use blake3::hazmat::{
    merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};
use bytes::Bytes;

use crate::content::{unit_len, ContentError, VerifiedUnit, UNIT_LEN};
use crate::read_back::{ReadBack, ReadBackStats};

/// The file being shared or downloaded, addressed by unit, and whether its contents are trusted
/// (see the [module docs](self)).
#[derive(Debug)]
pub struct DataFile {
    file: File,
    len: u64,
    /// Held while the file's offset is used (seek + read; on other systems every access).
    lock: std::sync::Mutex<()>,
    /// Held by a write through the read-back, with its stamps before and after it.
    writing: std::sync::Mutex<()>,
    /// Whether the contents are trusted, and the writes made through this handle.
    trust: std::sync::Mutex<Trust>,
    /// A download's pieces read back as they complete ([`enable_read_back`](Self::enable_read_back)).
    read_back: Option<ReadBack>,
}

/// What the metadata of an open file says about its contents: its length, its modification and
/// status-change times (seconds and nanoseconds), its inode and its device, as `fstat` reports
/// them for the open handle. Another file renamed over the path later changes nothing read
/// through the handle, which still reads the old inode (the rename may update that inode's
/// status-change time, which only drops the trust). Any write through any handle changes the
/// times, within the filesystem's timestamp granularity; see the [module docs](self) for what
/// that misses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileStamp {
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    inode: u64,
    device: u64,
}

impl FileStamp {
    /// The stamp of `meta` (from `File::metadata`, i.e. `fstat` on the handle).
    #[cfg(unix)]
    fn of(meta: &std::fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            len: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            inode: meta.ino(),
            device: meta.dev(),
        }
    }
}

/// The start of a whole-file check: the file's [`FileStamp`] and the writes made through the
/// handle when it began. Take it with [`DataFile::begin_trust_check`] *before* hashing the
/// file, and hand it to [`DataFile::trust_if_unchanged`] once the hash matched the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a check grants trust only through DataFile::trust_if_unchanged"]
pub struct TrustCheck {
    stamp: Option<FileStamp>,
    writes: u64,
}

/// The trust state of a [`DataFile`].
#[derive(Debug, Default)]
struct Trust {
    /// The stamp the file had when it was last shown whole to match the root; `None`: not
    /// trusted.
    stamp: Option<FileStamp>,
    /// Writes started through the handle (each clears `stamp` first).
    writes: u64,
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
            lock: std::sync::Mutex::new(()),
            writing: std::sync::Mutex::new(()),
            trust: std::sync::Mutex::new(Trust::default()),
            read_back: None,
        }
    }

    /// Reads the file back piece by piece as writes complete the pieces, so that
    /// [`hash`](Self::hash) later hashes only the pieces not read back since their last write
    /// (see [`read_back`](crate::read_back), which also says what this does not catch). `held`:
    /// the units already in the file, read with their piece. Nothing happens for a file of one
    /// piece or less.
    pub fn enable_read_back(&mut self, held: impl Fn(u64) -> bool) {
        self.read_back = ReadBack::new(self.len, held);
    }

    /// What the read-back did; `None` when it is off.
    pub fn read_back_stats(&self) -> Option<ReadBackStats> {
        self.read_back.as_ref().map(ReadBack::stats)
    }

    fn trust_state(&self) -> std::sync::MutexGuard<'_, Trust> {
        // The state is two plain fields, consistent after any panic.
        self.trust.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The [`FileStamp`] of the open handle now (`fstat`); `None` on targets other than Unix.
    pub fn stamp(&self) -> io::Result<Option<FileStamp>> {
        #[cfg(unix)]
        {
            Ok(Some(FileStamp::of(&self.file.metadata()?)))
        }
        #[cfg(not(unix))]
        {
            Ok(None)
        }
    }

    /// Begins a whole-file check: call it *before* hashing the file, then
    /// [`trust_if_unchanged`](Self::trust_if_unchanged) once the hash matched the root. A stamp
    /// that cannot be taken makes a check that grants nothing.
    pub fn begin_trust_check(&self) -> TrustCheck {
        // The write count first: a write between the two is then seen by the count.
        let writes = self.trust_state().writes;
        TrustCheck {
            stamp: self.stamp().ok().flatten(),
            writes,
        }
    }

    /// Ends a whole-file check begun with [`begin_trust_check`](Self::begin_trust_check), whose
    /// hash the caller found equal to the content root: the file becomes trusted, at its stamp
    /// now, if that stamp equals the one taken at the start and no write went through this
    /// handle in between (a file changed while it was hashed is not trusted). Returns whether
    /// the file is trusted now.
    pub fn trust_if_unchanged(&self, check: TrustCheck) -> bool {
        let now = self.stamp().ok().flatten();
        let mut trust = self.trust_state();
        match (check.stamp, now) {
            (Some(before), Some(after)) if before == after && trust.writes == check.writes => {
                trust.stamp = Some(after);
                true
            }
            _ => false,
        }
    }

    /// Whether the file is trusted and its stamp is still the trusted one (one `fstat`; none when
    /// not trusted). Call it *after* reading what is to be served: a write racing with the read
    /// has updated the file's times before copying its data, so a stamp taken after the read
    /// sees it. A stamp that differs, or cannot be taken, drops the trust for good: only another
    /// whole-file check ([`trust_if_unchanged`](Self::trust_if_unchanged)) grants it again.
    pub fn still_trusted(&self) -> bool {
        let mut trust = self.trust_state();
        let Some(trusted) = trust.stamp else {
            return false;
        };
        if self.stamp().ok().flatten() == Some(trusted) {
            return true;
        }
        trust.stamp = None;
        false
    }

    /// Whether unit `unit`, just read from a download's output that is not trusted whole, may be
    /// served without verifying it again: the download wrote it itself, as verified bytes, and
    /// no other program has written to the file since the download's first
    /// write (its stamps around each write and now say so; see [`read_back`](crate::read_back)).
    /// Call it *after* the read, as [`still_trusted`](Self::still_trusted). One `fstat` for a unit
    /// the download wrote itself; none for any other, or without the read-back.
    pub fn vouches_for(&self, unit: u64) -> bool {
        self.read_back
            .as_ref()
            .is_some_and(|r| r.vouches_for(unit, || self.stamp().ok().flatten()))
    }

    /// Whether the file is trusted (as of the last check; no `fstat`).
    pub fn is_trusted(&self) -> bool {
        self.trust_state().stamp.is_some()
    }

    /// Drops the trust (writes through the handle do it themselves).
    pub fn distrust(&self) {
        self.trust_state().stamp = None;
    }

    /// The file from its start to its length, read through this handle by positional reads
    /// (the offset [`read_unit`](Self::read_unit) uses is left alone): hash this, between
    /// [`begin_trust_check`](Self::begin_trust_check) and
    /// [`trust_if_unchanged`](Self::trust_if_unchanged), so that the stamps describe the very
    /// file hashed (another handle opened on the path may be another file by then).
    pub fn reader(&self) -> impl io::Read + '_ {
        Reader { file: self, pos: 0 }
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
        use std::io::{Read, Seek, SeekFrom};
        let n = unit_len(self.len, unit).map_err(invalid_input)?;
        // `read_to_end` fills the vector's spare capacity without zeroing it first: a 64 KiB
        // memset per served unit was ~7 % of a transfer's user-space instructions.
        let mut buf = Vec::with_capacity(n as usize);
        {
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            let mut file = &self.file;
            file.seek(SeekFrom::Start(unit * UNIT_LEN))?;
            file.take(n).read_to_end(&mut buf)?;
        }
        if buf.len() as u64 != n {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("unit {unit}: the file ends {} bytes into it", buf.len()),
            ));
        }
        Ok(Bytes::from(buf))
    }

    /// Writes unit `unit`; `data` must be exactly the unit's length. Drops the trust first.
    pub fn write_unit(&self, unit: u64, data: &[u8]) -> io::Result<()> {
        self.check_unit_len(unit, data)?;
        let Some(r) = &self.read_back else {
            return self.write_all_at(data, unit * UNIT_LEN);
        };
        r.writing_unvalued(unit);
        drop(self.write_stamped(r, unit, data)?);
        r.wrote(unit, None, self);
        Ok(())
    }

    /// Writes unit `unit` between two stamps, taken under the write lock (see
    /// [`read_back`](crate::read_back): a stamp before a write that is not the one after the
    /// previous write means another program wrote in between); returns the lock, held.
    fn write_stamped(
        &self,
        r: &ReadBack,
        unit: u64,
        data: &[u8],
    ) -> io::Result<std::sync::MutexGuard<'_, ()>> {
        let one_at_a_time = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        r.before_write(unit, self.stamp().ok().flatten());
        let written = self.write_all_at(data, unit * UNIT_LEN);
        // Also after a failed write, which may have changed some of the bytes.
        r.after_write(unit, self.stamp().ok().flatten());
        written.map(|()| one_at_a_time)
    }

    /// Writes a unit that was verified against the content root
    /// ([`verify_unit_value`](crate::content::verify_unit_value)), which carries the unit's
    /// chaining value from that check. With the read-back on, the piece's value for the final
    /// check is merged from its units' values once it is complete, instead of hashing the piece
    /// again: one BLAKE3 pass over a download instead of two ([`read_back`](crate::read_back)).
    /// Only verification makes a [`VerifiedUnit`], so a value always belongs to its bytes, and
    /// the value is kept only once `pwrite` has taken all of them.
    pub fn write_verified_unit(&self, verified: VerifiedUnit<'_>) -> io::Result<()> {
        let (unit, data, value) = (verified.unit(), verified.data(), verified.value());
        let (Some(r), Some(_)) = (&self.read_back, value) else {
            return self.write_unit(unit, data);
        };
        self.check_unit_len(unit, data)?;
        let one_at_a_time = self.write_stamped(r, unit, data)?;
        // Still under the write lock: no other write of the unit comes between this one and
        // the vouching (each write clears the unit's vouching first).
        r.vouch(unit);
        drop(one_at_a_time);
        r.wrote(unit, value, self);
        Ok(())
    }

    fn check_unit_len(&self, unit: u64, data: &[u8]) -> io::Result<()> {
        let n = unit_len(self.len, unit).map_err(invalid_input)?;
        if data.len() as u64 != n {
            return Err(invalid_input(ContentError::DataLength {
                unit,
                expected: n,
                actual: data.len() as u64,
            }));
        }
        Ok(())
    }

    /// The BLAKE3 hash of the whole file as it is on disk: the content root when the file is
    /// right. A large file is hashed by one thread per core (at most [`HASH_THREADS`]), each
    /// taking aligned pieces of the BLAKE3 tree in turn; their chaining values are merged as the
    /// tree merges them, so the result is exactly `blake3::hash` of the file.
    pub fn hash(&self) -> io::Result<[u8; 32]> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.hash_threads(threads.min(HASH_THREADS))
    }

    /// [`hash`](Self::hash) by `threads` threads (one: a single sequential pass, unless pieces
    /// were read back).
    pub fn hash_threads(&self, threads: usize) -> io::Result<[u8; 32]> {
        match &self.read_back {
            Some(r) => {
                let known = r.usable(self.stamp().ok().flatten());
                let (root, hashed) = self.hash_with(threads, r.piece(), &known)?;
                r.hashed_at_check(hashed);
                Ok(root)
            }
            None => Ok(self
                .hash_with(threads, hash_piece_len(self.len, threads), &[])?
                .0),
        }
    }

    /// [`hash`](Self::hash) by `threads` threads over pieces of `piece` bytes (a power of two,
    /// at least one BLAKE3 chunk), taking the chaining value of piece `i` from `known[i]` where
    /// there is one. Returns the root and the pieces hashed.
    fn hash_with(
        &self,
        threads: usize,
        piece: u64,
        known: &[Option<ChainingValue>],
    ) -> io::Result<([u8; 32], u64)> {
        debug_assert!(piece.is_power_of_two() && piece >= blake3::CHUNK_LEN as u64);
        let pieces = self.len.div_ceil(piece);
        // Piece `i`'s value: from `known`, or hashed below (the pieces still `None`).
        let mut cvs: Vec<Option<ChainingValue>> = known.to_vec();
        cvs.resize(pieces as usize, None);
        let todo: Vec<u64> = (0..pieces).filter(|&i| cvs[i as usize].is_none()).collect();
        if self.len <= piece || (threads < 2 && todo.len() as u64 == pieces) {
            let mut hasher = blake3::Hasher::new();
            self.hash_range(&mut hasher, 0, self.len, &mut Vec::new())?;
            return Ok((*hasher.finalize().as_bytes(), pieces.max(1)));
        }
        let next = AtomicU64::new(0);
        // No thread at all when every piece was read back.
        let hashed: Vec<io::Result<Vec<(u64, ChainingValue)>>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads.max(1).min(todo.len()))
                .map(|_| {
                    scope.spawn(|| {
                        let (mut done, mut buf) = (Vec::new(), Vec::new());
                        loop {
                            let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                            let Some(&i) = todo.get(k) else {
                                return Ok(done);
                            };
                            done.push((i, self.piece_value_with(i, piece, &mut buf)?));
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        for done in hashed {
            for (i, cv) in done? {
                cvs[i as usize] = Some(cv);
            }
        }
        let cvs: Vec<ChainingValue> = cvs.into_iter().flatten().collect();
        debug_assert_eq!(cvs.len() as u64, pieces);
        let (left, right) = split_subtrees(&cvs);
        let root = merge_subtrees_root(&merge_cvs(left), &merge_cvs(right), Mode::Hash);
        Ok((*root.as_bytes(), todo.len() as u64))
    }

    /// The BLAKE3 chaining value of piece `i` of `piece` bytes (not the whole file), read now,
    /// through a buffer kept by the calling thread.
    pub(crate) fn piece_value(&self, i: u64, piece: u64) -> io::Result<ChainingValue> {
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUF.with(|b| self.piece_value_with(i, piece, &mut b.borrow_mut()))
    }

    fn piece_value_with(&self, i: u64, piece: u64, buf: &mut Vec<u8>) -> io::Result<ChainingValue> {
        let start = i * piece;
        let mut hasher = blake3::Hasher::new();
        hasher.set_input_offset(start);
        self.hash_range(&mut hasher, start, piece.min(self.len - start), buf)?;
        Ok(hasher.finalize_non_root())
    }

    /// Feeds bytes `start..start + len` of the file to `hasher`, 1 MiB per read into `buf`
    /// (grown, and zeroed once, as needed).
    fn hash_range(
        &self,
        hasher: &mut blake3::Hasher,
        start: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> io::Result<()> {
        const BLOCK: u64 = 1 << 20;
        let want = BLOCK.min(len) as usize;
        if buf.len() < want {
            buf.resize(want, 0);
        }
        let mut offset = 0;
        while offset < len {
            let n = BLOCK.min(len - offset) as usize;
            self.read_exact_at(&mut buf[..n], start + offset)?;
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        Ok(())
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

    /// Writes all of `data` at `offset`. Drops the trust first (the file is not trusted again
    /// until another whole-file check, which a write during it also defeats). Private: every
    /// write goes through [`write_unit`](Self::write_unit) or
    /// [`write_verified_unit`](Self::write_verified_unit), which keep the read-back's books.
    fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        {
            let mut trust = self.trust_state();
            trust.stamp = None;
            trust.writes = trust.writes.wrapping_add(1);
        }
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

/// [`DataFile::reader`]: the file's bytes up to its length, by positional reads.
struct Reader<'a> {
    file: &'a DataFile,
    pos: u64,
}

impl io::Read for Reader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.file.len - self.pos).min(buf.len() as u64) as usize;
        if n > 0 {
            self.file.read_exact_at(&mut buf[..n], self.pos)?;
            self.pos += n as u64;
        }
        Ok(n)
    }
}

/// Most threads that hash one file.
pub const HASH_THREADS: usize = 4;

/// Pieces one thread hashes at a time: about four per thread, so that a thread slowed by
/// others (the machine is shared) holds up the end by little, and each piece long enough
/// (1 MiB at least, 64 MiB at most) that its setup and merge cost nothing beside its hashing.
fn hash_piece_len(len: u64, threads: usize) -> u64 {
    let quarter = len / (4 * threads.max(1) as u64);
    let pow2 = quarter.checked_next_power_of_two().unwrap_or(1 << 63);
    pow2.clamp(1 << 20, 64 << 20)
}

/// A BLAKE3 tree's split of consecutive equal subtrees (the last perhaps shorter): its left
/// child holds the largest power of two of them that is fewer than all. At least two.
fn split_subtrees(cvs: &[ChainingValue]) -> (&[ChainingValue], &[ChainingValue]) {
    let left = (cvs.len() - 1).checked_next_power_of_two().unwrap_or(1);
    let left = if left >= cvs.len() { left / 2 } else { left };
    cvs.split_at(left)
}

/// The chaining value of the subtree made of `cvs` (not the root).
fn merge_cvs(cvs: &[ChainingValue]) -> ChainingValue {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let (left, right) = split_subtrees(cvs);
    merge_subtrees_non_root(&merge_cvs(left), &merge_cvs(right), Mode::Hash)
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
pub(crate) mod tests {
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

    #[test]
    fn a_file_shortened_under_the_reader_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_pseudo_random(&path, 2 * UNIT_LEN, 3).unwrap();
        let file = DataFile::open(&path).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(UNIT_LEN + 10)
            .unwrap();
        assert_eq!(file.read_unit(0).unwrap().len(), UNIT_LEN as usize);
        let err = file.read_unit(1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains("unit 1"), "{err}");
    }

    /// Writes `bytes` at `offset` through a handle of its own (not the `DataFile`'s), as another
    /// program would, and sets the modification time to one the file cannot already have, so
    /// that the change shows in the stamp whatever the filesystem's timestamp granularity.
    #[cfg(unix)]
    pub(crate) fn edit_behind(path: &Path, offset: u64, bytes: &[u8]) {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(bytes, offset).unwrap();
        let distinct = std::time::UNIX_EPOCH + std::time::Duration::new(1_000_000_007, 123);
        f.set_modified(distinct).unwrap();
    }

    /// A file checked whole stays trusted while its metadata is unchanged, and loses the trust
    /// for good at the first stamp that differs. Another file renamed over its path changes
    /// nothing that is read: the handle still reads the file checked.
    #[cfg(unix)]
    #[test]
    fn trust_lasts_until_the_stamp_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_pseudo_random(&path, 3 * UNIT_LEN, 5).unwrap();
        let file = DataFile::open(&path).unwrap();
        assert!(!file.is_trusted() && !file.still_trusted());
        let check = file.begin_trust_check();
        file.hash().unwrap();
        assert!(file.trust_if_unchanged(check));
        assert!(file.still_trusted() && file.still_trusted());
        assert_eq!(file.stamp().unwrap(), file.trust_state().stamp);

        let unit1 = file.read_unit(1).unwrap();
        let other = dir.path().join("g");
        write_pseudo_random(&other, 3 * UNIT_LEN, 6).unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert_eq!(file.read_unit(1).unwrap(), unit1);
        drop(file);

        // The file now at the path, edited in place with the same length.
        let file = DataFile::open(&path).unwrap();
        let check = file.begin_trust_check();
        assert!(file.trust_if_unchanged(check));
        edit_behind(&path, UNIT_LEN + 5, b"edited");
        assert_eq!(file.stamp().unwrap().map(|s| s.len), Some(3 * UNIT_LEN));
        assert!(!file.still_trusted());
        assert!(!file.is_trusted());
        // Nothing but another whole-file check trusts it again.
        assert!(!file.still_trusted());
        let check = file.begin_trust_check();
        assert!(file.trust_if_unchanged(check));
        file.distrust();
        assert!(!file.is_trusted() && !file.still_trusted());
    }

    /// A write through the handle drops the trust before it writes, and a whole-file check
    /// with a write in it grants nothing.
    #[cfg(unix)]
    #[test]
    fn own_writes_drop_the_trust() {
        let dir = tempfile::tempdir().unwrap();
        let file = DataFile::create(dir.path().join("out"), 2 * UNIT_LEN).unwrap();
        let check = file.begin_trust_check();
        assert!(file.trust_if_unchanged(check));
        file.write_unit(1, &[3; UNIT_LEN as usize]).unwrap();
        assert!(!file.is_trusted());

        let check = file.begin_trust_check();
        file.write_all_at(&[4], 7).unwrap();
        assert!(!file.trust_if_unchanged(check));
        assert!(!file.is_trusted());
    }

    /// A file changed while it is being hashed is not trusted, even when the change falls
    /// between the two stamps' reads of it (the seeder hashes through
    /// [`DataFile::reader`] exactly so).
    #[cfg(unix)]
    #[test]
    fn a_file_changed_while_hashed_is_not_trusted() {
        struct EditMidway<'a, R> {
            inner: R,
            path: &'a Path,
            reads: u32,
        }
        impl<R: io::Read> io::Read for EditMidway<'_, R> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.reads += 1;
                if self.reads == 2 {
                    edit_behind(self.path, 0, b"changed behind the hash");
                }
                self.inner.read(buf)
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let len = 40 * UNIT_LEN + 17;
        write_pseudo_random(&path, len, 9).unwrap();
        let file = DataFile::open(&path).unwrap();

        let check = file.begin_trust_check();
        let outboard = crate::Outboard::build(file.reader(), len).unwrap();
        assert_eq!(
            outboard.root(),
            *blake3::hash(&std::fs::read(&path).unwrap()).as_bytes()
        );
        assert!(file.trust_if_unchanged(check), "unchanged: trusted");
        file.distrust();

        let check = file.begin_trust_check();
        let mut reader = EditMidway {
            inner: file.reader(),
            path: &path,
            reads: 0,
        };
        crate::Outboard::build(&mut reader, len).unwrap();
        assert!(reader.reads > 2, "the edit fell inside the hash");
        assert!(!file.trust_if_unchanged(check));
        assert!(!file.is_trusted() && !file.still_trusted());
    }

    #[test]
    fn subtrees_split_as_blake3_does() {
        let cvs = [[0u8; 32]; 9];
        let sizes = |n: usize| {
            let (l, r) = split_subtrees(&cvs[..n]);
            (l.len(), r.len())
        };
        assert_eq!(sizes(2), (1, 1));
        assert_eq!(sizes(3), (2, 1));
        assert_eq!(sizes(4), (2, 2));
        assert_eq!(sizes(5), (4, 1));
        assert_eq!(sizes(8), (4, 4));
        assert_eq!(sizes(9), (8, 1));
    }

    #[test]
    fn piece_lengths_are_bounded_powers_of_two() {
        for (len, threads) in [
            (0, 2),
            (5 << 20, 2),
            (1 << 30, 2),
            (1 << 40, 4),
            (u64::MAX, 1),
        ] {
            let p = hash_piece_len(len, threads);
            assert!(
                p.is_power_of_two() && (1 << 20..=64 << 20).contains(&p),
                "{len}: {p}"
            );
        }
        assert_eq!(hash_piece_len(1 << 30, 2), 64 << 20);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Hashed in pieces by several threads, any file hashes to its BLAKE3 hash.
        #[test]
        fn parallel_hash_is_blake3(
            len in 0u64..40_000,
            piece_log in 10u32..14,
            threads in 1usize..5,
            seed in proptest::prelude::any::<u64>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            write_pseudo_random(&path, len, seed).unwrap();
            let file = DataFile::open(&path).unwrap();
            let want = blake3::hash(&std::fs::read(&path).unwrap());
            proptest::prop_assert_eq!(file.hash_with(threads, 1 << piece_log, &[]).unwrap().0, *want.as_bytes());
        }
    }

    #[test]
    fn parallel_hash_of_a_large_file_is_blake3() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let len = (9 << 20) + 12_345;
        write_pseudo_random(&path, len, 7).unwrap();
        let file = DataFile::open(&path).unwrap();
        let want = *blake3::hash(&std::fs::read(&path).unwrap()).as_bytes();
        assert_eq!(file.hash_with(3, 1 << 20, &[]).unwrap().0, want);
        assert_eq!(file.hash().unwrap(), want);
    }
}
