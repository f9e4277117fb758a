//! Coarse-first scheduling for a capable peer (WO-004). Stage 1 chooses coarse blocks: the
//! blocks already being fetched from this peer (hysteresis), then the rarest blocks it has
//! whole or has been refined, from the availability buckets; stage 2 refines partial blocks
//! whose detail is missing or stale; stage 3 requests units of the chosen blocks, first those
//! no other peer can give, then any.

use super::order::Walk;
use super::SchedView;
use crate::availability::{Contribution, PeerView};
use crate::bitfield::BlockMask;
use crate::node::peer::Peer;
#[cfg(debug_assertions)]
use crate::node::peer::PeerId;
use crate::node::refinement::fresh_until;
use crate::tiers::Tier;
use crate::time::Timestamp;
use crate::trace::{PassReason, PickReason};
use rand_core::RngCore;
use rand_xoshiro::Xoshiro256PlusPlus;
use smallvec::SmallVec;

/// Blocks passed over that a pick's trace record names (the first few tell the story).
const MAX_PASSED_IN_TRACE: usize = 3;
/// Blocks per chunk of the fallback scan of a peer's summary (one 512-bit mask).
const CHUNK: u64 = 512;
/// Chunks of the fallback scan per decision.
const MAX_SCAN_CHUNKS: u64 = 8;
/// Candidate sets of at most this many units are ordered by sorting, larger ones by walking.
const SPARSE: u64 = 48;
/// A peer whose refinement had to wait for credit or room is looked at again this soon.
const REFINE_CAP_RECHECK: core::time::Duration = core::time::Duration::from_millis(500);

/// Units one decision picks, inline up to the default largest window (most decisions run
/// without touching the heap: the scheduler runs after every input).
pub(crate) type Picks = SmallVec<[u64; 64]>;
/// Blocks being fetched from a peer, inline up to the default `max_current_blocks`.
pub(crate) type CurrentBlocks = SmallVec<[u64; 4]>;

/// What one decision looked up, by T3 block, so that each is computed once per decision
/// (a block is looked at up to four times: chosen, then rare units and any in stage 3).
#[derive(Default)]
struct Lookups {
    /// Units the peer has that we lack and nobody fetches.
    open: SmallVec<[(u64, BlockMask); 4]>,
    /// Units other peers are known to hold.
    held: SmallVec<[(u64, BlockMask); 4]>,
}

/// What one decision for a capable peer came to.
#[derive(Debug, Default)]
pub(crate) struct BlockPlan {
    /// Units to request, in order.
    pub(crate) picks: Picks,
    /// The blocks being fetched from the peer after this decision (`None`: unchanged).
    pub(crate) current_blocks: Option<CurrentBlocks>,
    /// Newly chosen blocks, with why.
    pub(crate) chosen: Vec<(u64, PickReason)>,
    /// The first blocks passed over, with why.
    pub(crate) passed: Vec<(u64, PassReason)>,
    /// Blocks to refine at the peer.
    pub(crate) to_refine: Vec<u64>,
    /// When to look at this peer again because a used-up window may be refined then (only
    /// when the decision found less than its budget).
    pub(crate) recheck: Option<Timestamp>,
}

/// Plans the requests and refinements for capable peer `p`, up to `budget` units.
pub(crate) fn plan(
    v: &SchedView,
    p: &Peer,
    budget: usize,
    rng: &mut Xoshiro256PlusPlus,
) -> BlockPlan {
    let l = v.limits;
    let mut plan = BlockPlan::default();
    let mut blocks = CurrentBlocks::new();
    let mut probe = Picks::new();
    let mut looked = Lookups::default();
    let mut found = 0;
    for &b in &p.current_blocks {
        probe.clear();
        if takeable(v, p, b, budget, true, &mut looked, &mut probe) > 0 {
            found += probe.len();
            blocks.push(b);
        } else if takeable(v, p, b, 1, false, &mut looked, &mut probe) > 0 {
            blocks.push(b);
        }
    }
    let refine_room = v.refines.room(p.id, l);
    let Some(PeerView::Tiered(tv)) = &p.view else {
        return plan;
    };
    let note = |passed: &mut Vec<(u64, PassReason)>, b, why| {
        if passed.len() < MAX_PASSED_IN_TRACE {
            passed.push((b, why));
        }
    };
    // Candidates: the rarest blocks from the buckets; if the probe limit cuts that list
    // short, also the blocks this peer has (from a random point, a word at a time), so that
    // a peer holding none of the globally rarest blocks is still used. Both bounded.
    let rarity = &v.remote.rarity3;
    let mut cands: SmallVec<[u64; 64]> = rarity.candidates().take(l.max_probes).collect();
    if cands.len() == l.max_probes {
        let n3 = v.geo.blocks(Tier::T3);
        let chunks = n3.div_ceil(CHUNK);
        let first = rng.next_u64() % chunks.max(1);
        'scan: for k in 0..chunks.min(MAX_SCAN_CHUNKS) {
            let base = ((first + k) % chunks) * CHUNK;
            let len = (n3 - base).min(CHUNK);
            let some = tv
                .all_bits()
                .block_mask(base, len)
                .or(&tv.partial_bits().block_mask(base, len));
            for j in (0..len).filter(|&j| some.get(j)) {
                let b = base + j;
                if cands.len() >= 2 * l.max_probes {
                    break 'scan;
                }
                if !rarity.parked(b) && !cands.contains(&b) {
                    cands.push(b);
                }
            }
        }
    }
    for b in cands {
        if found >= budget || blocks.len() >= l.max_current_blocks {
            break;
        }
        if blocks.contains(&b) {
            continue;
        }
        if !tv.has_some(b) {
            note(&mut plan.passed, b, PassReason::PeerLacksIt);
            continue;
        }
        probe.clear();
        // From a peer that has the whole block (a seed), count only units nobody else can
        // give, so that its upload spreads over blocks instead of duplicating.
        let rare_only = tv.has_all(b) && blocks.len() + 1 < l.max_current_blocks;
        let takes = (tv.has_all(b) || tv.is_refined(b)) && {
            let rare = if rare_only {
                takeable(v, p, b, budget, true, &mut looked, &mut probe)
            } else {
                0
            };
            found += rare;
            rare > 0 || {
                let any = takeable(v, p, b, budget, false, &mut looked, &mut probe);
                if !rare_only {
                    found += any;
                }
                any > 0
            }
        };
        if takes {
            blocks.push(b);
            let why = if tv.has_all(b) {
                PickReason::RarestPeerHasAll
            } else {
                PickReason::RarestRefined
            };
            plan.chosen.push((b, why));
            continue;
        }
        if tv.has_all(b) {
            note(&mut plan.passed, b, PassReason::NothingLeftToTake);
            continue;
        }
        // Stage 2: the peer has part of it and we lack detail (or it went stale).
        if v.refines.in_flight(p.id, b) {
            note(&mut plan.passed, b, PassReason::Refining);
        } else if let Some(stale_at) = fresh_until(p, b, v.now) {
            note(&mut plan.passed, b, PassReason::WindowExhausted);
            // Nothing tells us when the peer gains units there (deltas are per block):
            // come back when the window may be refined again.
            plan.recheck = Some(plan.recheck.map_or(stale_at, |t| t.min(stale_at)));
        } else if v.refines.backing_off(p.id, b, v.now) {
            note(&mut plan.passed, b, PassReason::RefineBackingOff);
        } else if plan.to_refine.len() >= refine_room {
            note(&mut plan.passed, b, PassReason::RefineCap);
            // Credit comes back with time too: look again then.
            let soon = v.now.add(REFINE_CAP_RECHECK);
            plan.recheck = Some(plan.recheck.map_or(soon, |t| t.min(soon)));
        } else {
            plan.to_refine.push(b);
        }
    }
    // Stage 3.
    for rare_only in [true, false] {
        for &b in &blocks {
            if plan.picks.len() >= budget {
                break;
            }
            let max = budget - plan.picks.len();
            takeable(v, p, b, max, rare_only, &mut looked, &mut plan.picks);
        }
    }
    if plan.picks.len() >= budget {
        plan.recheck = None;
    }
    plan.current_blocks = Some(blocks);
    plan
}

/// Units of T3 block `b` that other connected peers than `p` are known to have, as a window
/// over the block: from the holder counts (O(log peers)), plus legacy peers' units from the
/// per-unit rarity when there are any.
fn held_elsewhere(v: &SchedView, p: &Peer, b: u64) -> BlockMask {
    let range = v.geo.unit_range(Tier::T3, b).unwrap_or(0..0);
    let len = range.end - range.start;
    let own = match &p.view {
        Some(PeerView::Tiered(tv)) => tv.contribution(b),
        _ => Contribution::Units(BlockMask::default()),
    };
    let mut held = v.remote.holders.held_by_others(b, own, len);
    if let Some(flat) = &v.remote.rarity1 {
        let mut m = crate::bitfield::Bitfield::new(len);
        for j in 0..len {
            if flat.count(range.start + j) > 0 {
                m.set(j);
            }
        }
        held = held.or(&m.block_mask(0, len));
    }
    #[cfg(debug_assertions)]
    assert_eq!(held, union_of_others(v, p.id, b), "holder counts drifted");
    held
}

/// The union over every other peer's view that the holder counts replace (O(peers)); kept to
/// check them in debug builds.
#[cfg(debug_assertions)]
fn union_of_others(v: &SchedView, p: PeerId, b: u64) -> BlockMask {
    let range = v.geo.unit_range(Tier::T3, b).unwrap_or(0..0);
    let len = range.end - range.start;
    let mut held = BlockMask::default();
    for (id, q) in v.peers {
        if *id == p {
            continue;
        }
        match &q.view {
            Some(PeerView::Tiered(tv)) if tv.has_all(b) => return BlockMask::full(len),
            Some(PeerView::Tiered(tv)) => {
                if let Some(w) = tv.window(b) {
                    held = held.or(&w.block_mask(0, len));
                }
            }
            Some(PeerView::Flat(bits)) => held = held.or(&bits.block_mask(range.start, len)),
            None => {}
        }
    }
    held
}

/// Units of T3 block `b` that `p` has and nobody is fetching, up to `max`, appended to `out`
/// in this node's own walk of the block. With `rare_only`, only units no other connected peer
/// is known to have: a source's upload goes first to what nobody else can give.
fn takeable(
    v: &SchedView,
    p: &Peer,
    b: u64,
    max: usize,
    rare_only: bool,
    looked: &mut Lookups,
    out: &mut Picks,
) -> usize {
    let Some(PeerView::Tiered(tv)) = &p.view else {
        return 0;
    };
    let Ok(range) = v.geo.unit_range(Tier::T3, b) else {
        return 0;
    };
    let (base, len) = (range.start, range.end - range.start);
    let mut cand = match looked.open.iter().find(|(x, _)| *x == b) {
        Some((_, m)) => *m,
        None => {
            // Word-at-a-time: units we lack and nobody fetches, that the peer has.
            let mut m = BlockMask::full(len).and_not(&v.claims.bits().block_mask(base, len));
            if !tv.has_all(b) {
                m = match tv.window(b) {
                    Some(w) => m.and(&w.block_mask(0, len)),
                    None => BlockMask::default(),
                };
            }
            looked.open.push((b, m));
            m
        }
    };
    if cand.is_empty() {
        return 0;
    }
    if rare_only {
        let held = match looked.held.iter().find(|(x, _)| *x == b) {
            Some((_, m)) => *m,
            None => {
                let m = held_elsewhere(v, p, b);
                looked.held.push((b, m));
                m
            }
        };
        cand = cand.and_not(&held);
        if cand.is_empty() {
            return 0;
        }
    }
    if max == 0 {
        return 0;
    }
    let before = out.len();
    let walk = Walk::new(v.seed, b, len);
    let mut take = |j: u64| {
        let u = base + j;
        if !p.refuses(u, v.now) && !v.requests.contains(u, p.id) && !out.contains(&u) {
            out.push(u);
        }
        out.len() - before < max
    };
    let ones = cand.count_ones();
    if ones <= SPARSE {
        // Few candidates: sort them by their place in the walk rather than walk the block.
        let mut placed = [(0u16, 0u16); SPARSE as usize];
        for (slot, j) in placed.iter_mut().zip(cand.iter_ones()) {
            *slot = (walk.place(j) as u16, j as u16);
        }
        let placed = &mut placed[..ones as usize];
        placed.sort_unstable();
        for &(_, j) in placed.iter() {
            if !take(u64::from(j)) {
                break;
            }
        }
    } else {
        let mut left = ones;
        for j in walk.iter() {
            if left == 0 {
                break;
            }
            if !cand.get(j) {
                continue;
            }
            left -= 1;
            if !take(j) {
                break;
            }
        }
    }
    out.len() - before
}
