use std::time::Duration;
use tierswarm_tests::*;
fn main() {
    let len = 64 * 1024 * 1024;
    let mut sw = Swarm::new(Duration::from_millis(20));
    let s = sw.add(config("s", len, true), None);
    let a = sw.add(config("a", len, true), Some(&[]));
    let b = sw.add(config("b", len, true), Some(&[]));
    sw.log_kinds.insert("summary");
    sw.log_kinds.insert("refine_request");
    sw.log_kinds.insert("refine_response");
    sw.connect(s, a);
    sw.connect(s, b);
    sw.connect(a, b);
    sw.run_until(sw.now.add(Duration::from_millis(700)));
    for l in &sw.log { if l.contains("1->2") || l.contains("2->1") || l.contains("\"refine") { println!("{l}"); } }
}
