//! Helpers shared by the unit tests.

use std::collections::HashMap;
use std::hash::Hash;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;

/// Draws `n` values of `strategy` (deterministically) and returns the share of them that
/// `classify` puts in each class: how often a generator reaches each path of a decoder.
pub(crate) fn shares<S: Strategy, K: Eq + Hash>(
    strategy: S,
    n: u32,
    mut classify: impl FnMut(S::Value) -> K,
) -> HashMap<K, f64> {
    let mut runner = TestRunner::deterministic();
    let mut counts = HashMap::new();
    for _ in 0..n {
        let value = strategy.new_tree(&mut runner).expect("a value").current();
        *counts.entry(classify(value)).or_insert(0u32) += 1;
    }
    counts
        .into_iter()
        .map(|(k, c)| (k, f64::from(c) / f64::from(n)))
        .collect()
}
