//! Single-peer fetch over loopback on async-std beside the same on tokio, each against a raw
//! copy of the same bytes over the same transport on its runtime (TCP, then QUIC), plus BLAKE3
//! hashing speed, in one run (the body is `tierswarm_testkit::bench`).
//!
//! ```text
//! TIERSWARM_BENCH_DIR=/dev/shm cargo bench -p tierswarm-async-std --bench loopback    # 1 GiB
//! TIERSWARM_BENCH_SIZE=256MiB cargo bench -p tierswarm-async-std --bench loopback
//! ```
#![forbid(unsafe_code)]

use tierswarm_async_std::AsyncStd;
use tierswarm_testkit::bench::{on_tokio, Bench};
use tierswarm_tokio::Tokio;

fn main() {
    let bench = Bench::setup();
    bench.measure_all::<AsyncStd>(
        "async-std",
        tierswarm_async_std::transports,
        async_std::task::block_on,
    );
    bench.measure_all::<Tokio>("tokio", tierswarm_tokio::transports, on_tokio());
}
