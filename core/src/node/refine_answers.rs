//! Answering refinements: a capable peer asks for the finer bits of one of our blocks; it gets
//! them (or a reject with a reason, under overload or for a window that does not exist),
//! echoing its request id.

use super::backpressure::Backpressure;
use super::peer::PeerId;
use super::Node;
use crate::tiers::Tier;
use crate::wire::Message;
use bytes::Bytes;

impl Node {
    pub(super) fn on_refine_request(
        &mut self,
        peer: PeerId,
        from: u32,
        to: u32,
        index: u64,
        id: u64,
    ) {
        let reply = |bits: Bytes, start: u64, reject: Option<String>| Message::RefineResponse {
            tier: to,
            start,
            bits,
            id,
            reject,
        };
        if self.pressure.level() == Backpressure::Reject {
            self.stats.rejects_sent += 1;
            let msg = reply(Bytes::new(), 0, Some("overloaded".into()));
            return self.send(peer, msg);
        }
        let (Some(from_t), Some(to_t)) = (Tier::from_number(from), Tier::from_number(to)) else {
            let msg = reply(Bytes::new(), 0, Some("unknown tier".into()));
            return self.send(peer, msg);
        };
        let range = match self.geo.child_range(from_t, index, to_t) {
            Ok(r) => r,
            Err(e) => return self.send(peer, reply(Bytes::new(), 0, Some(e.to_string()))),
        };
        let bits = self
            .local
            .bitfield(to_t)
            .window(range.start, range.end - range.start);
        let msg = reply(Bytes::copy_from_slice(bits.as_bytes()), range.start, None);
        self.send(peer, msg);
        if (from_t, to_t) == (Tier::T3, Tier::T1) {
            // News to this peer about the block starts from here.
            self.announce.note_reported(peer, index);
        }
        // With pushes on, the asker follows this block now: it gets unit deltas until the
        // block is whole here.
        let max = self.cfg.limits.max_subscriptions;
        if max > 0 {
            let block = self
                .geo
                .parent_of(from_t, index, Tier::T3)
                .min(self.geo.blocks(Tier::T3).saturating_sub(1));
            if !self.local.has_at_tier(Tier::T3, block) {
                self.announce.subscribe(peer, block, max);
            }
        }
    }
}
