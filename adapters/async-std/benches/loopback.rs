//! Single-peer fetch over loopback on async-std beside the same on tokio, each against a raw
//! socket copy of the same bytes on its runtime, plus BLAKE3 hashing speed, in one run (the body
//! is `tierswarm_testkit::bench`, shared with the tokio adapter's benchmark).
//!
//! ```text
//! TIERSWARM_BENCH_DIR=/tmp cargo bench -p tierswarm-async-std --bench loopback    # 1 GiB
//! TIERSWARM_BENCH_SIZE=256MiB cargo bench -p tierswarm-async-std --bench loopback
//! ```
#![forbid(unsafe_code)]

use tierswarm_async_std::AsyncStd;
use tierswarm_testkit::bench::{on_tokio, Bench};
use tierswarm_tokio::Tokio;

fn main() {
    let bench = Bench::setup();
    bench.measure::<AsyncStd>("async-std", async_std::task::block_on);
    bench.measure::<Tokio>("tokio", on_tokio());
}
