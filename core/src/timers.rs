//! Many deadlines, one queue: a min-heap keyed by `(deadline, sequence)`, so equal deadlines
//! fire in insertion order and [`TimerQueue::next`] is the node's `poll_timeout`.
//!
//! Cancellation is lazy: a timer carries the token it was armed with, and the owner ignores a
//! fired timer whose token is no longer current (cheaper than removing from the middle of a
//! heap, and it makes stale timers explicit).

use crate::time::Timestamp;
use core::cmp::Reverse;
use std::collections::BinaryHeap;

/// A deadline queue of `T`.
#[derive(Debug, Clone)]
pub struct TimerQueue<T: Ord> {
    heap: BinaryHeap<Reverse<(Timestamp, u64, T)>>,
    seq: u64,
}

impl<T: Ord> Default for TimerQueue<T> {
    fn default() -> Self {
        TimerQueue {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
}

impl<T: Ord> TimerQueue<T> {
    /// Arms `item` to fire at `at`.
    pub fn push(&mut self, at: Timestamp, item: T) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, item)));
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Timestamp> {
        self.heap.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Removes and returns the earliest item due at or before `now`.
    pub fn pop_due(&mut self, now: Timestamp) -> Option<T> {
        if self.next()? <= now {
            self.heap.pop().map(|Reverse((_, _, item))| item)
        } else {
            None
        }
    }

    /// The earliest item, without removing it.
    pub fn peek(&self) -> Option<&T> {
        self.heap.peek().map(|Reverse((_, _, item))| item)
    }

    /// Removes the earliest item.
    pub fn pop(&mut self) -> Option<T> {
        self.heap.pop().map(|Reverse((_, _, item))| item)
    }

    /// Number of armed timers (stale ones included).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Drops every timer for which `keep` is false (used when a peer leaves, so the queue
    /// stays bounded by live state).
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.heap.retain(|Reverse((_, _, item))| keep(item));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_deadlines_fire_in_insertion_order() {
        let mut q = TimerQueue::default();
        q.push(Timestamp::from_micros(5), 'b');
        q.push(Timestamp::from_micros(3), 'z');
        q.push(Timestamp::from_micros(5), 'a');
        assert_eq!(q.next(), Some(Timestamp::from_micros(3)));
        assert_eq!(q.pop_due(Timestamp::from_micros(2)), None);
        let fired: Vec<char> =
            std::iter::from_fn(|| q.pop_due(Timestamp::from_micros(9))).collect();
        assert_eq!(fired, vec!['z', 'b', 'a']);
        assert!(q.is_empty());
    }
}
