use std::time::Duration;
use tierswarm_core::availability::PeerView;
use tierswarm_core::node::PeerId;
use tierswarm_tests::*;
fn main() {
    let len = 64 * 1024 * 1024;
    let mut sw = Swarm::new(Duration::from_millis(20));
    let s = sw.add(config("s", len, true), None);
    let a = sw.add(config("a", len, true), Some(&[]));
    let b = sw.add(config("b", len, true), Some(&[]));
    sw.connect(s, a);
    sw.connect(s, b);
    sw.connect(a, b);
    for step in 1..20 {
        sw.run_until(sw.now.add(Duration::from_millis(200)));
        let na = sw.node(a);
        let nb = sw.node(b);
        let v = na.peer_view(PeerId(b as u64));
        let desc = match v {
            Some(PeerView::Tiered(t)) => format!("all={:?} partial={:?} w0={:?} w1={:?}", t.all_bits(), t.partial_bits(), t.window(0).map(|w| w.count_ones()), t.window(1).map(|w| w.count_ones())),
            _ => "?".into(),
        };
        println!("{step}: a has {} b has {} ; a's view of b: {desc}", na.local().units_present(), nb.local().units_present());
    }
}
