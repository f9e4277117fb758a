//! The run's trace hash: BLAKE3 over one 33-byte record per message sent, kept per sending
//! node (each node's records in the order it sent them), then BLAKE3 over the nodes' digests in
//! node order. Per node, so that the hash does not depend on how the nodes' work of one window
//! was interleaved or spread over threads.
//!
//! Records are gathered in a buffer and hashed a block of them at a time: BLAKE3's output does
//! not depend on how its input is split between updates, and long updates let it hash many
//! 1 KiB chunks at once with SIMD instead of compressing 64 bytes per call.

/// Bytes gathered before they are hashed: 4 KiB of records (a multiple of BLAKE3's chunk size;
/// one buffer per node).
const BATCH: usize = 4 * 1024;

/// Bytes in one message's record: time, sender, receiver, unit (8 each), kind (1).
pub(super) const RECORD: usize = 33;

/// A BLAKE3 hasher fed whole records through a buffer.
pub(super) struct TraceDigest {
    hasher: blake3::Hasher,
    pending: Vec<u8>,
}

impl TraceDigest {
    pub(super) fn new() -> TraceDigest {
        TraceDigest {
            hasher: blake3::Hasher::new(),
            pending: Vec::with_capacity(BATCH + RECORD),
        }
    }

    /// Appends one record to the hashed stream.
    pub(super) fn record(&mut self, rec: &[u8; RECORD]) {
        self.pending.extend_from_slice(rec);
        if self.pending.len() >= BATCH {
            self.hasher.update(&self.pending);
            self.pending.clear();
        }
    }

    /// The hash of every record so far.
    pub(super) fn finalize(&self) -> blake3::Hash {
        let mut h = self.hasher.clone();
        h.update(&self.pending);
        h.finalize()
    }

    /// The hash of every record so far, as lowercase hex.
    #[cfg(test)]
    pub(super) fn finalize_hex(&self) -> String {
        self.finalize().to_hex().to_string()
    }
}

/// The run's trace hash from the nodes' digests, in node order, as lowercase hex.
pub(super) fn combine<'d>(nodes: impl IntoIterator<Item = &'d TraceDigest>) -> String {
    let mut h = blake3::Hasher::new();
    for d in nodes {
        h.update(d.finalize().as_bytes());
    }
    h.finalize().to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batching_does_not_change_the_hash() {
        // Record counts around the batch boundary, and a long run over several batches.
        for n in [
            0,
            1,
            2,
            BATCH / RECORD,
            BATCH / RECORD + 1,
            3 * BATCH / RECORD + 7,
        ] {
            let mut plain = blake3::Hasher::new();
            let mut batched = TraceDigest::new();
            for k in 0..n {
                let mut rec = [0u8; RECORD];
                rec[..8].copy_from_slice(&(k as u64).to_le_bytes());
                rec[32] = (k % 251) as u8;
                plain.update(&rec);
                batched.record(&rec);
            }
            assert_eq!(
                batched.finalize_hex(),
                plain.finalize().to_hex().to_string(),
                "{n} records"
            );
        }
    }
}
