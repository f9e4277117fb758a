//! End-to-end tests over real loopback TCP, each bounded by a timeout.

use tierswarm_core::wire::{decode_frame, encode_frame, Message};
use tierswarm_core::Geometry;
use tierswarm_io::driver::Runtime;
use tierswarm_io::driver::{Outcome, Resume};
use tierswarm_io::{verify_unit, Outboard, Session, SessionEvent};
use tierswarm_testkit::{make_file, opts, same_bytes, spawn_run, LIMIT};
use tierswarm_tokio::Tokio;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

/// The shared helpers, on tokio.
fn seed(
    path: &std::path::Path,
    o: tierswarm_io::SessionOptions,
) -> (tierswarm_testkit::Serving, tierswarm_io::Manifest) {
    tierswarm_testkit::seed::<Tokio>(path, o)
}

async fn fetch(
    manifest: &tierswarm_io::Manifest,
    out: &std::path::Path,
    peers: Vec<std::net::SocketAddr>,
    o: tierswarm_io::SessionOptions,
) -> (Session, Outcome, tierswarm_io::driver::ResumeNotes) {
    tierswarm_testkit::fetch::<Tokio>(manifest, out, peers, o).await
}

async fn listener() -> tokio::net::TcpListener {
    Tokio::listener(tierswarm_testkit::listener()).unwrap()
}

const MIB: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_fetch_odd_length() {
    timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let src = make_file(dir.path(), "src.bin", 3 * MIB + 12345, 1);
        let (seeder, manifest) = seed(&src, opts("seed", 1));
        assert_eq!(
            manifest.root,
            *blake3::hash(&std::fs::read(&src).unwrap()).as_bytes()
        );
        let out = dir.path().join("out.bin");
        let (leecher, outcome, notes) =
            fetch(&manifest, &out, vec![seeder.addr], opts("leech", 2)).await;
        assert_eq!(outcome, Outcome::Complete);
        assert_eq!(notes.units, 0);
        assert!(same_bytes(&src, &out));
        assert_eq!(leecher.stats().failed_units, 0);
        // The store says complete; a second fetch has nothing to do and touches no peer.
        let (again, outcome, notes) =
            fetch(&manifest, &out, vec![seeder.addr], opts("l2", 3)).await;
        assert_eq!(outcome, Outcome::Complete);
        assert_eq!(notes.units, 49);
        assert_eq!(again.requested_units().count_ones(), 0);
        let (_, outcome) = seeder.stop().await;
        assert_eq!(outcome, Outcome::Drained);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_leechers_trade_with_each_other() {
    timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let src = make_file(dir.path(), "src.bin", 8 * MIB + 777, 2);
        // A slow seeder (one upload slot) leaves room for the leechers to trade.
        let mut seed_opts = opts("seed", 10);
        seed_opts.limits.upload_slots = 1;
        seed_opts.limits.upload_slots_per_peer = 1;
        let (seeder, manifest) = seed(&src, seed_opts);
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        let listeners: Vec<_> = (0..3).map(|_| tierswarm_testkit::listener()).collect();
        let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let mut tasks = Vec::new();
        let mut stops = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            let out = dir.path().join(format!("out{i}.bin"));
            let (s, _) = Session::leecher(
                &manifest,
                &out,
                Resume::Check,
                opts(&format!("l{i}"), 20 + i as u64),
            )
            .unwrap();
            let mut peers = vec![seeder.addr];
            peers.extend(&addrs[..i]);
            let (stop, rx) = tokio::sync::oneshot::channel::<()>();
            let done = done_tx.clone();
            stops.push(stop);
            let shutdown = async move {
                let _ = rx.await;
            };
            tasks.push(spawn_run::<Tokio>(
                s,
                Some(l),
                peers,
                false,
                shutdown,
                move |e| {
                    if *e == SessionEvent::Complete {
                        let _ = done.send(i);
                    }
                },
            ));
        }
        for _ in 0..3 {
            done_rx.recv().await.unwrap();
        }
        for s in stops {
            let _ = s.send(());
        }
        let mut served = 0;
        for (i, t) in tasks.into_iter().enumerate() {
            let (s, outcome) = t.join().await;
            assert_eq!(outcome, Outcome::Drained);
            assert!(s.is_complete());
            served += s.stats().units_served;
            assert!(same_bytes(&src, &dir.path().join(format!("out{i}.bin"))));
        }
        assert!(served > 0, "leechers never served each other");
        seeder.stop().await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_fetch_resumes_without_refetching_verified_units() {
    timeout(
        LIMIT,
        tierswarm_testkit::killed_fetch_resumes_without_refetching_verified_units::<Tokio>(),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_peer_is_dropped_and_download_completes() {
    timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let len = 2 * MIB + 5;
        let src = make_file(dir.path(), "src.bin", len, 4);
        let bytes = std::fs::read(&src).unwrap();
        let outboard = Outboard::build(&bytes[..], len).unwrap();
        let root = outboard.root();
        let units = Geometry::new(len).unwrap().units();

        // The hostile peer: a legacy peer claiming everything and sending flipped bytes with
        // correctly shaped proofs.
        let hostile = listener().await;
        let hostile_addr = hostile.local_addr().unwrap();
        let hostile_task = tokio::spawn(async move {
            let (mut sock, _) = hostile.accept().await.unwrap();
            let mut out = bytes::BytesMut::new();
            let hs = Message::Handshake {
                info_hash: root.to_vec().into(),
                peer_id: "evil".into(),
                capabilities: None,
            };
            encode_frame(&root, &hs, &mut out);
            let bits = vec![0xffu8; units.div_ceil(8) as usize];
            let mut bits = bits;
            if units % 8 != 0 {
                *bits.last_mut().unwrap() = 0xffu8 << (8 - units % 8);
            }
            encode_frame(&root, &Message::Bitfield { bits: bits.into() }, &mut out);
            sock.write_all(&out).await.unwrap();
            let mut buf = bytes::BytesMut::new();
            let mut corrupted = 0;
            loop {
                while let Some(f) = decode_frame(&mut buf, 1 << 24).unwrap() {
                    if let Message::Request { unit } = f.msg {
                        let s = (unit * 65536) as usize;
                        let e = (s + 65536).min(bytes.len());
                        let mut data = bytes[s..e].to_vec();
                        data[0] ^= 0xff;
                        let proof =
                            tierswarm_io::driver::proof::to_wire(&outboard.proof(unit).unwrap());
                        let mut o = bytes::BytesMut::new();
                        encode_frame(
                            &root,
                            &Message::Transfer {
                                unit,
                                data: data.into(),
                                proof: Some(proof),
                            },
                            &mut o,
                        );
                        if sock.write_all(&o).await.is_err() {
                            return corrupted;
                        }
                        corrupted += 1;
                    }
                }
                match sock.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return corrupted,
                    Ok(_) => {}
                }
            }
        });
        // The honest seeder's port is bound but not served until the hostile peer is dropped,
        // so the hostile one gets the first requests.
        let honest = tierswarm_testkit::listener();
        let honest_addr = honest.local_addr().unwrap();
        let s = Session::seeder(&src, opts("seed", 1)).unwrap();
        let manifest = s.manifest().clone();
        let out = dir.path().join("out.bin");
        let fetch_task = tokio::spawn({
            let manifest = manifest.clone();
            let out = out.clone();
            async move {
                fetch(
                    &manifest,
                    &out,
                    vec![hostile_addr, honest_addr],
                    opts("leech", 2),
                )
                .await
            }
        });
        let corrupted = hostile_task.await.unwrap();
        assert!(corrupted >= 1, "the hostile peer was never asked");
        let seeder = tierswarm_testkit::serve::<Tokio>(s, honest, vec![]);
        let (leecher, outcome, _) = fetch_task.await.unwrap();
        assert_eq!(outcome, Outcome::Complete);
        assert!(leecher.stats().failed_units >= 1);
        assert_eq!(
            leecher
                .stats()
                .disconnects
                .get(&tierswarm_core::node::DisconnectKind::FailedVerification),
            Some(&1)
        );
        assert!(same_bytes(&src, &out));
        seeder.stop().await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_sessions_replay_identically() {
    timeout(
        LIMIT,
        tierswarm_testkit::recorded_sessions_replay_identically::<Tokio>(),
    )
    .await
    .unwrap();
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
    timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let len = 3 * 65536 + 500;
        let src = make_file(dir.path(), "src.bin", len, 6);
        let bytes = std::fs::read(&src).unwrap();
        let (seeder, manifest) = seed(&src, opts("seed", 1));
        let root = manifest.root.to_vec();
        let mut sock = tokio::net::TcpStream::connect(seeder.addr).await.unwrap();
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
    .await
    .unwrap();
}
