//! The simulated network: bandwidth, latency and faults.
//!
//! # Model
//!
//! Each peer has an **uplink** (its upload capacity) and a **downlink** (its download capacity),
//! each a serialiser that sends one message at a time. A message of `n` bytes from `a` to `b`
//! sent at `t`:
//!
//! 1. is serialised on `a`'s uplink: it starts at `max(t, uplink free)` and occupies the link for
//!    `ceil(n · 10⁶ / upload)` µs;
//! 2. propagates for `latency(a) + latency(b)` (the access latencies add up);
//! 3. is serialised on `b`'s downlink likewise, from its arrival on, in every stretch the
//!    link is free until it is through (its packets interleave with those of messages booked
//!    before it);
//! 4. is delivered when its last byte leaves the downlink.
//!
//! Everything is integer microseconds (rounded up), so results are exact and identical on every
//! platform. Delivery times are computed when the message is sent and never moved afterwards,
//! so a downlink takes messages in the order they are sent, each into the free time after its
//! arrival: a message that arrives before one booked earlier for a later arrival (it waited in
//! a slow sender's uplink queue) starts at once and fills the gap before it, and the rest of
//! it follows in the next free stretches. The downlink is work-conserving: it never idles
//! while a message that has arrived is not through. (Booking each message at the end of the
//! downlink's queue, as the simulator did until 2026-12-01, held a seeder's units behind
//! leechers' units still queued in the leechers' uplinks, hundreds of milliseconds away; booking
//! each whole into the first gap that fits, until 2026-12-05, left every shorter gap idle:
//! `dev/SIMULATION.md`, "A downlink that never idles".)
//!
//! # Control and bulk
//!
//! With plain FIFO links, a HAVE or a REQUEST would wait behind every queued unit payload, which
//! no real protocol implementation does (it writes control frames between data frames).
//! Messages therefore come in two [`Class`]es:
//!
//! - [`Class::Bulk`] (unit payloads) queue FIFO behind all earlier bulk.
//! - [`Class::Control`] (everything else) wait only for the bulk message *in progress* at the
//!   time they reach the link (a frame is never pre-empted mid-way) and for earlier control
//!   messages, then go. They are still **charged** to the link: the link's bulk queue is pushed
//!   back by the control message's serialisation time, so later bulk pays for it. Bulk already
//!   scheduled is not moved (its delivery time was already handed out), so for the length of one
//!   control message the link briefly carries a little more than its capacity; control messages
//!   are tens of bytes against 64 KiB units, so total throughput is conserved and the
//!   instantaneous error is negligible.
//!
//! # Faults
//!
//! Every message draws exactly four numbers from its sender's own random stream (so the stream
//! stays aligned whatever the probabilities are, and one sender's draws do not depend on when
//! the others send; a network without loss, duplication or reordering draws nothing, since no
//! outcome could depend on the draws), then:
//!
//! - **partition**: if the sender's and receiver's groups are separated by a partition window at
//!   the send time, the message is dropped before it uses any bandwidth;
//! - **loss** (probability `loss`): the uplink is charged, the message vanishes in transit;
//! - **duplicate** (probability `duplicate`): the receiver's downlink serialises and delivers it
//!   twice (the second copy right behind the first);
//! - **reorder** (probability `reorder`): the message is delayed by an extra 1..=2×path-latency
//!   µs *after* the downlink, so messages sent later can overtake it without the delay holding
//!   the link.

use std::collections::VecDeque;
use std::ops::Deref;

use crate::clock::{micros_ceil, SimTime};
use crate::rng::SimRng;
use crate::scenario::{PeerSpec, Scenario};

/// How a message is queued on a link; see the [module documentation](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// Small protocol messages: wait only for the bulk message in progress.
    Control,
    /// Unit payloads: FIFO behind all earlier bulk.
    Bulk,
}

/// One peer's access link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLink {
    /// The peer's group (for partitions).
    pub group: usize,
    /// Upload capacity, bytes per second (0 is treated as 1).
    pub upload_bps: u64,
    /// Download capacity, bytes per second (0 is treated as 1).
    pub download_bps: u64,
    /// One-way access latency, µs.
    pub latency_us: u64,
}

impl From<&PeerSpec> for PeerLink {
    fn from(p: &PeerSpec) -> Self {
        PeerLink {
            group: p.group,
            upload_bps: p.upload_bps,
            download_bps: p.download_bps,
            latency_us: micros_ceil(p.latency),
        }
    }
}

/// Per-message fault probabilities, each in `[0, 1]`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultRates {
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Probability that a message is delayed past later ones.
    pub reorder: f64,
}

/// Groups `a` and `b` cannot reach each other during `from..until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionWindow {
    /// One group index.
    pub a: usize,
    /// The other group index.
    pub b: usize,
    /// Start, inclusive.
    pub from: SimTime,
    /// End, exclusive.
    pub until: SimTime,
}

impl PartitionWindow {
    /// Whether this window separates groups `x` and `y` at `t`.
    pub fn blocks(&self, t: SimTime, x: usize, y: usize) -> bool {
        ((self.a, self.b) == (x, y) || (self.a, self.b) == (y, x))
            && self.from <= t
            && t < self.until
    }
}

/// What happened to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fate {
    /// Delivered (once, or twice if `duplicated`).
    Delivered,
    /// Lost in transit (the uplink was charged).
    Lost,
    /// Dropped by a partition (no bandwidth used).
    Partitioned,
    /// The sender or receiver index is not a peer of this network (an engine bug).
    NoSuchPeer,
}

/// When each copy of a message arrives: none, one, or two (a duplicate), in increasing order.
/// Derefs to a slice; held inline, since every message sent makes one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Arrivals {
    at: [SimTime; 2],
    len: u8,
}

impl Arrivals {
    fn push(&mut self, t: SimTime) {
        self.at[usize::from(self.len)] = t;
        self.len += 1;
    }
}

impl Deref for Arrivals {
    type Target = [SimTime];

    fn deref(&self) -> &[SimTime] {
        &self.at[..usize::from(self.len)]
    }
}

/// The outcome of [`Network::send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// When each copy arrives at the receiver, in increasing order; empty unless delivered.
    pub times: Arrivals,
    /// What happened.
    pub fate: Fate,
    /// Whether a second copy was delivered.
    pub duplicated: bool,
    /// Whether an extra reordering delay was added.
    pub reordered: bool,
    /// When the last byte left the sender's uplink (the send time when nothing was sent).
    pub left_sender: SimTime,
}

impl Delivery {
    fn dropped(fate: Fate, left_sender: SimTime) -> Delivery {
        Delivery {
            times: Arrivals::default(),
            fate,
            duplicated: false,
            reordered: false,
            left_sender,
        }
    }
}

/// Counters for one directed pair of peers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounters {
    /// Messages sent (whatever became of them).
    pub messages: u64,
    /// Bytes sent (whatever became of them).
    pub bytes: u64,
    /// Of `messages`, how many were [`Class::Control`].
    pub control: u64,
    /// Messages delivered at least once.
    pub delivered: u64,
    /// Messages lost in transit.
    pub lost: u64,
    /// Messages dropped by a partition.
    pub partitioned: u64,
    /// Messages delivered twice.
    pub duplicated: u64,
    /// Messages delayed for reordering.
    pub reordered: u64,
}

impl LinkCounters {
    fn add(&mut self, o: &LinkCounters) {
        self.messages += o.messages;
        self.bytes += o.bytes;
        self.control += o.control;
        self.delivered += o.delivered;
        self.lost += o.lost;
        self.partitioned += o.partitioned;
        self.duplicated += o.duplicated;
        self.reordered += o.reordered;
    }
}

/// One sender's counters by receiver. A peer talks to a few dozen others, so a binary search
/// over its receivers (kept apart from the counters, so the search reads a few cache lines)
/// beats a map keyed by pairs.
#[derive(Debug, Clone, Default)]
struct PairCounters {
    /// Receivers, increasing.
    to: Vec<u32>,
    /// `counters[k]` is for `to[k]`.
    counters: Vec<LinkCounters>,
}

impl PairCounters {
    fn get(&self, to: usize) -> Option<&LinkCounters> {
        let k = self.to.binary_search(&u32::try_from(to).ok()?).ok()?;
        Some(&self.counters[k])
    }

    fn get_mut(&mut self, to: u32) -> &mut LinkCounters {
        let k = match self.to.binary_search(&to) {
            Ok(k) => k,
            Err(k) => {
                self.to.insert(k, to);
                self.counters.insert(k, LinkCounters::default());
                k
            }
        };
        &mut self.counters[k]
    }
}

/// One direction of one peer's access link.
#[derive(Debug, Clone, Default)]
struct Serialiser {
    bytes_per_second: u64,
    /// Scheduled bulk transmissions `(start, end)`, ordered and disjoint; those that ended before
    /// the current time are pruned.
    bulk: VecDeque<(u64, u64)>,
    /// When the bulk queue is empty.
    bulk_free_at: u64,
    /// When the last control message finishes.
    control_free_at: u64,
    /// Total µs spent transmitting.
    busy_us: u64,
    /// Bulk takes every free stretch from its arrival on (a downlink: arrivals come out of send
    /// order; [`Serialiser::fill_from`]) instead of queueing behind everything booked (an
    /// uplink: FIFO).
    first_fit: bool,
}

impl Serialiser {
    fn new(bytes_per_second: u64) -> Serialiser {
        Serialiser {
            bytes_per_second: bytes_per_second.max(1),
            ..Serialiser::default()
        }
    }

    /// µs to serialise `bytes`, rounded up.
    fn duration(&self, bytes: u64) -> u64 {
        // Any message below 18 TB fits in 64 bits; a 128-bit division costs several times more.
        if let Some(scaled) = bytes.checked_mul(1_000_000) {
            return scaled.div_ceil(self.bytes_per_second);
        }
        let micros = (u128::from(bytes) * 1_000_000).div_ceil(u128::from(self.bytes_per_second));
        u64::try_from(micros).unwrap_or(u64::MAX)
    }

    /// Forgets bulk transmissions that ended by `now` (no later query can fall inside them).
    fn prune(&mut self, now: u64) {
        while self.bulk.front().is_some_and(|&(_, end)| end <= now) {
            self.bulk.pop_front();
        }
    }

    /// Books `d` µs of bulk reaching a downlink at `t` into every free stretch from `t` on until
    /// it is through, and returns when its last byte leaves. A real access link carries packets:
    /// a unit that reaches it while a gap is open starts at once and interleaves with the units
    /// booked after the gap, so the link never idles while something that has arrived waits.
    /// (Booking each message whole into the first gap that fits left every gap shorter than a
    /// unit idle: a leecher fed partly by slow uploaders, whose units are booked far ahead, lost
    /// 11 % of its downlink: `dev/SIMULATION.md`, "A downlink that never idles".) Pieces are
    /// kept apart, not merged, so that a control message waits only for the piece in progress.
    /// Past the last booked piece it waits for `bulk_free_at`, which carries the control charge.
    fn fill_from(&mut self, t: u64, d: u64) -> u64 {
        let mut left = d;
        let mut cursor = t;
        let mut i = self.bulk.partition_point(|&(_, end)| end <= t);
        while let Some(&(s, e)) = self.bulk.get(i) {
            if cursor < s {
                let piece = left.min(s - cursor);
                self.bulk.insert(i, (cursor, cursor + piece));
                i += 1;
                left -= piece;
                if left == 0 {
                    return cursor + piece;
                }
            }
            cursor = cursor.max(e);
            i += 1;
        }
        let start = cursor.max(self.bulk_free_at);
        let end = start.saturating_add(left);
        self.bulk.push_back((start, end));
        self.bulk_free_at = end;
        end
    }

    /// Transmits `bytes` reaching the link at `t`; returns when the last byte leaves.
    fn transmit(&mut self, t: u64, bytes: u64, class: Class) -> u64 {
        let d = self.duration(bytes);
        self.busy_us = self.busy_us.saturating_add(d);
        match class {
            Class::Bulk if self.first_fit => self.fill_from(t, d),
            Class::Bulk => {
                let start = t.max(self.bulk_free_at);
                let end = start.saturating_add(d);
                self.bulk.push_back((start, end));
                self.bulk_free_at = end;
                end
            }
            Class::Control => {
                let i = self.bulk.partition_point(|&(_, end)| end <= t);
                let in_progress_end = match self.bulk.get(i) {
                    Some(&(start, end)) if start <= t => end,
                    _ => t,
                };
                let start = t.max(self.control_free_at).max(in_progress_end);
                let end = start.saturating_add(d);
                self.control_free_at = end;
                self.bulk_free_at = if self.bulk_free_at > start {
                    self.bulk_free_at.saturating_add(d)
                } else {
                    end
                };
                end
            }
        }
    }

    fn reset(&mut self, now: u64) {
        self.bulk.clear();
        self.bulk_free_at = now;
        self.control_free_at = now;
    }
}

/// What every sender reads and no run changes: the peers' links, the fault rates and the
/// partition windows.
#[derive(Debug, Clone)]
pub struct Shape {
    links: Vec<PeerLink>,
    faults: FaultRates,
    partitions: Vec<PartitionWindow>,
    /// Whether any fault rate is non-zero (else no message draws from a sender's stream).
    draws: bool,
}

/// One peer's sending side: its uplink, its counters by receiver and its own fault stream.
///
/// Everything a send changes at the sender lives here, so that peers can send at the same
/// time on different threads; the receiver's downlink is booked apart ([`Receiver::arrive`]).
#[derive(Debug, Clone)]
pub struct Sender {
    uplink: Serialiser,
    counters: PairCounters,
    rng: SimRng,
}

/// One peer's receiving side: its downlink.
#[derive(Debug, Clone)]
pub struct Receiver {
    downlink: Serialiser,
}

/// A message as it leaves its sender: what became of it there, and what the receiver's
/// downlink needs to book it ([`Receiver::arrive`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Departure {
    /// What happened (a lost or partitioned message never reaches the downlink).
    pub fate: Fate,
    /// When the last byte left the sender's uplink (the send time when nothing was sent).
    pub left_sender: SimTime,
    /// When the message reaches the receiver's downlink, µs (after the path latency).
    arrival: u64,
    bytes: u64,
    class: Class,
    duplicated: bool,
    /// Extra delay after the downlink (reordering), µs; 0 if none.
    extra: u64,
}

impl Departure {
    fn dropped(fate: Fate, left_sender: SimTime) -> Departure {
        Departure {
            fate,
            left_sender,
            arrival: 0,
            bytes: 0,
            class: Class::Control,
            duplicated: false,
            extra: 0,
        }
    }

    /// When the message reaches the receiver's downlink, if it does: never earlier than the
    /// send time plus the path latency.
    pub fn reaches_downlink(&self) -> Option<SimTime> {
        (self.fate == Fate::Delivered).then(|| SimTime::from_micros(self.arrival))
    }
}

impl Shape {
    /// The smallest path latency between two distinct peers (the sum of their access
    /// latencies), µs: nothing one peer sends reaches another sooner.
    pub fn min_path_us(&self) -> u64 {
        let (mut a, mut b) = (u64::MAX, u64::MAX);
        for l in &self.links {
            if l.latency_us < a {
                b = a;
                a = l.latency_us;
            } else if l.latency_us < b {
                b = l.latency_us;
            }
        }
        a.saturating_add(b)
    }

    /// The path latency from `from` to `to`, µs (0 for an unknown peer).
    pub fn path_us(&self, from: usize, to: usize) -> u64 {
        match (self.links.get(from), self.links.get(to)) {
            (Some(a), Some(b)) => a.latency_us.saturating_add(b.latency_us),
            _ => 0,
        }
    }

    /// Sends `bytes` from peer `from` (whose sending side is `sender`) to peer `to` at `now`:
    /// the uplink, the faults and the propagation; the receiver's downlink is booked by
    /// [`Receiver::arrive`].
    ///
    /// Calls for one sender must come in non-decreasing `now`.
    pub fn depart(
        &self,
        sender: &mut Sender,
        now: SimTime,
        from: usize,
        to: usize,
        bytes: u64,
        class: Class,
    ) -> Departure {
        // Always four draws per message, so the stream stays aligned (none without faults: the
        // stream feeds nothing else).
        let (lose, duplicate, reorder, extra_draw) = if self.draws {
            (
                sender.rng.chance(self.faults.loss),
                sender.rng.chance(self.faults.duplicate),
                sender.rng.chance(self.faults.reorder),
                sender.rng.u64(),
            )
        } else {
            (false, false, false, 0)
        };

        let (Some(&src), Some(&dst)) = (self.links.get(from), self.links.get(to)) else {
            return Departure::dropped(Fate::NoSuchPeer, now);
        };
        // `to` indexes `links`, a Vec, so it fits in a u32 for any network that fits in memory.
        let counters = sender.counters.get_mut(to as u32);
        counters.messages += 1;
        counters.bytes += bytes;
        counters.control += u64::from(class == Class::Control);

        if self
            .partitions
            .iter()
            .any(|w| w.blocks(now, src.group, dst.group))
        {
            counters.partitioned += 1;
            return Departure::dropped(Fate::Partitioned, now);
        }
        let now_us = now.as_micros();
        sender.uplink.prune(now_us);
        let sent = sender.uplink.transmit(now_us, bytes, class);
        if lose {
            counters.lost += 1;
            return Departure::dropped(Fate::Lost, SimTime::from_micros(sent));
        }
        let path = src.latency_us.saturating_add(dst.latency_us);
        let extra = if reorder {
            counters.reordered += 1;
            // 1..=2×path µs, from one draw (multiply-high; bias below 2^-40).
            let range = path.saturating_mul(2);
            1 + ((u128::from(extra_draw) * u128::from(range)) >> 64) as u64
        } else {
            0
        };
        counters.delivered += 1;
        counters.duplicated += u64::from(duplicate);
        Departure {
            fate: Fate::Delivered,
            left_sender: SimTime::from_micros(sent),
            arrival: sent.saturating_add(path),
            bytes,
            class,
            duplicated: duplicate,
            extra,
        }
    }
}

impl Sender {
    /// Total µs this uplink spent transmitting.
    pub fn busy_us(&self) -> u64 {
        self.uplink.busy_us
    }

    /// Forgets everything queued on the uplink (the peer crashed at `now`).
    pub fn reset(&mut self, now: SimTime) {
        self.uplink.reset(now.as_micros());
    }
}

impl Receiver {
    /// Books departure `d` on this downlink, `now` being no later than its arrival there, and
    /// says when each copy is delivered (none unless `d` was delivered).
    pub fn arrive(&mut self, d: &Departure, now: SimTime) -> Arrivals {
        let mut times = Arrivals::default();
        if d.fate != Fate::Delivered {
            return times;
        }
        self.downlink.prune(now.as_micros());
        let first = self.downlink.transmit(d.arrival, d.bytes, d.class);
        times.push(SimTime::from_micros(first.saturating_add(d.extra)));
        if d.duplicated {
            let second = self.downlink.transmit(d.arrival, d.bytes, d.class);
            times.push(SimTime::from_micros(second.saturating_add(d.extra)));
        }
        times
    }

    /// Total µs this downlink spent transmitting.
    pub fn busy_us(&self) -> u64 {
        self.downlink.busy_us
    }

    /// Forgets everything queued on the downlink (the peer crashed at `now`).
    pub fn reset(&mut self, now: SimTime) {
        self.downlink.reset(now.as_micros());
    }
}

/// The network of one run. See the [module documentation](self) for the model.
///
/// [`Network::send`] books a message on both links at once. The engine uses the parts apart
/// ([`Network::into_parts`]): each peer's [`Sender`] with the peer, so that peers run on
/// several threads, and the [`Receiver`]s at the end of each window.
#[derive(Debug, Clone)]
pub struct Network {
    shape: Shape,
    senders: Vec<Sender>,
    receivers: Vec<Receiver>,
}

impl Network {
    /// A network of `links` (indexed by peer id), with fault decisions drawn from `rng`: each
    /// sender from its own stream `sender/<id>`, so that the draws of one do not depend on
    /// when the others send.
    pub fn new(
        links: Vec<PeerLink>,
        faults: FaultRates,
        partitions: Vec<PartitionWindow>,
        rng: SimRng,
    ) -> Network {
        Network {
            senders: links
                .iter()
                .enumerate()
                .map(|(i, l)| Sender {
                    uplink: Serialiser::new(l.upload_bps),
                    counters: PairCounters::default(),
                    rng: rng.derive(&format!("sender/{i}")),
                })
                .collect(),
            receivers: links
                .iter()
                .map(|l| Receiver {
                    downlink: Serialiser {
                        first_fit: true,
                        ..Serialiser::new(l.download_bps)
                    },
                })
                .collect(),
            shape: Shape {
                links,
                draws: faults.loss > 0.0 || faults.duplicate > 0.0 || faults.reorder > 0.0,
                faults,
                partitions,
            },
        }
    }

    /// The network for `peers` (from [`Scenario::peers`]) with the scenario's faults; each
    /// partition of several groups becomes one window per pair of them.
    pub fn from_scenario(scenario: &Scenario, peers: &[PeerSpec], rng: SimRng) -> Network {
        let f = &scenario.faults;
        let mut windows = Vec::new();
        for p in &f.partitions {
            let from = SimTime::from_duration(p.at);
            let until = from + p.duration;
            for (i, &a) in p.groups.iter().enumerate() {
                for &b in &p.groups[i + 1..] {
                    windows.push(PartitionWindow { a, b, from, until });
                }
            }
        }
        let rates = FaultRates {
            loss: f.loss,
            duplicate: f.duplicate,
            reorder: f.reorder,
        };
        Network::new(
            peers.iter().map(PeerLink::from).collect(),
            rates,
            windows,
            rng,
        )
    }

    /// The shape, every sender and every receiver, indexed by peer.
    pub fn into_parts(self) -> (Shape, Vec<Sender>, Vec<Receiver>) {
        (self.shape, self.senders, self.receivers)
    }

    /// Sends `bytes` from peer `from` to peer `to` at `now`, and says when (if ever) it arrives.
    ///
    /// Calls must come in non-decreasing `now` (the engine's clock).
    pub fn send(
        &mut self,
        now: SimTime,
        from: usize,
        to: usize,
        bytes: u64,
        class: Class,
    ) -> Delivery {
        let Some(sender) = self.senders.get_mut(from) else {
            return Delivery::dropped(Fate::NoSuchPeer, now);
        };
        let d = self.shape.depart(sender, now, from, to, bytes, class);
        let times = match self.receivers.get_mut(to) {
            Some(r) => r.arrive(&d, now),
            None => Arrivals::default(),
        };
        Delivery {
            times,
            fate: d.fate,
            duplicated: d.duplicated,
            reordered: d.extra > 0,
            left_sender: d.left_sender,
        }
    }

    /// Forgets everything queued on `peer`'s links (it crashed at `now`). Deliveries already
    /// handed out are the engine's to discard.
    pub fn reset_peer(&mut self, peer: usize, now: SimTime) {
        if let Some(up) = self.senders.get_mut(peer) {
            up.reset(now);
        }
        if let Some(down) = self.receivers.get_mut(peer) {
            down.reset(now);
        }
    }

    /// How many peers the network has.
    pub fn peers(&self) -> usize {
        self.shape.links.len()
    }

    /// Counters for messages from `from` to `to`.
    pub fn link(&self, from: usize, to: usize) -> LinkCounters {
        self.senders
            .get(from)
            .and_then(|s| s.counters.get(to))
            .copied()
            .unwrap_or_default()
    }

    /// All directed pairs that carried traffic, in `(from, to)` order.
    pub fn links(&self) -> impl Iterator<Item = ((usize, usize), &LinkCounters)> + '_ {
        self.senders.iter().enumerate().flat_map(|(from, s)| {
            (s.counters.to.iter())
                .zip(&s.counters.counters)
                .map(move |(&to, c)| ((from, to as usize), c))
        })
    }

    /// Counters summed over all pairs.
    pub fn totals(&self) -> LinkCounters {
        let mut total = LinkCounters::default();
        for (_, c) in self.links() {
            total.add(c);
        }
        total
    }

    /// Total µs `peer`'s uplink and downlink spent transmitting, `(up, down)`.
    pub fn busy_us(&self, peer: usize) -> (u64, u64) {
        (
            self.senders.get(peer).map_or(0, Sender::busy_us),
            self.receivers.get(peer).map_or(0, Receiver::busy_us),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000;

    /// Peer 0: 1 MB/s up, 10 ms; peer 1: 2 MB/s down, 5 ms; peer 2 in group 1.
    fn net(faults: FaultRates) -> Network {
        let link = |group, up, down, lat| PeerLink {
            group,
            upload_bps: up,
            download_bps: down,
            latency_us: lat,
        };
        Network::new(
            vec![
                link(0, 1_000_000, 10_000_000, 10 * MS),
                link(0, 10_000_000, 2_000_000, 5 * MS),
                link(1, 1_000_000, 1_000_000, 0),
            ],
            faults,
            vec![PartitionWindow {
                a: 1,
                b: 0,
                from: SimTime::from_micros(1_000 * MS),
                until: SimTime::from_micros(2_000 * MS),
            }],
            SimRng::new(1),
        )
    }

    fn at(ms: u64) -> SimTime {
        SimTime::from_micros(ms * MS)
    }

    fn times(d: &Delivery) -> Vec<u64> {
        d.times.iter().map(|t| t.as_micros()).collect()
    }

    #[test]
    fn bulk_is_fifo_on_both_links() {
        let mut n = net(FaultRates::default());
        // 100 kB: 100 ms on the uplink, 15 ms path, 50 ms on the downlink.
        let a = n.send(at(0), 0, 1, 100_000, Class::Bulk);
        assert_eq!(times(&a), [165 * MS]);
        let b = n.send(at(0), 0, 1, 100_000, Class::Bulk);
        assert_eq!(times(&b), [265 * MS]);
        assert_eq!(n.busy_us(0), (200 * MS, 0));
        assert_eq!(n.busy_us(1), (0, 100 * MS));
    }

    #[test]
    fn a_downlink_takes_what_arrives_first_into_a_gap() {
        // Peer 2 (1 MB/s up) sends 100 kB to peer 1 at 0: 100 ms on its uplink, 5 ms path,
        // 50 ms on peer 1's downlink, booked 105..155 ms. Peer 0 sends 10 kB at 10 ms: 10 ms up
        // (20 ms), 15 ms path, arrives at 35 ms, 5 ms down: it goes at once, not after 155 ms.
        let mut n = Network::new(
            vec![
                PeerLink {
                    group: 0,
                    upload_bps: 1_000_000,
                    download_bps: 1_000_000,
                    latency_us: 10 * MS,
                },
                PeerLink {
                    group: 0,
                    upload_bps: 1_000_000,
                    download_bps: 2_000_000,
                    latency_us: 5 * MS,
                },
                PeerLink {
                    group: 0,
                    upload_bps: 1_000_000,
                    download_bps: 1_000_000,
                    latency_us: 0,
                },
            ],
            FaultRates::default(),
            Vec::new(),
            SimRng::new(1),
        );
        let slow = n.send(at(0), 2, 1, 100_000, Class::Bulk);
        assert_eq!(times(&slow), [155 * MS]);
        let fast = n.send(at(10), 0, 1, 10_000, Class::Bulk);
        assert_eq!(
            times(&fast),
            [40 * MS],
            "into the gap before the booked message"
        );
        // One that does not fit before 105 ms uses the gap and finishes after the booked one:
        // 60 kB (30 ms down) arriving at 95 ms takes 95..105 ms, then 155..175 ms (whole, it
        // would have left the gap idle and ended at 185 ms).
        let big = n.send(at(20), 0, 1, 60_000, Class::Bulk);
        assert_eq!(times(&big), [175 * MS]);
        // The link never idled from 95 ms on: the next one waits for all three.
        let next = n.send(at(60), 0, 1, 2_000, Class::Bulk);
        assert_eq!(times(&next), [176 * MS]);
    }

    proptest::proptest! {
        /// Bulk booked on a downlink in any order of arrivals: the booked pieces stay ordered
        /// and disjoint, and from each message's arrival to its last byte the link is never
        /// free (work-conserving), whatever was booked before it.
        #[test]
        fn a_downlink_never_idles_while_a_message_waits(
            msgs in proptest::collection::vec((0u64..5_000, 1u64..400), 1..60)
        ) {
            let mut link = Serialiser::new(1_000_000);
            link.first_fit = true;
            for (t, d) in msgs {
                let before = link.bulk.clone();
                let end = link.transmit(t, d, Class::Bulk);
                proptest::prop_assert!(end >= t + d);
                for w in link.bulk.iter().zip(link.bulk.iter().skip(1)) {
                    proptest::prop_assert!(w.0 .0 < w.0 .1 && w.0 .1 <= w.1 .0, "{:?}", link.bulk);
                }
                // The time the earlier bookings left free in [t, end) is exactly this message.
                let busy_before: u64 = before
                    .iter()
                    .map(|&(s, e)| e.min(end).saturating_sub(s.max(t)))
                    .sum();
                proptest::prop_assert_eq!(end - t - busy_before, d);
            }
        }
    }

    #[test]
    fn control_waits_only_for_the_bulk_in_progress_and_is_charged() {
        let mut n = net(FaultRates::default());
        n.send(at(0), 0, 1, 100_000, Class::Bulk); // up 0..100, down 115..165
        n.send(at(0), 0, 1, 100_000, Class::Bulk); // up 100..200, down 215..265
                                                   // 1 kB control at 50 ms: waits for the first bulk only (up 100..101 ms), arrives at
                                                   // 116 ms during the first bulk on the downlink, leaves at 165.5 ms.
        let c = n.send(at(50), 0, 1, 1_000, Class::Control);
        assert_eq!(times(&c), [165 * MS + 500]);
        // The next bulk pays for the control bytes on both links: up 201..301, down 316..366.
        let d = n.send(at(60), 0, 1, 100_000, Class::Bulk);
        assert_eq!(times(&d), [366 * MS]);
        // A control on an idle link goes straight through: 1 ms + 15 ms + 0.5 ms.
        let e = n.send(at(1_000 - 20), 0, 1, 1_000, Class::Control);
        assert_eq!(times(&e), [(1_000 - 20 + 16) * MS + 500]);
        assert_eq!(n.link(0, 1).control, 2);
        assert_eq!(n.link(0, 1).messages, 5);
    }

    #[test]
    fn counters_are_kept_per_directed_pair_in_order() {
        let mut n = net(FaultRates::default());
        n.send(at(0), 1, 0, 10, Class::Control);
        n.send(at(0), 0, 2, 20, Class::Bulk);
        n.send(at(0), 0, 1, 30, Class::Control);
        n.send(at(1), 0, 2, 40, Class::Control);
        let pairs: Vec<_> = n.links().map(|(k, c)| (k, c.messages, c.bytes)).collect();
        assert_eq!(
            pairs,
            [((0, 1), 1, 30), ((0, 2), 2, 60), ((1, 0), 1, 10)],
            "(from, to) order"
        );
        assert_eq!(n.link(0, 2).control, 1);
        assert_eq!(n.link(2, 0), LinkCounters::default());
        assert_eq!(n.link(7, 0), LinkCounters::default());
        assert_eq!((n.totals().messages, n.totals().delivered), (4, 4));
    }

    #[test]
    fn durations_are_exact_on_both_sides_of_64_bits() {
        let s = Serialiser::new(3_000_000);
        for bytes in [
            0,
            1,
            2,
            3,
            65_536,
            u64::MAX / 1_000_000,
            u64::MAX / 1_000_000 + 1,
            u64::MAX,
        ] {
            let exact = (u128::from(bytes) * 1_000_000).div_ceil(3_000_000);
            assert_eq!(
                u128::from(s.duration(bytes)),
                exact.min(u128::from(u64::MAX)),
                "{bytes}"
            );
        }
    }

    #[test]
    fn sizes_round_up_to_whole_microseconds() {
        let mut n = net(FaultRates::default());
        // 1 byte at 1 MB/s = 1 µs up; 0.5 µs down rounds up to 1 µs.
        let d = n.send(at(0), 0, 1, 1, Class::Control);
        assert_eq!(times(&d), [1 + 15 * MS + 1]);
        let z = n.send(at(10), 0, 1, 0, Class::Bulk);
        assert_eq!(times(&z), [25 * MS]);
    }

    #[test]
    fn partitions_drop_between_groups_only_during_the_window() {
        let mut n = net(FaultRates::default());
        assert_eq!(
            n.send(at(1_500), 0, 2, 10, Class::Control).fate,
            Fate::Partitioned
        );
        assert_eq!(
            n.send(at(1_500), 2, 1, 10, Class::Control).fate,
            Fate::Partitioned
        );
        assert_eq!(
            n.send(at(1_500), 0, 1, 10, Class::Control).fate,
            Fate::Delivered
        );
        assert_eq!(
            n.send(at(2_000), 0, 2, 10, Class::Control).fate,
            Fate::Delivered
        );
        assert_eq!(n.link(0, 2).partitioned, 1);
        assert_eq!(n.busy_us(2).0, 0, "partitioned messages use no bandwidth");
        assert_eq!(
            n.send(at(2_000), 0, 9, 10, Class::Control).fate,
            Fate::NoSuchPeer
        );
    }

    #[test]
    fn certain_faults() {
        let mut lossy = net(FaultRates {
            loss: 1.0,
            ..FaultRates::default()
        });
        let d = lossy.send(at(0), 0, 1, 1_000, Class::Bulk);
        assert_eq!((d.fate, d.times.len()), (Fate::Lost, 0));
        assert_eq!(
            lossy.busy_us(0).0,
            MS,
            "a lost message still used the uplink"
        );

        let mut dup = net(FaultRates {
            duplicate: 1.0,
            ..FaultRates::default()
        });
        let d = dup.send(at(0), 0, 1, 1_000, Class::Bulk);
        assert!(d.duplicated);
        assert_eq!(times(&d), [16 * MS + 500, 17 * MS]);

        let mut re = net(FaultRates {
            reorder: 1.0,
            ..FaultRates::default()
        });
        let d = re.send(at(0), 0, 1, 1_000, Class::Bulk);
        assert!(d.reordered);
        let t = d.times[0].as_micros();
        assert!(t > 16 * MS + 500 && t <= 16 * MS + 500 + 30 * MS, "{t}");
        assert_eq!(re.totals().reordered, 1);
    }

    #[test]
    fn reordered_messages_are_overtaken_and_runs_repeat() {
        let faults = FaultRates {
            loss: 0.1,
            duplicate: 0.1,
            reorder: 0.3,
        };
        let run = || {
            let mut n = net(faults);
            (0..200)
                .map(|i| n.send(at(i * 10), 0, 1, 100, Class::Control))
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run(), "same seed, same deliveries");
        let firsts: Vec<u64> = a
            .iter()
            .filter_map(|d| d.times.first())
            .map(|t| t.as_micros())
            .collect();
        assert!(
            firsts.windows(2).any(|w| w[1] < w[0]),
            "some message overtaken"
        );
        assert!(a.iter().any(|d| d.fate == Fate::Lost));
        assert!(a.iter().any(|d| d.duplicated));
    }
}
