//! The deterministic event queue of the next-event simulation.
//!
//! Events pop in order of time; events at the same time pop in the order they were pushed.
//! The payload type needs no ordering of its own, so ties never depend on payload contents,
//! and nothing depends on hash or allocation order.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use crate::clock::SimTime;

/// Bits of an entry's tag that hold the payload's slot; the rest hold the insertion sequence.
const SLOT_BITS: u32 = 24;
/// Most events that can be pending at once (2^24, about 16.7 million: some 2 GiB of payloads).
pub const MAX_PENDING: usize = 1 << SLOT_BITS;
/// Most events that can ever be pushed (2^40, about 10^12).
pub const MAX_PUSHED: u64 = 1 << (64 - SLOT_BITS);
/// Bucket 0 holds the events at the last popped time; bucket `i` those whose time first
/// differs from it in bit `i - 1`.
const BUCKETS: usize = 65;

/// A min-queue of events keyed by `(time, insertion sequence)`.
///
/// A radix heap: the simulator never schedules an event before the last one popped, so events
/// sit in buckets by the highest bit in which their time differs from the last popped time,
/// and each pop scans at most one bucket (each event moves down at most 64 times over its
/// life, and in practice once or twice). Against a binary heap of a million pending events
/// this touches memory in order instead of sifting through it. Within a bucket events stay in
/// push order and every event of one time is always in the same bucket, so equal times pop
/// first-pushed first. Buckets hold 16-byte entries; payloads live in a slab beside them.
#[derive(Debug, Clone)]
pub struct EventQueue<E> {
    buckets: Vec<VecDeque<Entry>>,
    last: u64,
    len: usize,
    slab: Vec<Option<E>>,
    free: Vec<u32>,
    next_seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    time: u64,
    /// `seq << SLOT_BITS | slot`.
    tag: u64,
}

impl Entry {
    fn slot(self) -> usize {
        (self.tag & (MAX_PENDING as u64 - 1)) as usize
    }
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> EventQueue<E> {
    /// An empty queue.
    pub fn new() -> Self {
        EventQueue {
            buckets: (0..BUCKETS).map(|_| VecDeque::new()).collect(),
            last: 0,
            len: 0,
            slab: Vec::new(),
            free: Vec::new(),
            next_seq: 0,
        }
    }

    fn bucket(&self, time: u64) -> usize {
        (u64::BITS - (time ^ self.last).leading_zeros()) as usize
    }

    /// Schedules `event` at `time`; returns its sequence number (unique, increasing).
    ///
    /// `time` must not be earlier than the last popped event's (the simulator never schedules
    /// into the past); an earlier time is taken as that time.
    ///
    /// # Panics
    ///
    /// With [`MAX_PENDING`] events already pending, or after [`MAX_PUSHED`] pushes: a run that
    /// large is far beyond the simulator's memory budget.
    pub fn push(&mut self, time: SimTime, event: E) -> u64 {
        let seq = self.next_seq;
        assert!(seq < MAX_PUSHED, "event queue: {MAX_PUSHED} events pushed");
        self.next_seq += 1;
        let slot = match self.free.pop() {
            Some(i) => {
                self.slab[i as usize] = Some(event);
                i
            }
            None => {
                assert!(
                    self.slab.len() < MAX_PENDING,
                    "event queue: {MAX_PENDING} events pending"
                );
                self.slab.push(Some(event));
                (self.slab.len() - 1) as u32
            }
        };
        let time = time.as_micros().max(self.last);
        let b = self.bucket(time);
        self.buckets[b].push_back(Entry {
            time,
            tag: seq << SLOT_BITS | u64::from(slot),
        });
        self.len += 1;
        seq
    }

    /// Removes and returns the earliest event (first pushed among equal times).
    pub fn pop(&mut self) -> Option<(SimTime, E)> {
        if self.buckets[0].is_empty() {
            let i = self.buckets.iter().position(|b| !b.is_empty())?;
            let mut from = std::mem::take(&mut self.buckets[i]);
            self.last = from.iter().map(|e| e.time).min().expect("bucket not empty");
            // Every entry moves to a lower bucket, in order; the emptied deque is kept for
            // its capacity.
            for e in from.drain(..) {
                let b = self.bucket(e.time);
                self.buckets[b].push_back(e);
            }
            self.buckets[i] = from;
        }
        let e = self.buckets[0].pop_front()?;
        self.len -= 1;
        let slot = e.slot();
        self.free.push(slot as u32);
        let event = self.slab[slot].take().expect("every entry owns its slot");
        Some((SimTime::from_micros(e.time), event))
    }

    /// The time of the earliest event, without removing it.
    pub fn peek_time(&self) -> Option<SimTime> {
        let b = self.buckets.iter().find(|b| !b.is_empty())?;
        b.iter().map(|e| e.time).min().map(SimTime::from_micros)
    }

    /// How many events are pending.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no events are pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many events were ever pushed.
    pub fn pushed(&self) -> u64 {
        self.next_seq
    }
}

/// One node's pending events: a binary min-heap keyed by `(time, insertion sequence)`.
///
/// The engine keeps one per node and runs each node's events of a window together, so a
/// node's state stays in cache while they run and nodes can run on several threads. A node
/// has tens to hundreds of events pending, where the run as a whole has a million.
#[derive(Debug, Clone)]
pub struct LocalQueue<E> {
    heap: BinaryHeap<Keyed<E>>,
    next_seq: u64,
}

#[derive(Debug, Clone)]
struct Keyed<E> {
    time: u64,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Keyed<E> {
    fn eq(&self, o: &Self) -> bool {
        (self.time, self.seq) == (o.time, o.seq)
    }
}

impl<E> Eq for Keyed<E> {}

impl<E> PartialOrd for Keyed<E> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl<E> Ord for Keyed<E> {
    /// Reversed: the max-heap pops the earliest time, then the first pushed.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.time, o.seq).cmp(&(self.time, self.seq))
    }
}

impl<E> Default for LocalQueue<E> {
    fn default() -> Self {
        LocalQueue {
            heap: BinaryHeap::new(),
            next_seq: 0,
        }
    }
}

impl<E> LocalQueue<E> {
    /// Schedules `event` at `time`.
    pub fn push(&mut self, time: SimTime, event: E) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Keyed {
            time: time.as_micros(),
            seq,
            event,
        });
    }

    /// Removes and returns the earliest event if it is due before `end`.
    pub fn pop_before(&mut self, end: SimTime) -> Option<(SimTime, E)> {
        if self.heap.peek()?.time >= end.as_micros() {
            return None;
        }
        let k = self.heap.pop()?;
        Some((SimTime::from_micros(k.time), k.event))
    }

    /// The time of the earliest event.
    pub fn peek_time(&self) -> Option<SimTime> {
        self.heap.peek().map(|k| SimTime::from_micros(k.time))
    }

    /// How many events are pending.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no events are pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_by_time_then_insertion_order() {
        let mut q = EventQueue::new();
        let t = SimTime::from_micros;
        q.push(t(5), "c");
        q.push(t(1), "a");
        q.push(t(5), "d");
        q.push(t(1), "b");
        q.push(t(3), "x");
        assert_eq!(q.peek_time(), Some(t(1)));
        assert_eq!(q.len(), 5);
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).map(|(_, e)| e).collect();
        assert_eq!(order, ["a", "b", "x", "c", "d"]);
        assert!(q.is_empty());
        assert_eq!(q.pushed(), 5);
    }

    #[test]
    fn many_equal_times_keep_fifo_order() {
        // 3000 pushes over four distinct times at any moment, with pops interleaved. Payloads
        // run against push order (a queue that broke ties by payload would fail) and pops free
        // slots that later pushes reuse (one that broke ties by slot would fail). The reference
        // is a plain list: pop the earliest time, the first pushed among equals.
        type Events = Vec<(SimTime, u32)>;
        fn pop_both(q: &mut EventQueue<u32>, reference: &mut Events, got: &mut Events) -> SimTime {
            let k = (0..reference.len()).min_by_key(|&k| reference[k].0);
            let want = reference.remove(k.expect("reference not empty"));
            got.push(q.pop().expect("queue not empty"));
            assert_eq!(got.last(), Some(&want), "pop {}", got.len());
            want.0
        }
        let mut q = EventQueue::new();
        let (mut reference, mut got) = (Vec::new(), Vec::new());
        let mut x: u32 = 0x9e37_79b9;
        let mut floor = SimTime::from_micros(0);
        for i in 0..3000u32 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            // Like the engine, never schedule before the last event popped.
            let time = SimTime::from_micros(floor.as_micros() + u64::from(x % 4));
            q.push(time, u32::MAX - i);
            reference.push((time, u32::MAX - i));
            if x % 3 == 0 {
                floor = pop_both(&mut q, &mut reference, &mut got);
            }
        }
        while !reference.is_empty() {
            pop_both(&mut q, &mut reference, &mut got);
        }
        assert!(q.is_empty() && q.pop().is_none());
        assert_eq!(got.len(), 3000);
        let ties = got.windows(2).filter(|w| w[0].0 == w[1].0).count();
        assert!(ties > 1000, "most pops must be ties: {ties}");
    }

    proptest::proptest! {
        /// Against a sorted reference, at any spread of times: pushes at or after the last
        /// pop, pops interleaved, ties kept in push order.
        #[test]
        fn pops_like_a_sorted_list(ops in proptest::collection::vec((0u64..1 << 40, 0u8..4, proptest::bool::ANY), 1..400)) {
            let mut q = EventQueue::new();
            let mut reference: Vec<(u64, u64, usize)> = Vec::new();
            let mut floor = 0u64;
            for (k, &(span, shift, pop)) in ops.iter().enumerate() {
                // Spans from a few microseconds to days, and often exactly the floor.
                let time = floor + (span >> (10 * u32::from(shift))) * u64::from(span % 3 != 0);
                let seq = q.push(SimTime::from_micros(time), k);
                reference.push((time, seq, k));
                if pop {
                    reference.sort();
                    let (t, _, want) = reference.remove(0);
                    proptest::prop_assert_eq!(q.pop(), Some((SimTime::from_micros(t), want)));
                    floor = t;
                }
                proptest::prop_assert_eq!(q.len(), reference.len());
            }
            reference.sort();
            for (t, _, want) in reference {
                proptest::prop_assert_eq!(q.peek_time(), Some(SimTime::from_micros(t)));
                proptest::prop_assert_eq!(q.pop(), Some((SimTime::from_micros(t), want)));
            }
            proptest::prop_assert!(q.is_empty());
        }
    }

    #[test]
    fn a_local_queue_pops_by_time_then_push_order_and_stops_at_the_end() {
        let mut q = LocalQueue::default();
        let t = SimTime::from_micros;
        q.push(t(5), 'a');
        q.push(t(3), 'b');
        q.push(t(5), 'c');
        q.push(t(9), 'd');
        assert_eq!(q.peek_time(), Some(t(3)));
        let got: Vec<char> = std::iter::from_fn(|| q.pop_before(t(9)).map(|(_, e)| e)).collect();
        assert_eq!(got, ['b', 'a', 'c']);
        assert_eq!(q.len(), 1, "the event at the end stays");
        assert_eq!(q.pop_before(t(10)), Some((t(9), 'd')));
        assert!(q.is_empty());
    }
}
