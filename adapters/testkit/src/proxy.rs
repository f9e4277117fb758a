//! A TCP proxy that misbehaves on command: it forwards every connection made to it to an
//! upstream address, and a [`Fault`] set at any time delays, throttles, stalls, cuts or
//! corrupts what passes. Plain threads and blocking sockets, so it sits between nodes on any
//! runtime.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does to the bytes it forwards (both directions unless said).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Forwards faithfully.
    #[default]
    None,
    /// Holds every chunk this long before forwarding it.
    Delay(Duration),
    /// Forwards at most this many bytes per second in each direction.
    Throttle(u64),
    /// Stops reading (and so forwarding): the senders' writes back up.
    Stall,
    /// Flips one byte in every chunk going downstream (upstream to client).
    Corrupt,
}

/// How long a stalled pump waits before looking at the fault again.
const LOOK: Duration = Duration::from_millis(10);

struct Shared {
    fault: Mutex<Fault>,
    /// Both sockets of every connection, so a cut can end them wherever their pumps are.
    socks: Mutex<Vec<TcpStream>>,
    closed: AtomicBool,
}

/// A running proxy; dropping it stops accepting and cuts every connection.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Listens on a fresh loopback port and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            fault: Mutex::new(Fault::None),
            socks: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.closed.load(Ordering::Acquire) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut socks = s.socks.lock().unwrap();
                    socks.push(client.try_clone().unwrap());
                    socks.push(server.try_clone().unwrap());
                }
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let up = s.clone();
                std::thread::spawn(move || pump(client, server, &up, false));
                let down = s.clone();
                std::thread::spawn(move || pump(s2, c2, &down, true));
            }
        });
        Proxy { addr, shared }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its `tcp://` URL.
    pub fn url(&self) -> tierswarm_io::transport::PeerUrl {
        tierswarm_io::transport::PeerUrl::from_addr("tcp", self.addr, None)
    }

    /// Applies `fault` from now on.
    pub fn set(&self, fault: Fault) {
        *self.shared.fault.lock().unwrap() = fault;
    }

    /// Cuts every connection made so far (both sides see a reset or an end).
    pub fn cut(&self) {
        for s in self.shared.socks.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.cut();
        // Wakes the accept loop so it sees `closed`.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Forwards `from` to `to` under the current fault until either side ends.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared, downstream: bool) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let fault = *shared.fault.lock().unwrap();
        if fault == Fault::Stall {
            if shared.closed.load(Ordering::Acquire) {
                break;
            }
            std::thread::sleep(LOOK);
            continue;
        }
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        match fault {
            Fault::Delay(d) => std::thread::sleep(d),
            Fault::Throttle(rate) => {
                std::thread::sleep(Duration::from_secs_f64(n as f64 / rate.max(1) as f64))
            }
            Fault::Corrupt if downstream => buf[n / 2] ^= 0x5a,
            _ => {}
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
