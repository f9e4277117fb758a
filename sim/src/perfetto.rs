//! Chrome trace-event JSON (`--perfetto`), viewable in <https://ui.perfetto.dev> or
//! `chrome://tracing`.
//!
//! Each peer is a process (`pid` = peer id, named by a metadata event); spans are complete
//! events (`"ph": "X"`), instants are `"ph": "i"`. Timestamps are simulated microseconds, which
//! is the format's native unit. Events are written in the order given, fields in a fixed order.

use serde::Serialize;

/// A span of activity on one peer, e.g. one unit transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// The peer (becomes the `pid`).
    pub peer: usize,
    /// A row within the peer (becomes the `tid`); spans on one row should nest, so put
    /// overlapping activities (e.g. concurrent transfers) on different tracks.
    pub track: u64,
    /// What happened.
    pub name: String,
    /// Start, simulated µs.
    pub start_us: u64,
    /// Duration, µs.
    pub dur_us: u64,
}

/// A point event on one peer, e.g. "completed" or "crashed".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instant {
    /// The peer (becomes the `pid`).
    pub peer: usize,
    /// What happened.
    pub name: String,
    /// When, simulated µs.
    pub at_us: u64,
}

#[derive(Serialize)]
struct Args<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct Event<'a> {
    name: &'a str,
    ph: &'static str,
    pid: usize,
    tid: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dur: Option<u64>,
    /// Instant scope: `"p"` (the whole process row).
    #[serde(skip_serializing_if = "Option::is_none")]
    s: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    args: Option<Args<'a>>,
}

#[derive(Serialize)]
struct Trace<'a> {
    #[serde(rename = "traceEvents")]
    trace_events: Vec<Event<'a>>,
    #[serde(rename = "displayTimeUnit")]
    display_time_unit: &'static str,
}

/// Renders `{"traceEvents": [...]}`: a `process_name` metadata event per entry of `peer_names`
/// (index = peer id), then the spans, then the instants.
pub fn render(peer_names: &[String], spans: &[Span], instants: &[Instant]) -> String {
    let names = peer_names.iter().enumerate().map(|(pid, name)| Event {
        name: "process_name",
        ph: "M",
        pid,
        tid: 0,
        ts: None,
        dur: None,
        s: None,
        args: Some(Args { name }),
    });
    let spans = spans.iter().map(|s| Event {
        name: &s.name,
        ph: "X",
        pid: s.peer,
        tid: s.track,
        ts: Some(s.start_us),
        dur: Some(s.dur_us),
        s: None,
        args: None,
    });
    let instants = instants.iter().map(|i| Event {
        name: &i.name,
        ph: "i",
        pid: i.peer,
        tid: 0,
        ts: Some(i.at_us),
        dur: None,
        s: Some("p"),
        args: None,
    });
    let trace = Trace {
        trace_events: names.chain(spans).chain(instants).collect(),
        display_time_unit: "ms",
    };
    // Plain structs with string keys always serialise.
    let mut json = serde_json::to_string(&trace).unwrap_or_default();
    json.push('\n');
    json
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_trace_events() {
        let json = render(
            &["seed".to_owned(), "leecher \"1\"".to_owned()],
            &[Span {
                peer: 1,
                track: 2,
                name: "unit 7".into(),
                start_us: 1_000,
                dur_us: 250,
            }],
            &[Instant {
                peer: 1,
                name: "complete".into(),
                at_us: 5_000,
            }],
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let events = v["traceEvents"].as_array().unwrap();
        assert_eq!(events.len(), 4);
        assert_eq!(events[1]["args"]["name"], "leecher \"1\"");
        assert_eq!(events[2]["ph"], "X");
        assert_eq!(events[2]["pid"], 1);
        assert_eq!(events[2]["tid"], 2);
        assert_eq!(events[2]["ts"], 1_000);
        assert_eq!(events[2]["dur"], 250);
        assert_eq!(events[3]["ph"], "i");
        assert_eq!(events[3]["ts"], 5_000);
        assert!(json.starts_with(r#"{"traceEvents":[{"name":"process_name","ph":"M","pid":0"#));
    }
}
