//! End-to-end tests over real loopback TCP and QUIC (and the in-memory transport), each
//! bounded by a timeout. The scenarios are `tierswarm_testkit`'s, run here on tokio.

use std::future::Future;

use tierswarm_io::verify_unit;
use tierswarm_testkit::{make_file, Host, Net, LIMIT};
use tierswarm_tokio::Tokio;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

fn tcp() -> Host {
    Host::on::<Tokio>(&Net::tcp(tierswarm_tokio::transports))
}

fn quic() -> Host {
    Host::on::<Tokio>(&Net::quic(tierswarm_tokio::transports))
}

async fn bounded(test: impl Future<Output = ()>) {
    timeout(LIMIT, test).await.unwrap();
}

/// One test per transport for each scenario.
macro_rules! over_tcp_and_quic {
    ($($name:ident: |$h:ident| $body:expr;)*) => {$(
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tcp() {
                let $h = super::tcp();
                bounded($body).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn quic() {
                let $h = super::quic();
                bounded($body).await;
            }
        }
    )*};
}

over_tcp_and_quic! {
    verified_fetch: |h| tierswarm_testkit::verified_fetch(&h, &h);
    killed_fetch_resumes_without_refetching_verified_units:
        |h| tierswarm_testkit::killed_fetch_resumes_without_refetching_verified_units(&h);
    corrupt_peer_is_dropped_and_download_completes:
        |h| tierswarm_testkit::corrupt_peer_is_dropped_and_download_completes(&h);
    units_verified_on_the_loop: |h| tierswarm_testkit::units_verified_on_the_loop(&h);
    recorded_sessions_replay_identically:
        |h| tierswarm_testkit::recorded_sessions_replay_identically(&h);
    crossed_dials_keep_one_connection:
        |h| tierswarm_testkit::crossed_dials_keep_one_connection(&h);
    three_leechers_trade_with_each_other:
        |h| tierswarm_testkit::swarm_completes(&h, &[h.clone(), h.clone(), h.clone()]);
}

/// Leechers listen on TCP and QUIC in turn and dial each other at those URLs: every leecher
/// has peers of both kinds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_tcp_and_quic_swarm_completes() {
    let (t, q) = (tcp(), quic());
    bounded(tierswarm_testkit::swarm_completes(
        &q,
        &[t.clone(), q.clone(), t.clone(), q.clone()],
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pinned_fingerprint_is_refused() {
    bounded(tierswarm_testkit::wrong_fingerprint_is_refused(&quic())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transports_keep_their_promises() {
    bounded(async {
        let t = tierswarm_tokio::transports;
        tierswarm_testkit::transport_keeps_its_promises(&Net::tcp(t), false).await;
        tierswarm_testkit::transport_keeps_its_promises(&Net::mem(), false).await;
        tierswarm_testkit::transport_keeps_its_promises(&Net::quic(t), true).await;
    })
    .await;
}

/// The same share and fetch through the real driver with no socket at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_transport_fetch_and_swarm() {
    let h = Host::on::<Tokio>(&Net::mem());
    bounded(async {
        tierswarm_testkit::verified_fetch(&h, &h).await;
        tierswarm_testkit::swarm_completes(&h, &[h.clone(), h.clone(), h.clone()]).await;
    })
    .await;
}

/// A minimal legacy client written only from `contracts.md`: its own protobuf structs, 4-byte
/// big-endian framing, a handshake without capability fields, BITFIELD, REQUEST, TRANSFER.
mod legacy {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PeerMessage {
        #[prost(bytes = "vec", tag = "1")]
        pub info_hash: Vec<u8>,
        #[prost(int32, tag = "2")]
        pub r#type: i32,
        #[prost(bytes = "vec", tag = "3")]
        pub payload: Vec<u8>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HandshakePayload {
        #[prost(bytes = "vec", tag = "1")]
        pub info_hash: Vec<u8>,
        #[prost(string, tag = "2")]
        pub peer_id: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BitfieldPayload {
        #[prost(bytes = "vec", tag = "1")]
        pub bits: Vec<u8>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TransferRequestPayload {
        #[prost(uint64, tag = "1")]
        pub unit_index: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BaoProofNode {
        #[prost(bytes = "vec", tag = "1")]
        pub hash: Vec<u8>,
        #[prost(uint32, tag = "2")]
        pub level: u32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BaoProof {
        #[prost(int64, tag = "1")]
        pub leaf_start: i64,
        #[prost(int64, tag = "2")]
        pub leaf_count: i64,
        #[prost(message, repeated, tag = "3")]
        pub proof: Vec<BaoProofNode>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TransferPayload {
        #[prost(uint64, tag = "1")]
        pub unit_index: u64,
        #[prost(bytes = "vec", tag = "2")]
        pub data: Vec<u8>,
        #[prost(message, optional, tag = "3")]
        pub proof: Option<BaoProof>,
    }
    pub const HANDSHAKE: i32 = 0;
    pub const BITFIELD: i32 = 1;
    pub const REQUEST: i32 = 3;
    pub const TRANSFER: i32 = 4;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_peer_fetches_units_from_share() {
    use prost::Message as _;
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let len = 3 * 65536 + 500;
        let src = make_file(dir.path(), "src.bin", len, 6);
        let bytes = std::fs::read(&src).unwrap();
        let (seeder, manifest) = tcp().seed(&src, tierswarm_testkit::opts("seed", 1));
        let root = manifest.root.to_vec();
        let addr = seeder.url.socket_addr().unwrap();
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        async fn send(sock: &mut tokio::net::TcpStream, root: &[u8], kind: i32, payload: Vec<u8>) {
            let m = legacy::PeerMessage {
                info_hash: root.to_vec(),
                r#type: kind,
                payload,
            };
            let body = m.encode_to_vec();
            sock.write_all(&(body.len() as u32).to_be_bytes())
                .await
                .unwrap();
            sock.write_all(&body).await.unwrap();
        }
        async fn recv(sock: &mut tokio::net::TcpStream) -> legacy::PeerMessage {
            let mut len = [0u8; 4];
            sock.read_exact(&mut len).await.unwrap();
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            sock.read_exact(&mut body).await.unwrap();
            legacy::PeerMessage::decode(&body[..]).unwrap()
        }
        let hs = legacy::HandshakePayload {
            info_hash: root.clone(),
            peer_id: "old".into(),
        };
        send(&mut sock, &root, legacy::HANDSHAKE, hs.encode_to_vec()).await;
        let theirs = recv(&mut sock).await;
        assert_eq!(theirs.r#type, legacy::HANDSHAKE);
        assert_eq!(
            legacy::HandshakePayload::decode(&theirs.payload[..])
                .unwrap()
                .info_hash,
            root
        );
        let bf = recv(&mut sock).await;
        assert_eq!(
            bf.r#type,
            legacy::BITFIELD,
            "a legacy peer gets the flat bitfield"
        );
        let bits = legacy::BitfieldPayload::decode(&bf.payload[..])
            .unwrap()
            .bits;
        assert_eq!(bits, vec![0b1111_0000]); // 4 units, MSB first, spare bits zero
        send(
            &mut sock,
            &root,
            legacy::BITFIELD,
            legacy::BitfieldPayload { bits: vec![0] }.encode_to_vec(),
        )
        .await;
        for unit in [0u64, 3, 1] {
            let req = legacy::TransferRequestPayload { unit_index: unit };
            send(&mut sock, &root, legacy::REQUEST, req.encode_to_vec()).await;
        }
        let mut got = Vec::new();
        while got.len() < 3 {
            let m = recv(&mut sock).await;
            if m.r#type != legacy::TRANSFER {
                continue; // keep-alives and the like are not for a legacy peer to understand
            }
            let t = legacy::TransferPayload::decode(&m.payload[..]).unwrap();
            let s = (t.unit_index * 65536) as usize;
            let e = (s + 65536).min(bytes.len());
            assert_eq!(t.data, bytes[s..e]);
            let p = t.proof.unwrap();
            let proof = tierswarm_io::UnitProof {
                leaf_start: p.leaf_start as u64,
                leaf_count: p.leaf_count as u64,
                nodes: p
                    .proof
                    .iter()
                    .map(|n| tierswarm_io::ProofNode {
                        hash: n.hash.clone().try_into().unwrap(),
                        level: n.level,
                    })
                    .collect(),
            };
            verify_unit(&manifest.root, len, t.unit_index, &t.data, &proof).unwrap();
            got.push(t.unit_index);
        }
        got.sort_unstable();
        assert_eq!(got, vec![0, 1, 3]);
        drop(sock);
        seeder.stop().await;
    })
    .await;
}
