//! Endgame: once every missing unit is requested, a peer with room may also be asked for units
//! already in flight elsewhere, up to `endgame_duplicates` requests per unit; the first answer
//! wins and the others are cancelled (each still gets its answer).

use super::SchedView;
use crate::node::peer::Peer;

/// Units in flight at other peers that `p` has, to request from it too, up to `budget`.
pub(crate) fn plan(v: &SchedView, p: &Peer, budget: usize) -> Vec<u64> {
    let cap = v.limits.endgame_duplicates;
    let mut out = Vec::new();
    let mut last = None;
    for (unit, q, active) in v.requests.iter() {
        if out.len() >= budget {
            break;
        }
        if Some(unit) == last || q == p.id || !active {
            continue;
        }
        last = Some(unit);
        let has = p.view.as_ref().is_some_and(|view| view.has_unit(unit));
        if has
            && !v.requests.contains(unit, p.id)
            && v.requests.active_for(unit) < cap
            && !v.claims.is_verifying(unit)
        {
            out.push(unit);
        }
    }
    out
}
