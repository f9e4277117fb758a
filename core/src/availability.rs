//! Availability: what we hold ([`LocalTiers`]) and what we know a remote peer holds
//! ([`PeerView`]).
//!
//! Local availability is kept at all three tiers. A T2 bit is set exactly when every existing T1
//! unit under it is present, a T3 bit exactly when every existing T2 block under it is; the final
//! partial block of a tier promotes when its *existing* children are present. Promotion is
//! idempotent.
//!
//! A coarse block's state is told to peers with **two bits**: *all* (every unit present) and
//! *partial* (some but not all). A downloader can then tell a block it need not refine (all), one
//! worth refining (partial) and one to skip (neither) without any round trip; see
//! `dev/PROTOCOL.md` ("What a coarse bit means").
//!
//! ```
//! use tierswarm_core::{Geometry, LocalTiers, Tier};
//! let geo = Geometry::new(40 * 1024 * 1024).unwrap(); // 640 units, two T3 blocks
//! let mut local = LocalTiers::new(geo);
//! for unit in 0..32 {
//!     local.mark_t1_complete(unit).unwrap();
//! }
//! assert!(local.has_at_tier(Tier::T2, 0));
//! assert!(!local.has_at_tier(Tier::T3, 0));
//! let s = local.summary(Tier::T3, 0, 2).unwrap();
//! assert_eq!((s.all.get(0), s.partial.get(0)), (false, true));
//! ```

use crate::bitfield::{Bitfield, BitfieldError, BlockMask};
use crate::tiers::{Geometry, Tier, TierError};
use crate::time::Timestamp;
use core::time::Duration;

/// What changed when a unit was marked complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Promotion {
    /// The unit was not present before.
    pub newly_set: bool,
    /// The T2 block that became complete, if any.
    pub t2: Option<u64>,
    /// The T3 block that became complete, if any.
    pub t3: Option<u64>,
    /// The T3 block that went from empty to partial, if any.
    pub t3_started: Option<u64>,
}

/// The two-bit state of a window of coarse blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Tier of the blocks.
    pub tier: Tier,
    /// First block of the window.
    pub start: u64,
    /// Blocks whose every unit is present.
    pub all: Bitfield,
    /// Blocks with some but not all units present.
    pub partial: Bitfield,
}

/// Errors from tier state that does not hang together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsistencyError {
    /// A bitfield whose length does not match the geometry.
    #[error("{tier:?} bitfield has {got} bits, geometry needs {expected}")]
    Length {
        /// Tier of the bitfield.
        tier: Tier,
        /// Bits expected.
        expected: u64,
        /// Bits present.
        got: u64,
    },
    /// A coarse bit that disagrees with its children.
    #[error("{tier:?} bit {index} is {}, but its children say otherwise", if *.stored { "set" } else { "clear" })]
    Tier {
        /// Tier of the bit.
        tier: Tier,
        /// Block index.
        index: u64,
        /// What was stored.
        stored: bool,
    },
}

/// Local availability at the three tiers, with promotion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTiers {
    geo: Geometry,
    t1: Bitfield,
    t2: Bitfield,
    t3: Bitfield,
    /// Units present per T3 block (at most 512): makes the partial bit and the
    /// empty→partial transition O(1).
    t3_units: Vec<u16>,
    /// Units present in all (so that progress and completeness are O(1)).
    present: u64,
}

impl LocalTiers {
    /// Nothing present.
    pub fn new(geo: Geometry) -> Self {
        LocalTiers {
            geo,
            t1: Bitfield::new(geo.units()),
            t2: Bitfield::new(geo.blocks(Tier::T2)),
            t3: Bitfield::new(geo.blocks(Tier::T3)),
            t3_units: vec![0; geo.blocks(Tier::T3) as usize],
            present: 0,
        }
    }

    /// Everything present (a seeder).
    pub fn full(geo: Geometry) -> Self {
        let t1 = Bitfield::full(geo.units());
        Self::from_t1(geo, t1).expect("length matches by construction")
    }

    /// Rebuilds the coarse tiers from a T1 bitfield (the backward-compatible load path).
    pub fn from_t1(geo: Geometry, t1: Bitfield) -> Result<Self, ConsistencyError> {
        check_len(Tier::T1, geo.units(), &t1)?;
        let mut t = LocalTiers::new(geo);
        for b in 0..geo.blocks(Tier::T3) {
            let r = geo.unit_range(Tier::T3, b).expect("in range");
            t.t3_units[b as usize] = t1.count_ones_in(r) as u16;
        }
        t.present = t1.count_ones();
        t.t1 = t1;
        for b in 0..geo.blocks(Tier::T2) {
            t.promote_if_complete(Tier::T2, b);
        }
        for b in 0..geo.blocks(Tier::T3) {
            t.promote_if_complete(Tier::T3, b);
        }
        Ok(t)
    }

    /// Builds from all three stored bitfields, checking that the coarse ones agree with T1
    /// exactly (a set bit with a missing child, or a clear bit over complete children, is
    /// rejected with its tier and index).
    pub fn from_parts(
        geo: Geometry,
        t1: Bitfield,
        t2: Bitfield,
        t3: Bitfield,
    ) -> Result<Self, ConsistencyError> {
        check_len(Tier::T2, geo.blocks(Tier::T2), &t2)?;
        check_len(Tier::T3, geo.blocks(Tier::T3), &t3)?;
        let rebuilt = Self::from_t1(geo, t1)?;
        for (tier, stored, want) in [(Tier::T2, &t2, &rebuilt.t2), (Tier::T3, &t3, &rebuilt.t3)] {
            if stored != want {
                let index = (0..stored.len())
                    .find(|&i| stored.get(i) != want.get(i))
                    .expect("bitfields differ somewhere");
                return Err(ConsistencyError::Tier {
                    tier,
                    index,
                    stored: stored.get(index),
                });
            }
        }
        Ok(rebuilt)
    }

    /// The geometry.
    pub fn geometry(&self) -> Geometry {
        self.geo
    }

    /// The bitfield of one tier.
    pub fn bitfield(&self, tier: Tier) -> &Bitfield {
        match tier {
            Tier::T1 => &self.t1,
            Tier::T2 => &self.t2,
            Tier::T3 => &self.t3,
        }
    }

    /// Number of units present.
    pub fn units_present(&self) -> u64 {
        self.present
    }

    /// Whether every unit is present.
    pub fn is_complete(&self) -> bool {
        self.present == self.geo.units()
    }

    /// Records that `unit` is present (verified) and promotes what it completes.
    pub fn mark_t1_complete(&mut self, unit: u64) -> Result<Promotion, TierError> {
        self.geo.check(Tier::T1, unit)?;
        let mut p = Promotion::default();
        if !self.t1.set(unit) {
            return Ok(p);
        }
        p.newly_set = true;
        self.present += 1;
        let b3 = self.geo.parent_of(Tier::T1, unit, Tier::T3);
        let n = &mut self.t3_units[b3 as usize];
        *n += 1;
        if *n == 1 {
            p.t3_started = Some(b3);
        }
        let b2 = self.geo.parent_of(Tier::T1, unit, Tier::T2);
        if self.promote_if_complete(Tier::T2, b2) {
            p.t2 = Some(b2);
            if self.promote_if_complete(Tier::T3, b3) {
                p.t3 = Some(b3);
            }
        }
        Ok(p)
    }

    /// Sets the bit of block `index` at `tier` if all its existing children are present;
    /// returns whether it was newly set. Idempotent; false for T1 and out-of-range indices.
    pub fn promote_if_complete(&mut self, tier: Tier, index: u64) -> bool {
        let (child, target) = match tier {
            Tier::T1 => return false,
            Tier::T2 => (&self.t1, &mut self.t2),
            Tier::T3 => (&self.t2, &mut self.t3),
        };
        let child_tier = if tier == Tier::T2 { Tier::T1 } else { Tier::T2 };
        let Ok(r) = self.geo.child_range(tier, index, child_tier) else {
            return false;
        };
        if target.get(index) || !child.all_in(r) {
            return false;
        }
        target.set(index)
    }

    /// Whether block `index` of `tier` is wholly present.
    pub fn has_at_tier(&self, tier: Tier, index: u64) -> bool {
        self.bitfield(tier).get(index)
    }

    /// Whether at least one unit of block `index` of `tier` is present.
    pub fn has_any(&self, tier: Tier, index: u64) -> bool {
        match tier {
            Tier::T3 => self.t3_units.get(index as usize).is_some_and(|&n| n > 0),
            _ => self
                .geo
                .unit_range(tier, index)
                .is_ok_and(|r| self.t1.any_in(r)),
        }
    }

    /// Units present in T3 block `index`.
    pub fn units_in_t3(&self, index: u64) -> u64 {
        self.t3_units.get(index as usize).map_or(0, |&n| n as u64)
    }

    /// The T1 units of block `index` at `tier`.
    pub fn t1_range(&self, tier: Tier, index: u64) -> Result<core::ops::Range<u64>, TierError> {
        self.geo.unit_range(tier, index)
    }

    /// The two-bit summary of blocks `start .. start + len` at `tier` (clamped to the file;
    /// `start` must be a block). Costs time proportional to the window.
    pub fn summary(&self, tier: Tier, start: u64, len: u64) -> Result<Summary, TierError> {
        let count = self.geo.blocks(tier);
        if start > count || (start == count && len > 0) {
            return Err(TierError::IndexOutOfRange {
                tier,
                index: start,
                count,
            });
        }
        let all = self.bitfield(tier).window(start, len);
        let mut partial = Bitfield::new(all.len());
        for i in 0..all.len() {
            if !all.get(i) && self.has_any(tier, start + i) {
                partial.set(i);
            }
        }
        Ok(Summary {
            tier,
            start,
            all,
            partial,
        })
    }
}

fn check_len(tier: Tier, expected: u64, b: &Bitfield) -> Result<(), ConsistencyError> {
    if b.len() == expected {
        Ok(())
    } else {
        Err(ConsistencyError::Length {
            tier,
            expected,
            got: b.len(),
        })
    }
}

/// Errors from applying what a peer claims; each one costs the peer its connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// A window starting or reaching past the last block of its tier.
    #[error(
        "peer claims {tier:?} blocks past the end of the file (start {start}, {count} blocks)"
    )]
    PastEnd {
        /// Tier of the claim.
        tier: Tier,
        /// Window start.
        start: u64,
        /// Blocks at that tier.
        count: u64,
    },
    /// Malformed bits.
    #[error("malformed availability bits: {0}")]
    Bits(#[from] BitfieldError),
    /// A summary at a tier this view does not take.
    #[error("summary at {0:?} not accepted here")]
    WrongTier(Tier),
}

/// What we know about one unit at one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Knowledge {
    /// The peer has it.
    Has,
    /// The peer does not have it (as far as we know).
    Lacks,
    /// The peer has part of the unit's T3 block; refine to find out.
    Unknown,
}

/// Most refined T1 windows kept per capable peer. With 512-bit windows this bounds a peer's
/// view to `2 × T3 blocks / 8` bytes plus `MAX_WINDOWS × 64` bytes.
pub const MAX_WINDOWS: usize = 32;

/// What one peer is known to hold of one T3 block, as the holder counts of the node see it:
/// the whole block, or the units of its refined window (none: nothing known unit by unit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Contribution {
    /// The peer has every unit of the block.
    Whole,
    /// The units of the block the peer's refined window shows (bit `j` = unit `j` of the block).
    Units(BlockMask),
}

/// One change of a [`Contribution`], in the order it happened.
pub(crate) type ContributionChange = (u64, Contribution, Contribution);

/// A refined T1 window over one T3 block of a capable peer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Window {
    block: u64,
    bits: Bitfield,
    last_used: u64,
    /// When the window was last refined (or told in news), how long that snapshot is trusted,
    /// and how many units it showed then (`None` for a window built only from pushed deltas or
    /// HAVEs).
    refreshed: Option<Refresh>,
}

/// The last refresh of a [`Window`]: when, for how long it is trusted, with how many units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refresh {
    at: Timestamp,
    ttl: Duration,
    units: u32,
}

/// What we know a capable (hierarchical) peer holds: two bits per T3 block plus a bounded set
/// of refined T1 windows. Knowledge only grows (peers never lose data) except that refined
/// windows may be evicted, least recently used first.
#[derive(Debug, Clone)]
pub struct TieredView {
    geo: Geometry,
    all: Bitfield,
    partial: Bitfield,
    windows: Vec<Window>,
    clock: u64,
    /// Contribution changes not yet taken by the node's holder counts (`None`: not logged, as
    /// for a view used outside a node). Taken after every input that changes the view, so it
    /// holds at most one message's worth.
    changes: Option<Vec<ContributionChange>>,
}

impl TieredView {
    /// Knows nothing yet.
    pub fn new(geo: Geometry) -> Self {
        let n = geo.blocks(Tier::T3);
        TieredView {
            geo,
            all: Bitfield::new(n),
            partial: Bitfield::new(n),
            windows: Vec::new(),
            clock: 0,
            changes: None,
        }
    }

    /// Starts logging contribution changes for [`TieredView::take_changes`].
    pub(crate) fn log_changes(&mut self) {
        self.changes.get_or_insert_with(Vec::new);
    }

    /// The contribution changes since the last call, oldest first.
    pub(crate) fn take_changes(&mut self) -> Vec<ContributionChange> {
        self.changes
            .as_mut()
            .map(core::mem::take)
            .unwrap_or_default()
    }

    /// What the peer is known to hold of T3 block `block`.
    pub(crate) fn contribution(&self, block: u64) -> Contribution {
        if self.all.get(block) {
            return Contribution::Whole;
        }
        let len = self.block_len(block);
        Contribution::Units(
            self.window(block)
                .map_or_else(BlockMask::default, |w| w.block_mask(0, len)),
        )
    }

    /// Every refined window, by block.
    pub(crate) fn windows(&self) -> impl Iterator<Item = (u64, &Bitfield)> + '_ {
        self.windows.iter().map(|w| (w.block, &w.bits))
    }

    fn block_len(&self, block: u64) -> u64 {
        self.geo
            .unit_range(Tier::T3, block)
            .map_or(0, |r| r.end - r.start)
    }

    fn record(&mut self, block: u64, old: Contribution, new: Contribution) {
        if let Some(c) = self.changes.as_mut() {
            if old != new {
                c.push((block, old, new));
            }
        }
    }

    /// Applies a T3 summary window (`all` and `partial` bits in wire bytes). Returns the T3
    /// blocks the peer is newly known to have some of (for availability counts).
    pub fn apply_summary(
        &mut self,
        start: u64,
        all: &[u8],
        partial: &[u8],
    ) -> Result<Vec<u64>, ClaimError> {
        let count = self.geo.blocks(Tier::T3);
        let span = (all.len().max(partial.len()) as u64) * 8;
        if start > count || (start == count && span > 0) {
            return Err(ClaimError::PastEnd {
                tier: Tier::T3,
                start,
                count,
            });
        }
        let all = Bitfield::from_window_bytes(all, count - start)?;
        let partial = Bitfield::from_window_bytes(partial, count - start)?;
        let mut newly = Vec::new();
        for i in all.iter_ones_in(0..all.len()) {
            let b = start + i;
            if !self.has_some(b) {
                newly.push(b);
            }
            if !self.all.get(b) {
                let old = self.contribution(b);
                self.all.set(b);
                self.partial.clear(b);
                self.windows.retain(|w| w.block != b);
                self.record(b, old, Contribution::Whole);
            }
        }
        for i in partial.iter_ones_in(0..partial.len()) {
            let b = start + i;
            if !self.has_some(b) {
                newly.push(b);
                self.partial.set(b);
            }
        }
        newly.sort_unstable();
        Ok(newly)
    }

    /// Applies refined bits of `tier` (T1 or T2) starting at block `start`: a refine response or
    /// a pushed delta. Bits land in the window of their T3 block, which is created if there is
    /// room (evicting the least recently used window). Returns the T3 blocks the peer is newly
    /// known to have some of.
    pub fn apply_refined(
        &mut self,
        tier: Tier,
        start: u64,
        bits: &[u8],
    ) -> Result<Vec<u64>, ClaimError> {
        if tier == Tier::T3 {
            return Err(ClaimError::WrongTier(tier));
        }
        let count = self.geo.blocks(tier);
        if start > count || (start == count && !bits.is_empty()) {
            return Err(ClaimError::PastEnd { tier, start, count });
        }
        let bits = Bitfield::from_window_bytes(bits, count - start)?;
        let mut newly = Vec::new();
        if tier == Tier::T1 {
            // Unit windows (pushed deltas, refine responses): merge a block's segment at once.
            let end = start + bits.len();
            let mut u = start;
            while u < end {
                let b3 = self.geo.parent_of(Tier::T1, u, Tier::T3);
                let block = self.geo.unit_range(Tier::T3, b3).expect("unit exists");
                let seg_end = end.min(block.end);
                let seg = bits.window(u - start, seg_end - u);
                if !self.all.get(b3) && seg.count_ones() > 0 {
                    if self.partial.set(b3) {
                        newly.push(b3);
                    }
                    let old = self.contribution(b3);
                    self.window_mut(b3).merge_window(u - block.start, &seg);
                    self.record(b3, old, self.contribution(b3));
                }
                u = seg_end;
            }
            return Ok(newly);
        }
        for i in bits.iter_ones_in(0..bits.len()) {
            let units = self.geo.unit_range(tier, start + i).expect("checked above");
            let b3 = self.geo.parent_of(Tier::T1, units.start, Tier::T3);
            if self.all.get(b3) {
                continue;
            }
            if self.partial.set(b3) {
                newly.push(b3);
            }
            let base = self
                .geo
                .unit_range(Tier::T3, b3)
                .expect("parent exists")
                .start;
            let old = self.contribution(b3);
            self.window_mut(b3)
                .set_range(units.start - base..units.end - base);
            self.record(b3, old, self.contribution(b3));
        }
        Ok(newly)
    }

    /// Records that an empty refinement came back for `block` (the peer has no units there we
    /// did not know of): keeps an (empty) window so the block is not refined again at once.
    pub fn note_refined(&mut self, block: u64) {
        if block < self.geo.blocks(Tier::T3) && !self.all.get(block) {
            self.window_mut(block);
        }
    }

    /// Records that the window of `block` was refined at `at` and is trusted for `ttl` (no-op
    /// without a window: the peer has the whole block, or nothing is known).
    pub fn note_refreshed(&mut self, block: u64, at: Timestamp, ttl: Duration) {
        if let Some(w) = self.windows.iter_mut().find(|w| w.block == block) {
            let units = w.bits.count_ones() as u32;
            w.refreshed = Some(Refresh { at, ttl, units });
        }
    }

    /// When the window of `block` was last refined and for how long it is trusted.
    pub fn freshness(&self, block: u64) -> Option<(Timestamp, Duration)> {
        self.last_refresh(block).map(|(at, ttl, _)| (at, ttl))
    }

    /// When the window of `block` was last refined, for how long it is trusted, and how many
    /// units it showed then.
    pub fn last_refresh(&self, block: u64) -> Option<(Timestamp, Duration, u64)> {
        self.windows
            .iter()
            .find(|w| w.block == block)
            .and_then(|w| w.refreshed)
            .map(|r| (r.at, r.ttl, u64::from(r.units)))
    }

    /// Applies a HAVE for one unit. Returns its T3 block if the peer is newly known to have
    /// some of it.
    pub fn apply_have(&mut self, unit: u64) -> Result<Option<u64>, ClaimError> {
        let bytes = [0x80u8];
        let count = self.geo.units();
        if unit >= count {
            return Err(ClaimError::PastEnd {
                tier: Tier::T1,
                start: unit,
                count,
            });
        }
        Ok(self
            .apply_refined(Tier::T1, unit, &bytes[..])?
            .first()
            .copied())
    }

    fn window_mut(&mut self, block: u64) -> &mut Bitfield {
        self.clock += 1;
        let clock = self.clock;
        if let Some(i) = self.windows.iter().position(|w| w.block == block) {
            self.windows[i].last_used = clock;
            return &mut self.windows[i].bits;
        }
        if self.windows.len() >= MAX_WINDOWS {
            let lru = (0..self.windows.len())
                .min_by_key(|&i| self.windows[i].last_used)
                .expect("non-empty");
            let gone = self.windows.swap_remove(lru);
            let len = gone.bits.len();
            let old = Contribution::Units(gone.bits.block_mask(0, len));
            self.record(gone.block, old, Contribution::Units(BlockMask::default()));
        }
        let len = self
            .geo
            .unit_range(Tier::T3, block)
            .map_or(0, |r| r.end - r.start);
        self.windows.push(Window {
            block,
            bits: Bitfield::new(len),
            last_used: clock,
            refreshed: None,
        });
        &mut self.windows.last_mut().expect("just pushed").bits
    }

    /// Whether the peer has all of T3 block `block`.
    pub fn has_all(&self, block: u64) -> bool {
        self.all.get(block)
    }

    /// Whether the peer has some of T3 block `block` (all included).
    pub fn has_some(&self, block: u64) -> bool {
        self.all.get(block) || self.partial.get(block)
    }

    /// Whether we hold a refined window for T3 block `block`.
    pub fn is_refined(&self, block: u64) -> bool {
        self.windows.iter().any(|w| w.block == block)
    }

    /// The refined window of T3 block `block`, if held (bit i = unit `block·512 + i`).
    pub fn window(&self, block: u64) -> Option<&Bitfield> {
        self.windows
            .iter()
            .find(|w| w.block == block)
            .map(|w| &w.bits)
    }

    /// Forgets the refined window of `block` (it went stale).
    pub fn drop_window(&mut self, block: u64) {
        let old = self.contribution(block);
        self.windows.retain(|w| w.block != block);
        self.record(block, old, self.contribution(block));
    }

    /// What we know of `unit`.
    pub fn knowledge(&self, unit: u64) -> Knowledge {
        let b3 = self.geo.parent_of(Tier::T1, unit, Tier::T3);
        if unit >= self.geo.units() {
            Knowledge::Lacks
        } else if self.all.get(b3) {
            Knowledge::Has
        } else if let Some(w) = self.window(b3) {
            if w.get(unit - b3 * Tier::T3.units_per_block()) {
                Knowledge::Has
            } else if self.partial.get(b3) {
                Knowledge::Unknown
            } else {
                Knowledge::Lacks
            }
        } else if self.partial.get(b3) {
            Knowledge::Unknown
        } else {
            Knowledge::Lacks
        }
    }

    /// The `all` T3 bits.
    pub fn all_bits(&self) -> &Bitfield {
        &self.all
    }

    /// The `partial` T3 bits.
    pub fn partial_bits(&self) -> &Bitfield {
        &self.partial
    }

    /// Heap bytes held by this view.
    pub fn heap_bytes(&self) -> usize {
        self.all.as_bytes().len()
            + self.partial.as_bytes().len()
            + self.windows.capacity() * core::mem::size_of::<Window>()
            + self
                .windows
                .iter()
                .map(|w| w.bits.as_bytes().len())
                .sum::<usize>()
    }
}

/// What we know a remote peer holds.
#[derive(Debug, Clone)]
pub enum PeerView {
    /// A legacy peer: its full T1 bitfield.
    Flat(Bitfield),
    /// A capable peer: T3 summary plus refined windows.
    Tiered(TieredView),
}

impl PeerView {
    /// Whether the peer is known to have `unit`.
    pub fn has_unit(&self, unit: u64) -> bool {
        match self {
            PeerView::Flat(b) => b.get(unit),
            PeerView::Tiered(v) => v.knowledge(unit) == Knowledge::Has,
        }
    }

    /// Heap bytes held by this view.
    pub fn heap_bytes(&self) -> usize {
        match self {
            PeerView::Flat(b) => b.as_bytes().len(),
            PeerView::Tiered(v) => v.heap_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiers::{T1_SIZE, T3_SIZE};
    use proptest::prelude::*;

    fn naive(geo: Geometry, t1: &Bitfield) -> (Vec<bool>, Vec<bool>) {
        let t2 = (0..geo.blocks(Tier::T2))
            .map(|b| geo.unit_range(Tier::T2, b).unwrap().all(|u| t1.get(u)))
            .collect();
        let t3 = (0..geo.blocks(Tier::T3))
            .map(|b| geo.unit_range(Tier::T3, b).unwrap().all(|u| t1.get(u)))
            .collect();
        (t2, t3)
    }

    /// Units in a T3 block.
    const T3_UNITS: u64 = T3_SIZE / T1_SIZE;

    /// A file of 1..1600 units (up to four T3 blocks, the last one often partial) and the order
    /// its units are marked in: every unit of the T3 blocks `whole` picks (each with probability
    /// 1/2) and a `take` share of the rest, shuffled, with every fifth one marked twice. `take`
    /// is exactly 1.0 in half the cases, so the file completes and whole 512-unit blocks promote
    /// in a good share of cases (see `the_marking_generator_reaches_completion_and_whole_t3`).
    fn marking() -> impl Strategy<Value = (Geometry, Vec<u64>)> {
        (
            1u64..1600,
            0u64..T1_SIZE,
            any::<u64>(),
            any::<u8>(),
            prop_oneof![Just(1.0), 0.0f64..1.0],
        )
            .prop_map(|(units, tail, order_seed, whole, take)| {
                let geo = Geometry::new((units - 1) * T1_SIZE + tail.max(1)).unwrap();
                let mut order: Vec<u64> = (0..geo.units()).collect();
                let mut s = order_seed | 1;
                for i in (1..order.len()).rev() {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    order.swap(i, (s % (i as u64 + 1)) as usize);
                }
                let keep = (order.len() as f64 * take) as usize;
                let mut order: Vec<u64> = order
                    .into_iter()
                    .enumerate()
                    .filter(|&(i, u)| i < keep || whole >> (u / T3_UNITS) & 1 == 1)
                    .map(|(_, u)| u)
                    .collect();
                let dup: Vec<u64> = order.iter().step_by(5).copied().collect();
                order.extend(dup);
                (geo, order)
            })
    }

    /// Whether marking `order` completes the file, and whether it fills a whole 512-unit T3 block.
    fn reaches(geo: Geometry, order: &[u64]) -> (bool, bool) {
        let mut held = Bitfield::new(geo.units());
        for &u in order {
            held.set(u);
        }
        let whole_t3 = (0..geo.blocks(Tier::T3)).any(|b| {
            let units = geo.unit_range(Tier::T3, b).unwrap();
            units.end - units.start == T3_UNITS && units.clone().all(|u| held.get(u))
        });
        (held.count_ones() == geo.units(), whole_t3)
    }

    #[test]
    fn the_marking_generator_reaches_completion_and_whole_t3() {
        // The property below is only as good as the cases it sees: measure, on a fixed stream of
        // 1000 draws, how often a case completes the file and promotes a whole T3 block.
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut complete, mut whole_t3) = (0, 0);
        for _ in 0..1000 {
            let (geo, order) = marking().new_tree(&mut runner).unwrap().current();
            let (c, w) = reaches(geo, &order);
            complete += u32::from(c);
            whole_t3 += u32::from(w);
        }
        eprintln!("of 1000 cases: {complete} complete the file, {whole_t3} fill a whole T3 block");
        assert!(complete >= 450, "{complete}/1000 complete the file");
        assert!(whole_t3 >= 400, "{whole_t3}/1000 fill a whole T3 block");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn promotion_matches_naive_recomputation((geo, order) in marking()) {
            let mut local = LocalTiers::new(geo);
            for &u in &order {
                let before = local.clone();
                let p = local.mark_t1_complete(u).unwrap();
                prop_assert_eq!(p.newly_set, !before.has_at_tier(Tier::T1, u));
                let (t2, t3) = naive(geo, local.bitfield(Tier::T1));
                for (b, &want) in t2.iter().enumerate() {
                    prop_assert_eq!(local.has_at_tier(Tier::T2, b as u64), want);
                }
                for (b, &want) in t3.iter().enumerate() {
                    prop_assert_eq!(local.has_at_tier(Tier::T3, b as u64), want);
                    // A promotion is reported exactly when the block's bit goes up.
                    let rose = want && !before.has_at_tier(Tier::T3, b as u64);
                    prop_assert_eq!(p.t3 == Some(b as u64), rose);
                    let any = |l: &LocalTiers| {
                        geo.unit_range(Tier::T3, b as u64).unwrap().any(|u| l.has_at_tier(Tier::T1, u))
                    };
                    prop_assert_eq!(p.t3_started == Some(b as u64), any(&local) && !any(&before));
                }
                for (b, &want) in t2.iter().enumerate() {
                    let rose = want && !before.has_at_tier(Tier::T2, b as u64);
                    prop_assert_eq!(p.t2 == Some(b as u64), rose);
                }
            }
            let (complete, _) = reaches(geo, &order);
            prop_assert_eq!(local.is_complete(), complete);
            prop_assert_eq!(local.units_present() == geo.units(), complete);
            let rebuilt = LocalTiers::from_t1(geo, local.bitfield(Tier::T1).clone()).unwrap();
            prop_assert_eq!(&rebuilt, &local);
            let parts = LocalTiers::from_parts(
                geo,
                local.bitfield(Tier::T1).clone(),
                local.bitfield(Tier::T2).clone(),
                local.bitfield(Tier::T3).clone(),
            ).unwrap();
            prop_assert_eq!(&parts, &local);
        }
    }

    #[test]
    fn partial_final_block_promotes_on_existing_children() {
        let geo = Geometry::new(T3_SIZE + 3 * T1_SIZE + 1).unwrap(); // last T3 block: 4 units
        let mut local = LocalTiers::new(geo);
        for u in 512..515 {
            assert_eq!(local.mark_t1_complete(u).unwrap().t3, None);
        }
        let p = local.mark_t1_complete(515).unwrap();
        assert_eq!((p.t2, p.t3), (Some(16), Some(1)));
        assert_eq!(local.mark_t1_complete(515).unwrap(), Promotion::default());
        assert!(local.mark_t1_complete(516).is_err());
        let s = local.summary(Tier::T3, 0, 10).unwrap();
        assert_eq!((s.all.len(), s.all.get(1), s.all.get(0)), (2, true, false));
        assert!(local.summary(Tier::T3, 3, 1).is_err());
    }

    #[test]
    fn inconsistent_parts_name_tier_and_index() {
        let geo = Geometry::new(2 * T3_SIZE).unwrap();
        let t1 = Bitfield::new(geo.units());
        let mut t2 = Bitfield::new(32);
        t2.set(5);
        let e = LocalTiers::from_parts(geo, t1, t2, Bitfield::new(2)).unwrap_err();
        assert_eq!(
            e,
            ConsistencyError::Tier {
                tier: Tier::T2,
                index: 5,
                stored: true
            }
        );
    }

    #[test]
    fn tiered_view_bounds_and_knowledge() {
        let geo = Geometry::new(3 * T3_SIZE - T1_SIZE).unwrap(); // 3 T3 blocks, 1535 units
        let mut v = TieredView::new(geo);
        assert_eq!(
            v.apply_summary(0, &[0b1000_0000], &[0b0100_0000]).unwrap(),
            vec![0, 1]
        );
        assert_eq!(
            v.apply_summary(0, &[0b1100_0000], &[]).unwrap(),
            Vec::<u64>::new()
        );
        assert!(v.has_all(1) && !v.partial_bits().get(1));
        assert_eq!(v.knowledge(3), Knowledge::Has);
        assert_eq!(v.knowledge(600), Knowledge::Has);
        assert_eq!(v.knowledge(1100), Knowledge::Lacks);
        let mut v = TieredView::new(geo);
        v.apply_summary(0, &[0b1000_0000], &[0b0100_0000]).unwrap();
        assert_eq!(v.knowledge(600), Knowledge::Unknown);
        // A claim past the third block is rejected.
        assert!(v.apply_summary(0, &[0b0001_0000], &[]).is_err());
        assert!(v.apply_summary(4, &[0x80], &[]).is_err());
        assert!(v.apply_have(1535).is_err());
        assert!(v.apply_refined(Tier::T1, 1528, &[0xff]).is_err());
        v.apply_refined(Tier::T1, 1528, &[0xfe]).unwrap();
        assert_eq!(v.knowledge(1534), Knowledge::Has);
        // Refinement of block 1 via a T2 response.
        v.apply_refined(Tier::T2, 16, &[0b0100_0000]).unwrap();
        assert_eq!(v.knowledge(512 + 32), Knowledge::Has);
        assert_eq!(v.knowledge(512), Knowledge::Unknown);
        // Windows are capped.
        let big = Geometry::new(100 * T3_SIZE).unwrap();
        let mut v = TieredView::new(big);
        for b in 0..100 {
            v.apply_have(b * 512).unwrap();
        }
        assert_eq!(v.windows.len(), MAX_WINDOWS);
        // 32 windows of 512 bits with their freshness records: under 5 KiB whatever the file.
        assert!(v.heap_bytes() < 5 * 1024, "{}", v.heap_bytes());
    }
}
