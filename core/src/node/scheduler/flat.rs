//! The flat path, for legacy peers: rarest unit first from the per-unit buckets, then a
//! bounded scan of the peer's bitfield from a random point, a word at a time.

use super::SchedView;
use crate::availability::PeerView;
use crate::node::peer::Peer;
use rand_core::RngCore;
use rand_xoshiro::Xoshiro256PlusPlus;

/// Units per chunk of the fallback scan (one 512-bit mask).
const CHUNK: u64 = 512;
/// Chunks the fallback scan examines per decision (64 Ki units): bounded work per decision
/// whatever the file size.
const MAX_CHUNKS: u64 = 128;

/// Units to request from legacy peer `p`, up to `budget`.
pub(crate) fn plan(
    v: &SchedView,
    p: &Peer,
    budget: usize,
    rng: &mut Xoshiro256PlusPlus,
) -> Vec<u64> {
    let mut out = Vec::new();
    let Some(PeerView::Flat(have)) = &p.view else {
        return out;
    };
    let usable = |u: u64, out: &Vec<u64>| {
        !p.refuses(u, v.now) && !v.requests.contains(u, p.id) && !out.contains(&u)
    };
    if let Some(r) = &v.remote.rarity1 {
        for u in r.candidates().take(v.limits.max_probes) {
            if out.len() >= budget {
                return out;
            }
            if have.get(u) && !p.refuses(u, v.now) && !v.requests.contains(u, p.id) {
                out.push(u);
            }
        }
    }
    let n = v.geo.units();
    if out.len() >= budget || n == 0 {
        return out;
    }
    let chunks = n.div_ceil(CHUNK);
    let first = rng.next_u64() % chunks;
    for k in 0..chunks.min(MAX_CHUNKS) {
        let base = ((first + k) % chunks) * CHUNK;
        let len = (n - base).min(CHUNK);
        let cand = have
            .block_mask(base, len)
            .and_not(&v.claims.bits().block_mask(base, len));
        if cand.is_empty() {
            continue;
        }
        for j in (0..len).filter(|&j| cand.get(j)) {
            if out.len() >= budget {
                return out;
            }
            let u = base + j;
            if usable(u, &out) {
                out.push(u);
            }
        }
    }
    out
}
