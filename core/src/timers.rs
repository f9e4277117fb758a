//! Many deadlines, one queue: a min-heap keyed by `(deadline, sequence)`, so equal deadlines
//! fire in insertion order and [`TimerQueue::next`] is the node's `poll_timeout`.
//!
//! Cancellation is lazy: a timer carries the token it was armed with, and the owner ignores a
//! fired timer whose token is no longer current (cheaper than removing from the middle of a
//! heap, and it makes stale timers explicit).
//!
//! The heap holds 24-byte keys and the items sit in a slab beside it: a node in a crowd keeps
//! thousands of lazily cancelled request timers, and sifting small keys touches fewer cache
//! lines than sifting the items themselves.

use crate::time::Timestamp;
use core::cmp::Reverse;
use std::collections::BinaryHeap;

/// A deadline queue of `T`.
#[derive(Debug, Clone)]
pub struct TimerQueue<T: Ord> {
    /// `(deadline, sequence, slot)`: the sequence orders equal deadlines; the slot is where the
    /// item waits in `items`.
    heap: BinaryHeap<Reverse<(Timestamp, u64, u32)>>,
    items: Vec<Option<T>>,
    /// Slots of `items` free for reuse.
    free: Vec<u32>,
    seq: u64,
}

impl<T: Ord> Default for TimerQueue<T> {
    fn default() -> Self {
        TimerQueue {
            heap: BinaryHeap::new(),
            items: Vec::new(),
            free: Vec::new(),
            seq: 0,
        }
    }
}

impl<T: Ord> TimerQueue<T> {
    /// Arms `item` to fire at `at`.
    pub fn push(&mut self, at: Timestamp, item: T) {
        self.seq += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.items[slot as usize] = Some(item);
                slot
            }
            None => {
                // More than 2^32 armed timers cannot be held in memory anyway.
                let slot = u32::try_from(self.items.len()).unwrap_or(u32::MAX);
                self.items.push(Some(item));
                slot
            }
        };
        self.heap.push(Reverse((at, self.seq, slot)));
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Timestamp> {
        self.heap.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Removes and returns the earliest item due at or before `now`.
    pub fn pop_due(&mut self, now: Timestamp) -> Option<T> {
        if self.next()? <= now {
            self.pop()
        } else {
            None
        }
    }

    /// The earliest item, without removing it.
    pub fn peek(&self) -> Option<&T> {
        let Reverse((_, _, slot)) = self.heap.peek()?;
        self.items.get(*slot as usize)?.as_ref()
    }

    /// Removes the earliest item.
    pub fn pop(&mut self) -> Option<T> {
        let Reverse((_, _, slot)) = self.heap.pop()?;
        self.free.push(slot);
        self.items.get_mut(slot as usize)?.take()
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
        let (items, free) = (&mut self.items, &mut self.free);
        self.heap.retain(|Reverse((_, _, slot))| {
            let kept = items
                .get(*slot as usize)
                .and_then(Option::as_ref)
                .is_some_and(&mut keep);
            if !kept {
                if let Some(item) = items.get_mut(*slot as usize) {
                    *item = None;
                }
                free.push(*slot);
            }
            kept
        });
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

    #[test]
    fn slots_are_reused_and_retain_frees_them() {
        let mut q = TimerQueue::default();
        for i in 0..4u32 {
            q.push(Timestamp::from_micros(u64::from(10 - i)), i);
        }
        q.retain(|&i| i % 2 == 0);
        assert_eq!(q.len(), 2);
        assert_eq!(q.peek(), Some(&2));
        q.push(Timestamp::from_micros(1), 7);
        q.push(Timestamp::from_micros(20), 8);
        assert_eq!(q.items.len(), 4, "freed slots were reused");
        let fired: Vec<u32> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(fired, vec![7, 2, 0, 8]);
        assert_eq!(q.free.len(), 4);
    }
}
