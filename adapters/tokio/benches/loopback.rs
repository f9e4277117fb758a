//! Single-peer fetch over loopback versus a raw copy of the same bytes over the same transport
//! (TCP, then QUIC), plus BLAKE3 hashing speed, in one run (the body is
//! `tierswarm_testkit::bench`, shared with async-std and smol).
//!
//! ```text
//! TIERSWARM_BENCH_DIR=/dev/shm cargo bench -p tierswarm-tokio --bench loopback       # 1 GiB
//! TIERSWARM_BENCH_SIZE=256MiB TIERSWARM_BENCH_TRANSPORTS=quic TIERSWARM_BENCH_RUNS=3 \
//!     cargo bench -p tierswarm-tokio --bench loopback
//! ```
#![forbid(unsafe_code)]

use tierswarm_testkit::bench::{on_tokio, Bench};
use tierswarm_tokio::Tokio;

fn main() {
    let bench = Bench::setup();
    bench.measure_all::<Tokio>("tokio", tierswarm_tokio::transports, on_tokio());
}
