//! Single-peer fetch over loopback versus a raw tokio socket copy of the same bytes, plus BLAKE3
//! hashing speed, in one run (the body is `tierswarm_testkit::bench`, shared with async-std).
//!
//! ```text
//! cargo bench -p tierswarm-tokio --bench loopback            # 1 GiB
//! TIERSWARM_BENCH_SIZE=256MiB cargo bench -p tierswarm-tokio --bench loopback
//! ```
#![forbid(unsafe_code)]

use tierswarm_testkit::bench::{on_tokio, Bench};
use tierswarm_tokio::Tokio;

fn main() {
    let bench = Bench::setup();
    bench.measure::<Tokio>("tokio", on_tokio());
}
