//! What `share` and `fetch` show while they run: the `listening on` lines and, on a terminal, a
//! live status line (share) or a progress bar (fetch); or, with `--json-events`, every event
//! as one JSON object per line on stdout.
//!
//! The live view uses indicatif, as the fetch bar and the demo already do: it redraws in place
//! only when stderr is a terminal (so nothing but plain lines reaches a pipe or a file), and
//! prints warnings above the line without tearing it.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use tierswarm::{Event, ResumeNotes, Transfer};

/// How long the live view lets events gather between looks. A transfer tells an event per unit
/// (two per unit fetched): waiting on each woke this thread, with a context switch on both
/// sides, tens of thousands of times per GiB. The queue holds thousands of events, and a
/// status line needs no more than this.
const VIEW_FRAME: Duration = Duration::from_millis(20);

/// Every event of `transfer` to `each` until it ends, taken in batches: after the first
/// event of a batch (waited for), those already queued, then `batch_done`, then a pause of
/// [`VIEW_FRAME`] before waiting again.
fn each_event(transfer: &mut Transfer, mut each: impl FnMut(Event), mut batch_done: impl FnMut()) {
    while let Some(e) = transfer.next_event() {
        each(e);
        let ended = loop {
            match transfer.events().next().now_or_never() {
                Some(Some(e)) => each(e),
                Some(None) => break true,
                None => break false,
            }
        };
        batch_done();
        if ended {
            return;
        }
        std::thread::sleep(VIEW_FRAME);
    }
}

pub(crate) fn spinner(msg: String) -> ProgressBar {
    let pb = ProgressBar::new_spinner().with_message(msg);
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

pub(crate) fn bytes_bar(len: u64) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb
}

/// `4.77 MiB`: sizes for people (the units crate's `format_size` is exact, for files).
pub(crate) fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.2} {}", UNITS[i])
    }
}

/// `228.31 MiB/s`.
pub(crate) fn format_rate(bytes_per_second: u64) -> String {
    format!("{}/s", format_size(bytes_per_second))
}

/// `1.05 s`, `20.9 ms`.
pub(crate) fn format_duration(secs: f64) -> String {
    if secs >= 1.0 {
        format!("{secs:.2} s")
    } else {
        format!("{:.1} ms", secs * 1000.0)
    }
}

/// The `resuming: ...` line of a fetch that found units at its output.
pub(crate) fn resumed(notes: &ResumeNotes, total: u64) -> String {
    format!(
        "resuming: {} of {total} units already verified{}{}",
        notes.units,
        if notes.dropped_without_proof > 0 {
            format!(
                " ({} without a proof will be fetched again)",
                notes.dropped_without_proof
            )
        } else {
            String::new()
        },
        if notes.file_verified {
            " (the whole file hashes to the root)".to_string()
        } else if notes.units_checked > 0 {
            format!(" ({} read back and checked)", notes.units_checked)
        } else {
            String::new()
        }
    )
}

/// Every event of `transfer`, as JSON lines on stdout, until it ends (flushed after each batch:
/// dashboards read them as they come).
fn print_all_json(transfer: &mut Transfer) {
    let out = std::cell::RefCell::new(std::io::BufWriter::new(std::io::stdout()));
    each_event(
        transfer,
        |e| {
            // The event types serialise infallibly (strings, numbers, maps with string keys).
            if let Ok(line) = serde_json::to_string(&e) {
                let _ = writeln!(out.borrow_mut(), "{line}");
            }
        },
        || {
            let _ = out.borrow_mut().flush();
        },
    );
    let _ = out.borrow_mut().flush();
}

/// One `listening on URL` line per listener (stdout, flushed: scripts read it).
fn print_listening(transfer: &Transfer) {
    let mut out = std::io::stdout().lock();
    for url in transfer.listening() {
        let _ = writeln!(out, "listening on {url}");
    }
    let _ = out.flush();
}

/// A bar that draws only on a terminal.
fn on_terminal(make: impl FnOnce() -> ProgressBar) -> ProgressBar {
    if std::io::stderr().is_terminal() {
        make()
    } else {
        ProgressBar::hidden()
    }
}

/// Shows a share until it ends: JSON lines, or the listening lines and a status line refreshed
/// with every rate event (once a second).
pub(crate) fn share(transfer: &mut Transfer, json: bool) {
    if json {
        return print_all_json(transfer);
    }
    print_listening(transfer);
    let line = on_terminal(|| {
        let pb = ProgressBar::new_spinner();
        pb.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        pb.set_message("waiting for peers");
        pb
    });
    each_event(
        transfer,
        |e| match e {
            Event::Rate {
                peers,
                upload_bytes_per_s,
                units_served,
                queued,
                ..
            } => {
                line.set_message(format!(
                    "{peers} peers | up {} | {units_served} units served | {queued} queued",
                    format_rate(upload_bytes_per_s)
                ));
                line.tick();
            }
            Event::Warning { message } => {
                line.suspend(|| eprintln!("tierswarm: warning: {message}"))
            }
            _ => {}
        },
        || {},
    );
    line.finish_and_clear();
}

/// Shows a fetch until it ends: JSON lines, or the listening lines and a progress bar.
pub(crate) fn fetch(transfer: &mut Transfer, json: bool) {
    if json {
        return print_all_json(transfer);
    }
    print_listening(transfer);
    let m = transfer.manifest();
    let name: String = m.name.chars().take(12).collect();
    let bar = on_terminal(|| bytes_bar(m.file_len).with_message(name));
    let resumed = transfer.resumed().map_or(0, |n| n.units);
    bar.set_position(resumed.saturating_mul(65536).min(m.file_len));
    each_event(
        transfer,
        |e| match e {
            Event::Progress { bytes, .. } => bar.set_position(bytes),
            Event::BadUnit { peer, unit, reason } => bar.suspend(|| {
                eprintln!("peer {peer} sent a bad unit {unit} ({reason}): disconnected")
            }),
            Event::Warning { message } => {
                bar.suspend(|| eprintln!("tierswarm: warning: {message}"))
            }
            _ => {}
        },
        || {},
    );
    bar.finish_and_clear();
}

/// `n` and `noun`, plural unless `n` is 1: "1 peer", "3 peers".
pub(crate) fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_are_plural_unless_one() {
        assert_eq!(super::count(0, "peer"), "0 peers");
        assert_eq!(super::count(1, "peer"), "1 peer");
        assert_eq!(super::count(8, "peer"), "8 peers");
    }
}
