//! BLAKE3 throughput, outboard build, and per-unit proof/verify costs.
//!
//! Run with `cargo bench -p tierswarm-io`.

use std::sync::OnceLock;

use divan::counter::BytesCount;
use divan::{black_box, Bencher};
use tierswarm_io::content::{verify_unit, Outboard, UnitProof, UNIT_LEN};

const FILE_LEN: usize = 64 * 1024 * 1024;

fn main() {
    divan::main();
}

fn file() -> &'static [u8] {
    static FILE: OnceLock<Vec<u8>> = OnceLock::new();
    FILE.get_or_init(|| {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..FILE_LEN)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    })
}

fn outboard() -> &'static Outboard {
    static OUTBOARD: OnceLock<Outboard> = OnceLock::new();
    OUTBOARD.get_or_init(|| Outboard::build(file(), FILE_LEN as u64).expect("in-memory build"))
}

/// A unit in the middle of the file (full-depth proof).
const UNIT: u64 = 517;

fn unit_data(unit: u64) -> &'static [u8] {
    let start = (unit * UNIT_LEN) as usize;
    &file()[start..start + UNIT_LEN as usize]
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn hash_64mib(bencher: Bencher) {
    let data = file();
    bencher
        .counter(BytesCount::new(data.len()))
        .bench(|| blake3::hash(black_box(data)));
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn outboard_build_64mib(bencher: Bencher) {
    let data = file();
    bencher
        .counter(BytesCount::new(data.len()))
        .bench(|| Outboard::build(black_box(data), data.len() as u64));
}

#[divan::bench]
fn proof_per_unit(bencher: Bencher) {
    let outboard = outboard();
    bencher.bench(|| outboard.proof(black_box(UNIT)));
}

#[divan::bench]
fn verify_per_unit(bencher: Bencher) {
    let outboard = outboard();
    let root = outboard.root();
    let proof: UnitProof = outboard.proof(UNIT).expect("unit in range");
    let data = unit_data(UNIT);
    bencher.counter(BytesCount::new(data.len())).bench(|| {
        verify_unit(
            &root,
            FILE_LEN as u64,
            black_box(UNIT),
            black_box(data),
            &proof,
        )
    });
}

/// The final check of a download: a BLAKE3 pass over a 1 GiB output file through
/// `DataFile::hash_threads` (1 MiB positional reads) by 1 and 2 threads. The file is written
/// once to `$TIERSWARM_BENCH_DIR` (default `/dev/shm`, so the figure is hashing, not the disk)
/// and removed at the end.
#[divan::bench(sample_count = 5, sample_size = 1, args = [1, 2])]
fn verify_file_1gib(bencher: Bencher, threads: usize) {
    const LEN: u64 = 1 << 30;
    let dir = std::env::var_os("TIERSWARM_BENCH_DIR").unwrap_or_else(|| "/dev/shm".into());
    let path = std::path::Path::new(&dir).join(format!("tierswarm-bench-{}", std::process::id()));
    tierswarm_io::data_file::write_pseudo_random(&path, LEN, 7).expect("bench file");
    let data = tierswarm_io::DataFile::open(&path).expect("bench file");
    bencher
        .counter(BytesCount::new(LEN))
        .bench(|| data.hash_threads(threads).expect("readable"));
    let _ = std::fs::remove_file(&path);
}
