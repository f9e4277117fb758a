//! The deterministic event queue of the next-event simulation.
//!
//! Events pop in order of time; events at the same time pop in the order they were pushed.
//! The payload type needs no ordering of its own, so ties never depend on payload contents,
//! and nothing depends on hash or allocation order.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::clock::SimTime;

/// Bits of an entry's tag that hold the payload's slot; the rest hold the insertion sequence.
const SLOT_BITS: u32 = 24;
/// Most events that can be pending at once (2^24, about 16.7 million: some 2 GiB of payloads).
pub const MAX_PENDING: usize = 1 << SLOT_BITS;
/// Most events that can ever be pushed (2^40, about 10^12).
pub const MAX_PUSHED: u64 = 1 << (64 - SLOT_BITS);

/// A min-queue of events keyed by `(time, insertion sequence)`.
///
/// The heap holds only 16-byte keys (the time; the sequence and the payload's slot in one
/// word); payloads live in a slab beside it, so that sifting moves small entries whatever the
/// size of `E` (a message-carrying event is large).
#[derive(Debug, Clone)]
pub struct EventQueue<E> {
    heap: BinaryHeap<Entry>,
    slab: Vec<Option<E>>,
    free: Vec<u32>,
    next_seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    time: SimTime,
    /// `seq << SLOT_BITS | slot`: ordering by it orders by `seq`, which is unique.
    tag: u64,
}

impl Entry {
    fn slot(self) -> usize {
        (self.tag & (MAX_PENDING as u64 - 1)) as usize
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    /// Reversed, so that the max-heap pops the earliest `(time, seq)`.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.time, other.tag).cmp(&(self.time, self.tag))
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
            heap: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            next_seq: 0,
        }
    }

    /// Schedules `event` at `time`; returns its sequence number (unique, increasing).
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
        self.heap.push(Entry {
            time,
            tag: seq << SLOT_BITS | u64::from(slot),
        });
        seq
    }

    /// Removes and returns the earliest event (first pushed among equal times).
    pub fn pop(&mut self) -> Option<(SimTime, E)> {
        let e = self.heap.pop()?;
        let slot = e.slot();
        self.free.push(slot as u32);
        let event = self.slab[slot]
            .take()
            .expect("every heap entry owns its slot");
        Some((e.time, event))
    }

    /// The time of the earliest event, without removing it.
    pub fn peek_time(&self) -> Option<SimTime> {
        self.heap.peek().map(|e| e.time)
    }

    /// How many events are pending.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no events are pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// How many events were ever pushed.
    pub fn pushed(&self) -> u64 {
        self.next_seq
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
}
