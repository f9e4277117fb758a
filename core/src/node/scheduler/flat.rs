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

#[cfg(test)]
mod tests {
    use crate::node::{
        drive, Config, DisconnectReason, Host, Input, Node, PeerId, Upload, Verdict,
    };
    use crate::time::Timestamp;
    use crate::wire::{Message, Proof};
    use crate::{Geometry, LocalTiers};
    use bytes::Bytes;
    use std::collections::BTreeSet;

    const ROOT: [u8; 32] = [7; 32];
    /// 1,024 units: a rarest bucket large enough for a crowd to pick apart.
    const UNITS: u64 = 1024;

    const SEEDER: PeerId = PeerId(1);

    /// A host that takes every unit as verified and keeps the units the node requests of
    /// [`SEEDER`].
    #[derive(Default)]
    struct Requests(Vec<u64>);

    impl Host for Requests {
        fn send(&mut self, peer: PeerId, msg: Message) {
            match msg {
                Message::Request { unit, .. } if peer == SEEDER => self.0.push(unit),
                _ => {}
            }
        }
        fn serve(&mut self, _: PeerId, _: u64) -> Upload {
            Upload::Later
        }
        fn store_unit(&mut self, _: PeerId, _: u64, _: Bytes, _: Option<Proof>) -> Verdict {
            Verdict::Verified
        }
        fn persist(&mut self, _: Bytes) {}
        fn disconnect(&mut self, peer: PeerId, reason: DisconnectReason) {
            panic!("{peer} dropped: {reason}");
        }
    }

    /// The first `n` units a legacy downloader with seed `seed` asks a legacy seeder for,
    /// after a legacy leecher told it of units 0..16: each request is answered 10 ms later.
    fn asked_of_the_seeder(seed: u64, n: usize) -> Vec<u64> {
        let mut cfg = Config::new(ROOT, UNITS * 65536, "me");
        cfg.hierarchical = false;
        cfg.seed = seed;
        let local = LocalTiers::new(Geometry::new(UNITS * 65536).unwrap());
        let mut node = Node::try_new(cfg, local, Timestamp::ZERO).unwrap();
        let mut host = Requests::default();
        let (seeder, leecher) = (SEEDER, PeerId(2));
        let mut now = Timestamp::ZERO;
        let input = |node: &mut Node, host: &mut Requests, now, i| {
            node.handle_input(now, i);
            drive(node, now, host);
        };
        let handshake = Message::Handshake {
            info_hash: Bytes::from_static(&ROOT),
            peer_id: "them".into(),
            capabilities: None,
        };
        // The leecher first: its HAVEs move units between buckets, as a crowd's do (what the
        // node asks of it is never answered).
        input(
            &mut node,
            &mut host,
            now,
            Input::PeerConnected { peer: leecher },
        );
        input(
            &mut node,
            &mut host,
            now,
            Input::message(leecher, handshake.clone()),
        );
        for unit in 0..16 {
            input(
                &mut node,
                &mut host,
                now,
                Input::message(leecher, Message::Have { unit }),
            );
        }
        input(
            &mut node,
            &mut host,
            now,
            Input::PeerConnected { peer: seeder },
        );
        input(&mut node, &mut host, now, Input::message(seeder, handshake));
        let bits = Bytes::from(vec![0xff; (UNITS / 8) as usize]);
        input(
            &mut node,
            &mut host,
            now,
            Input::message(seeder, Message::Bitfield { bits }),
        );
        let mut answered = 0;
        while host.0.len() < n {
            let unit = *host.0.get(answered).expect("the node keeps asking");
            answered += 1;
            now = now.add(core::time::Duration::from_millis(10));
            let data = Bytes::from(vec![0; 65536]);
            let transfer = Message::Transfer {
                unit,
                data,
                proof: None,
            };
            input(&mut node, &mut host, now, Input::message(seeder, transfer));
        }
        host.0.truncate(n);
        host.0
    }

    /// Downloaders that read the same bitfields and HAVEs ask a seeder for equally rare units
    /// in orders of their own. Before the per-unit rarity scattered its buckets, the seeder's
    /// bitfield left its rarest bucket in reverse unit order on every node, whatever the
    /// node's seed: a crowd asked its seeder for the same units at the same time, and the
    /// seeder sent each unit many times over (flash-crowd on the flat path, 0.23 of the
    /// bound; `dev/SIMULATION.md`).
    #[test]
    fn downloaders_ask_a_seeder_for_rare_units_in_orders_of_their_own() {
        let asked: Vec<Vec<u64>> = (0..8).map(|seed| asked_of_the_seeder(seed, 32)).collect();
        for (i, a) in asked.iter().enumerate() {
            let mine: BTreeSet<u64> = a.iter().copied().collect();
            assert_eq!(mine.len(), 32, "seed {i} asked twice: {a:?}");
            assert!(
                a.iter().all(|&u| u >= 16),
                "seed {i} asked for a common unit first"
            );
            for (j, b) in asked.iter().enumerate().skip(i + 1) {
                let shared = b.iter().filter(|u| mine.contains(u)).count();
                // 32 draws each from about 1,000 units share about one.
                assert!(
                    shared <= 6,
                    "seeds {i} and {j} share {shared} of 32: {a:?} {b:?}"
                );
            }
        }
    }
}
