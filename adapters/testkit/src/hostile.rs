//! Scripted hostile peers, written against the transport traits so they misbehave over any
//! transport.

use std::path::Path;

use bytes::BytesMut;
use tierswarm_core::wire::{encode_frame, Message};
use tierswarm_core::Geometry;
use tierswarm_io::driver::proof;
use tierswarm_io::transport::{Class, Framing, Listener, OutFrame};
use tierswarm_io::Outboard;

fn frame(root: &[u8; 32], msg: &Message, class: Class, unit: Option<u64>) -> OutFrame {
    let mut out = BytesMut::new();
    encode_frame(root, msg, &mut out);
    OutFrame::new(out.freeze(), class, unit)
}

/// Accepts one connection on `listener` and plays a legacy peer that claims every unit of the
/// file at `path` and answers each REQUEST with the unit's bytes flipped (its proof correctly
/// shaped), until the other side hangs up. Returns how many corrupt units it sent.
pub async fn serve_corrupt_units(mut listener: Box<dyn Listener>, path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap();
    let len = bytes.len() as u64;
    let outboard = Outboard::build(&bytes[..], len).unwrap();
    let root = outboard.root();
    let units = Geometry::new(len).unwrap().units();
    let framing = Framing {
        limits: tierswarm_core::wire::FrameLimits::for_geometry(Geometry::new(len).unwrap()),
        keep_raw: false,
    };
    let mut conn = listener.accept(framing).await.unwrap();
    let hs = Message::Handshake {
        info_hash: root.to_vec().into(),
        peer_id: "evil".into(),
        capabilities: None,
    };
    let mut bits = vec![0xffu8; units.div_ceil(8) as usize];
    if units % 8 != 0 {
        *bits.last_mut().unwrap() = 0xffu8 << (8 - units % 8);
    }
    let w = conn.writer.clone();
    w.write(frame(&root, &hs, Class::Control, None))
        .await
        .unwrap();
    let bf = Message::Bitfield { bits: bits.into() };
    w.write(frame(&root, &bf, Class::Availability, None))
        .await
        .unwrap();
    w.flush().await.unwrap();
    let mut corrupted = 0;
    while let Ok(Some(incoming)) = conn.reader.next_frame().await {
        let Message::Request { unit, .. } = incoming.frame.msg else {
            continue;
        };
        let s = (unit * 65536) as usize;
        let e = (s + 65536).min(bytes.len());
        let mut data = bytes[s..e].to_vec();
        data[0] ^= 0xff;
        let proof = Some(proof::to_wire(&outboard.proof(unit).unwrap()));
        let t = Message::Transfer {
            unit,
            data: data.into(),
            proof,
        };
        if w.write(frame(&root, &t, Class::Data, Some(unit)))
            .await
            .is_err()
            || w.flush().await.is_err()
        {
            break;
        }
        corrupted += 1;
    }
    corrupted
}

/// How a scripted hostile peer misbehaves (see [`Hostiles`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Handshakes as a legacy peer, asks for as many units as a peer that does not say its
    /// serve queue is taken to queue (`wire::UNSAID_SERVE_QUEUE`, 128, or every unit of a
    /// smaller file: 8 MiB, more than a connection's kernel buffers hold) and never reads a
    /// byte. No more than that: it is to be served less for not reading, not dropped as a
    /// flooder (`dev/PROTOCOL.md` §5).
    NeverReads,
    /// Handshakes, then sends nothing, not even a keep-alive.
    Idles,
    /// Handshakes, then sends the first half of a frame and nothing more.
    HalfFrame,
    /// Sends half a frame before any handshake, and nothing more.
    HalfFrameFirst,
    /// Handshakes, then announces a TRANSFER of 256 MiB.
    Oversized,
    /// Sends bytes that are no frame at all.
    Garbage,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 6] = [
        Kind::NeverReads,
        Kind::Idles,
        Kind::HalfFrame,
        Kind::HalfFrameFirst,
        Kind::Oversized,
        Kind::Garbage,
    ];
}

/// Scripted hostile peers over plain blocking sockets (so they misbehave the same beside a
/// seeder on any runtime). Each connects, plays its script at once and then holds its socket
/// open, doing nothing more, until [`Hostiles::leave`]: what a seeder must survive is exactly
/// what they leave it with.
#[derive(Debug, Default)]
pub struct Hostiles {
    socks: Vec<(Kind, std::net::TcpStream)>,
}

impl Hostiles {
    /// Connects `n` peers of `kind` to `addr`, for content `root` of `len` bytes.
    pub fn connect(
        &mut self,
        addr: std::net::SocketAddr,
        root: [u8; 32],
        len: u64,
        kind: Kind,
        n: usize,
    ) {
        for _ in 0..n {
            let sock = std::net::TcpStream::connect(addr).unwrap();
            // The seeder may have hung up already (a refusal at the peer limit, say).
            // Each peer names itself apart: the driver keeps one connection per peer id.
            let id = format!("{kind:?}-{}", self.socks.len());
            let _ = play(&sock, root, len, kind, &id);
            self.socks.push((kind, sock));
        }
    }

    /// Connects to `addr` and hangs up at once, `n` times.
    pub fn connect_and_close(addr: std::net::SocketAddr, n: usize) {
        for _ in 0..n {
            drop(std::net::TcpStream::connect(addr).unwrap());
        }
    }

    /// How many sockets the peers hold open.
    pub fn len(&self) -> usize {
        self.socks.len()
    }

    /// Whether no peer is connected.
    pub fn is_empty(&self) -> bool {
        self.socks.is_empty()
    }

    /// Whether every peer of `kind` was hung up on by the other side (a read at the end of
    /// the stream, or a reset). A peer that never reads reads here until the end: only call
    /// this for one that has been dropped.
    pub fn all_hung_up(&self, kind: Kind) -> bool {
        use std::io::Read;
        self.socks.iter().filter(|(k, _)| *k == kind).all(|(_, s)| {
            s.set_nonblocking(true).unwrap();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match (&*s).read(&mut buf) {
                    Ok(0) => return true,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                    Err(_) => return true,
                }
            }
        })
    }

    /// Closes every peer's socket.
    pub fn leave(&mut self) {
        self.socks.clear();
    }

    /// The local address of each peer's socket, in the order they connected.
    pub fn local_addrs(&self) -> Vec<std::net::SocketAddr> {
        (self.socks.iter())
            .filter_map(|(_, s)| s.local_addr().ok())
            .collect()
    }
}

/// Plays `kind`'s script on `sock`.
fn play(
    sock: &std::net::TcpStream,
    root: [u8; 32],
    len: u64,
    kind: Kind,
    id: &str,
) -> std::io::Result<()> {
    use std::io::Write;
    let geo = Geometry::new(len).unwrap();
    let units = geo.units();
    let mut out = BytesMut::new();
    let hello = |out: &mut BytesMut| {
        let hs = Message::Handshake {
            info_hash: root.to_vec().into(),
            peer_id: id.to_string(),
            capabilities: None,
        };
        encode_frame(&root, &hs, out);
    };
    match kind {
        Kind::NeverReads => {
            hello(&mut out);
            let bits = vec![0u8; units.div_ceil(8) as usize];
            encode_frame(&root, &Message::Bitfield { bits: bits.into() }, &mut out);
            let queue = u64::from(tierswarm_core::wire::UNSAID_SERVE_QUEUE);
            for unit in 0..units.min(queue) {
                encode_frame(&root, &Message::Request { unit, held: 0 }, &mut out);
            }
        }
        Kind::Idles => hello(&mut out),
        Kind::HalfFrame | Kind::HalfFrameFirst => {
            if kind == Kind::HalfFrame {
                hello(&mut out);
            }
            let mut have = BytesMut::new();
            encode_frame(&root, &Message::Have { unit: 0 }, &mut have);
            out.extend_from_slice(&have[..have.len() / 2]);
        }
        Kind::Oversized => {
            hello(&mut out);
            // A TRANSFER's envelope announcing 256 MiB: refused from its first bytes.
            let mut t = BytesMut::new();
            let msg = Message::Transfer {
                unit: 0,
                data: vec![0; 16].into(),
                proof: None,
            };
            encode_frame(&root, &msg, &mut t);
            t[..4].copy_from_slice(&(256u32 << 20).to_be_bytes());
            out.extend_from_slice(&t);
        }
        Kind::Garbage => {
            // A small length prefix, then bytes that are no protobuf envelope.
            out.extend_from_slice(&200u32.to_be_bytes());
            out.extend((0..200u32).map(|i| (i.wrapping_mul(0x9e) ^ 0xff) as u8));
        }
    }
    (&*sock).write_all(&out)
}

/// Descriptors this process has open (Linux: `/proc/self/fd`); `None` elsewhere.
pub fn open_fds() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count())
}

/// Whether this process holds a descriptor for the TCP socket whose own address is `local` and
/// whose peer is `remote` (Linux: `/proc/net/tcp{,6}` names the socket's inode, `/proc/self/fd`
/// lists the sockets held); `None` where those cannot be read.
///
/// Unlike a count of descriptors, this is about one connection: descriptors the runtime, the
/// allocator or an earlier test opens or closes meanwhile do not move it.
pub fn holds_connection(local: std::net::SocketAddr, remote: std::net::SocketAddr) -> Option<bool> {
    let table = if local.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    let text = std::fs::read_to_string(table).ok()?;
    let (l, r) = (kernel_hex(local), kernel_hex(remote));
    // Columns: sl, local_address, rem_address, st, queues, tr, retrnsmt, uid, timeout, inode.
    let inodes: Vec<String> = text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() > 9 && f[1] == l && f[2] == r && f[9] != "0")
                .then(|| format!("socket:[{}]", f[9]))
        })
        .collect();
    if inodes.is_empty() {
        return Some(false);
    }
    let fds = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(fds.filter_map(Result::ok).any(|e| {
        std::fs::read_link(e.path())
            .is_ok_and(|t| inodes.iter().any(|i| t.as_os_str() == i.as_str()))
    }))
}

/// `addr` as `/proc/net/tcp{,6}` prints it: the address in 32-bit words of host byte order
/// (little-endian here), then the port, in upper-case hex.
fn kernel_hex(addr: std::net::SocketAddr) -> String {
    let words = |octets: &[u8]| -> String {
        octets
            .chunks(4)
            .map(|c| format!("{:08X}", u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect()
    };
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) => words(&v4.octets()),
        std::net::IpAddr::V6(v6) => words(&v6.octets()),
    };
    format!("{ip}:{:04X}", addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both ends of a loopback connection are seen while held and gone once dropped, whatever
    /// else the process opens meanwhile.
    #[test]
    fn a_connection_is_held_until_its_socket_is_dropped() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(server).unwrap();
        let mine = client.local_addr().unwrap();
        if holds_connection(mine, server).is_none() {
            return; // not Linux
        }
        let (accepted, _) = listener.accept().unwrap();
        let unrelated = tempfile::tempfile().unwrap();
        assert_eq!(holds_connection(mine, server), Some(true));
        assert_eq!(holds_connection(server, mine), Some(true));
        drop(accepted);
        assert_eq!(holds_connection(server, mine), Some(false));
        assert_eq!(
            holds_connection(mine, server),
            Some(true),
            "our end is ours"
        );
        drop(client);
        assert_eq!(holds_connection(mine, server), Some(false));
        drop(unrelated);
    }
}
