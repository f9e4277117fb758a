//! Helpers shared by the CLI's process-level tests (`crash.rs`, `descriptors.rs`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Child;

/// Writes `len` pseudo-random bytes (a xorshift from `seed`) to `path`.
pub fn make_file(path: &Path, len: usize, seed: u64) {
    let mut x = seed | 1;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    std::fs::write(path, data).unwrap();
}

/// Kills `child` (by its id) and reaps it when dropped.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads the first line of `share`'s stdout (piped), `listening on URL`, and returns the URL.
pub fn listening_url(share: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(share.stdout.take().expect("stdout is piped"))
        .read_line(&mut line)
        .unwrap();
    line.trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("share said {line:?}"))
        .to_string()
}
