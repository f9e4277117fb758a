//! Rarest-first without scanning: pieces kept in availability buckets.
//!
//! As libtorrent's piece picker does, pieces are held in one array sorted by how many peers have
//! them, with the start of each count's bucket remembered. A peer gaining or losing a piece moves
//! it one bucket by swapping it with the bucket's edge: O(1). A picker walks the array from the
//! rarest bucket and stops after a bounded number of probes, so one decision costs the same
//! whatever the file size. Pieces we already hold sit in a final "done" bucket and are never
//! probed.
//!
//! Moving pieces by swaps with the bucket's edge orders each bucket by the order the pieces
//! arrived in, not by the initial shuffle: a peer's bitfield moves every piece it has up one
//! bucket in index order, which leaves that bucket in reverse index order on every node that
//! reads it, whatever each node's shuffle. Nodes that all walk the rarest bucket in the same
//! order ask a seeder for the same pieces at the same time (`dev/SIMULATION.md`, "The flat
//! path's collapse on flash-crowd"). A *scattered* [`Rarity`] (as libtorrent's piece picker
//! does) therefore also swaps each piece that changes bucket with a random member of its new
//! bucket, from a generator of its own, so every node walks a bucket in an order of its own:
//! still O(1) per move.

/// Availability buckets over pieces `0..n`.
#[derive(Debug, Clone)]
pub struct Rarity {
    /// Pieces sorted by bucket.
    order: Vec<u32>,
    /// Position of each piece in `order`.
    pos: Vec<u32>,
    /// Bucket of each piece: its count, or `parked` while not a candidate.
    bucket: Vec<u16>,
    /// Peer count of each piece, kept while parked.
    count: Vec<u16>,
    /// `start[c]` = index in `order` of the first piece of bucket `c`.
    start: Vec<u32>,
    parked: u16,
    /// State of the generator that places a piece at a random position of the bucket it moves
    /// to; `None`: pieces stay at the bucket's edge.
    scatter: Option<u64>,
}

impl Rarity {
    /// `n` pieces, all with count 0, listed in `initial` order within their bucket (a seeded
    /// shuffle, so that different nodes start on different pieces). Counts are capped at
    /// `max_count`: peers beyond it do not change a piece's rank.
    pub fn new(initial: Vec<u32>, max_count: u16) -> Self {
        let n = initial.len();
        let parked = max_count.saturating_add(1);
        let mut start = vec![n as u32; parked as usize + 2];
        start[0] = 0;
        let mut pos = vec![0u32; n];
        for (i, &p) in initial.iter().enumerate() {
            pos[p as usize] = i as u32;
        }
        Rarity {
            order: initial,
            pos,
            bucket: vec![0; n],
            count: vec![0; n],
            start,
            parked,
            scatter: None,
        }
    }

    /// As [`Rarity::new`], but each piece that changes bucket then takes a random place in its
    /// new bucket, drawn from a generator seeded with `seed` (see the module documentation).
    pub fn scattered(initial: Vec<u32>, max_count: u16, seed: u64) -> Self {
        Rarity {
            scatter: Some(seed),
            ..Rarity::new(initial, max_count)
        }
    }

    /// Swaps `piece` with a random member of its bucket, if this rarity scatters.
    fn scatter(&mut self, piece: u32) {
        let Some(state) = self.scatter.as_mut() else {
            return;
        };
        let c = self.bucket[piece as usize] as usize;
        let (from, to) = (self.start[c], self.start[c + 1]);
        let len = u64::from(to - from);
        if len < 2 {
            return;
        }
        let x = crate::mix::splitmix(*state);
        *state = state.wrapping_add(crate::mix::GOLDEN);
        // Multiply-high: a uniform index below `len` (bias below 2^-32).
        let j = from + ((u128::from(x) * u128::from(len)) >> 64) as u32;
        self.swap(self.pos[piece as usize], j);
    }

    /// Number of pieces.
    pub fn len(&self) -> u64 {
        self.order.len() as u64
    }

    /// Whether there are no pieces.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Moves `piece` from its bucket `c` to `c + 1` (it becomes the first of `c + 1`).
    fn up(&mut self, piece: u32) {
        let c = self.bucket[piece as usize] as usize;
        let last = self.start[c + 1] - 1;
        self.swap(self.pos[piece as usize], last);
        self.start[c + 1] -= 1;
        self.bucket[piece as usize] += 1;
    }

    /// Moves `piece` from bucket `c` to `c - 1` (it becomes the last of `c - 1`).
    fn down(&mut self, piece: u32) {
        let c = self.bucket[piece as usize] as usize;
        let first = self.start[c];
        self.swap(self.pos[piece as usize], first);
        self.start[c] += 1;
        self.bucket[piece as usize] -= 1;
    }

    fn swap(&mut self, i: u32, j: u32) {
        let (a, b) = (self.order[i as usize], self.order[j as usize]);
        self.order.swap(i as usize, j as usize);
        self.pos[a as usize] = j;
        self.pos[b as usize] = i;
    }

    fn move_to(&mut self, piece: u32, target: u16) {
        if self.bucket[piece as usize] == target {
            return;
        }
        while self.bucket[piece as usize] < target {
            self.up(piece);
        }
        while self.bucket[piece as usize] > target {
            self.down(piece);
        }
        self.scatter(piece);
    }

    fn is_parked(&self, piece: usize) -> bool {
        self.bucket[piece] == self.parked
    }

    /// One more peer has `piece`.
    pub fn inc(&mut self, piece: u64) {
        let p = piece as usize;
        if p < self.count.len() && self.count[p] < self.parked - 1 {
            self.count[p] += 1;
            if !self.is_parked(p) {
                self.up(piece as u32);
                self.scatter(piece as u32);
            }
        }
    }

    /// One peer fewer has `piece` (it left). Counts never go below zero.
    pub fn dec(&mut self, piece: u64) {
        let p = piece as usize;
        if p < self.count.len() && self.count[p] > 0 {
            self.count[p] -= 1;
            if !self.is_parked(p) {
                self.down(piece as u32);
                self.scatter(piece as u32);
            }
        }
    }

    /// Takes `piece` out of the candidates (we hold it, or all of it is already requested).
    /// O(max_count).
    pub fn park(&mut self, piece: u64) {
        if (piece as usize) < self.count.len() {
            self.move_to(piece as u32, self.parked);
        }
    }

    /// Returns `piece` to the candidates at its current count. O(max_count).
    pub fn unpark(&mut self, piece: u64) {
        let p = piece as usize;
        if p < self.count.len() && self.is_parked(p) {
            self.move_to(piece as u32, self.count[p]);
        }
    }

    /// The peer count of `piece`.
    pub fn count(&self, piece: u64) -> u16 {
        self.count.get(piece as usize).copied().unwrap_or(0)
    }

    /// Whether `piece` is parked.
    pub fn parked(&self, piece: u64) -> bool {
        (piece as usize) < self.count.len() && self.is_parked(piece as usize)
    }

    /// Unparked pieces that at least one peer has, rarest first.
    pub fn candidates(&self) -> impl Iterator<Item = u64> + '_ {
        let (from, to) = (
            self.start[1] as usize,
            self.start[self.parked as usize] as usize,
        );
        self.order[from..to].iter().map(|&p| p as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn buckets_match_counts(
            ops in proptest::collection::vec((0u64..40, 0u8..3), 0..300),
            scatter in proptest::option::of(proptest::num::u64::ANY),
        ) {
            let initial = (0..40).rev().collect();
            let mut r = match scatter {
                Some(seed) => Rarity::scattered(initial, 5, seed),
                None => Rarity::new(initial, 5),
            };
            let mut counts = [0u16; 40];
            let mut parked = [false; 40];
            for (p, op) in ops {
                let i = p as usize;
                match op {
                    0 => { r.inc(p); counts[i] = (counts[i] + 1).min(5); }
                    1 => { r.dec(p); counts[i] = counts[i].saturating_sub(1); }
                    _ if parked[i] => { r.unpark(p); parked[i] = false; }
                    _ => { r.park(p); parked[i] = true; }
                }
            }
            let got: Vec<u64> = r.candidates().collect();
            let got_counts: Vec<u16> = got.iter().map(|&p| counts[p as usize]).collect();
            let mut sorted = got_counts.clone();
            sorted.sort();
            prop_assert_eq!(&got_counts, &sorted);
            let mut want: Vec<u64> = (0..40).filter(|&p| counts[p as usize] > 0 && !parked[p as usize]).collect();
            let mut g = got.clone();
            g.sort();
            want.sort();
            prop_assert_eq!(g, want);
            for p in 0..40u64 {
                prop_assert_eq!(r.count(p), counts[p as usize]);
                prop_assert_eq!(r.parked(p), parked[p as usize]);
            }
        }
    }

    /// A peer's bitfield moves its pieces up in index order: plain buckets end in that order
    /// (reversed) whatever the shuffle, scattered ones in an order of each seed's own.
    #[test]
    fn scattered_buckets_forget_the_order_pieces_arrived_in() {
        let walk = |mut r: Rarity| {
            for p in 0..64 {
                r.inc(p);
            }
            r.candidates().collect::<Vec<u64>>()
        };
        let shuffle_a: Vec<u32> = (0..64).map(|p| (p * 37) % 64).collect();
        let shuffle_b: Vec<u32> = (0..64).map(|p| (p * 13 + 5) % 64).collect();
        let reversed: Vec<u64> = (0..64).rev().collect();
        assert_eq!(walk(Rarity::new(shuffle_a.clone(), 5)), reversed);
        assert_eq!(walk(Rarity::new(shuffle_b.clone(), 5)), reversed);
        let a = walk(Rarity::scattered(shuffle_a, 5, 1));
        let b = walk(Rarity::scattered(shuffle_b, 5, 2));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..64).collect::<Vec<u64>>(), "every piece, once");
        assert_ne!(a, reversed);
        assert_ne!(a, b);
        let same_first = a.iter().zip(&b).take(16).filter(|(x, y)| x == y).count();
        assert!(same_first <= 2, "{a:?} {b:?}");
    }
}
