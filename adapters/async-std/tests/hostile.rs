//! Hostile peers beside honest transfers, on async-std over loopback TCP
//! (`tierswarm_testkit::robust`). One test in this binary: it counts descriptors.

use tierswarm_async_std::AsyncStd;
use tierswarm_testkit::robust::{self, Crowd};
use tierswarm_testkit::{bounded, Host, Net};

#[test]
fn hostile_peers_cost_only_their_own_connections() {
    let h = Host::on::<AsyncStd>(&Net::tcp(tierswarm_async_std::transports));
    async_std::task::block_on(async {
        bounded::<AsyncStd, _>(robust::slow_readers_leave_upload_to_others(&h)).await;
        bounded::<AsyncStd, _>(robust::idle_peers_do_not_keep_honest_ones_out(&h)).await;
        bounded::<AsyncStd, _>(robust::dropped_peer_leaves_no_socket_behind(&h)).await;
        bounded::<AsyncStd, _>(robust::hostile_crowd_beside_honest_fetch(&h, Crowd::SMALL)).await;
        bounded::<AsyncStd, _>(robust::faults_through_a_proxy(&h)).await;
    });
}
