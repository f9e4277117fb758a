//! Unit verification and writes off the session loop: a small pool of plain threads, so it
//! works the same under every runtime (nothing here knows one).
//!
//! The loop hands a received unit over as a [`VerifyJob`] (the session returned
//! [`Verdict::Later`](tierswarm_core::node::Verdict::Later) to the core); a worker checks it
//! against the content root, writes it to the data file, and the loop feeds the
//! [`Verified`] outcome back to the session ([`Session::on_verified`](super::Session::on_verified)).
//! BLAKE3 over 64 KiB and a `pwrite` cost tens of microseconds per unit: on the loop they held
//! up reading the sockets and answering requests.

use std::io;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tierswarm_core::PeerId;

use crate::content::{verify_unit_value, UnitProof};
use crate::DataFile;

/// Most worker threads of one pool.
const MAX_WORKERS: usize = 4;

/// A received unit to verify and write.
#[derive(Debug, Clone)]
pub struct VerifyJob {
    pub(super) peer: PeerId,
    pub(super) unit: u64,
    pub(super) data: Bytes,
    pub(super) proof: UnitProof,
    pub(super) root: [u8; 32],
    pub(super) file_len: u64,
    pub(super) file: Arc<DataFile>,
}

/// What became of a [`VerifyJob`].
#[derive(Debug)]
pub struct Verified {
    pub(super) peer: PeerId,
    pub(super) unit: u64,
    pub(super) proof: UnitProof,
    pub(super) result: Result<(), VerifyFail>,
}

/// Why a unit was not stored.
#[derive(Debug)]
pub(super) enum VerifyFail {
    /// It does not match its proof.
    Invalid(String),
    /// Writing it failed.
    Io(io::Error),
}

impl VerifyJob {
    /// Verifies the unit, then writes it (only if it verified) and, on a download's output, reads
    /// it back and keeps its value for the final check ([`read_back`](crate::read_back)). The
    /// write drops the data file's trust first ([`DataFile::write_verified_unit`]): until its
    /// whole file is checked again, a download serves unhashed only the units it wrote itself
    /// ([`DataFile::vouches_for`]).
    pub fn run(self) -> Verified {
        let result = verify_unit_value(
            &self.root,
            self.file_len,
            self.unit,
            &self.data,
            &self.proof,
        )
        .map_err(|e| VerifyFail::Invalid(e.to_string()))
        .and_then(|verified| {
            self.file
                .write_verified_unit(verified)
                .map_err(VerifyFail::Io)
        });
        Verified {
            peer: self.peer,
            unit: self.unit,
            proof: self.proof,
            result,
        }
    }
}

type Task = Box<dyn FnOnce() + Send>;

/// A fixed pool of worker threads; they end once the pool is dropped and their queue is empty.
#[derive(Debug)]
pub struct Workers {
    tx: Sender<Task>,
}

impl Workers {
    /// One thread per core, at most four.
    pub fn new() -> io::Result<Workers> {
        let n = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_WORKERS);
        let (tx, rx) = channel::<Task>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..n {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("tierswarm-verify-{i}"))
                .spawn(move || work(&rx))?;
        }
        Ok(Workers { tx })
    }

    /// Runs `job` on a worker, then `done` with its outcome (on that worker's thread).
    pub fn submit(&self, job: VerifyJob, done: impl FnOnce(Verified) + Send + 'static) {
        // The workers outlive every sender (they end when the queue closes): sending cannot fail.
        let _ = self.tx.send(Box::new(move || done(job.run())));
    }
}

fn work(rx: &Mutex<Receiver<Task>>) {
    loop {
        // The lock is held only to take one task.
        let task = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        match task {
            Ok(task) => task(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Outboard;

    #[test]
    fn a_worker_writes_a_unit_that_verifies_and_only_that() {
        let dir = tempfile::tempdir().unwrap();
        let len = 3 * 65536 + 100;
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let src = dir.path().join("src");
        std::fs::write(&src, &data).unwrap();
        let outboard = Outboard::build(std::fs::File::open(&src).unwrap(), len as u64).unwrap();
        let out = Arc::new(DataFile::create(dir.path().join("out"), len as u64).unwrap());
        let job = |unit: u64, bytes: &[u8]| VerifyJob {
            peer: PeerId(1),
            unit,
            data: Bytes::copy_from_slice(bytes),
            proof: outboard.proof(unit).unwrap(),
            root: outboard.root(),
            file_len: len as u64,
            file: Arc::clone(&out),
        };
        let workers = Workers::new().unwrap();
        let (tx, rx) = channel();
        let good = &data[65536..2 * 65536];
        let mut bad = data[2 * 65536..3 * 65536].to_vec();
        bad[5] ^= 1;
        for j in [job(1, good), job(2, &bad)] {
            let tx = tx.clone();
            workers.submit(j, move |v| tx.send(v).unwrap());
        }
        let mut results: Vec<Verified> = (0..2).map(|_| rx.recv().unwrap()).collect();
        results.sort_by_key(|v| v.unit);
        assert!(results[0].result.is_ok());
        assert!(matches!(results[1].result, Err(VerifyFail::Invalid(_))));
        assert_eq!(&out.read_unit(1).unwrap()[..], good);
        assert!(
            out.read_unit(2).unwrap().iter().all(|b| *b == 0),
            "a bad unit was written"
        );
    }
}
