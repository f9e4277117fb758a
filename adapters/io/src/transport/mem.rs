//! A transport without sockets: connections are pairs of in-memory channels between nodes of
//! one [`MemNet`], addressed `mem://NAME`. Runtime-neutral (only `futures` channels), so a test
//! can run whole swarms through the real driver with no network, and writes push back like a
//! socket's: a peer that does not read fills its channel and the writer waits.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as SyncMutex};

use bytes::Bytes;
use futures::channel::mpsc;
use futures::lock::Mutex;
use futures::{SinkExt, StreamExt, TryStreamExt};

use super::stream::{StreamReader, Zeroing};
use super::{BoxFuture, Connection, FrameWrite, Framing, Listener, OutFrame, PeerUrl, Transport};

/// Chunks (frame parts) a direction of a connection holds before its writer waits: about a
/// megabyte of units, as a loopback socket's buffers hold.
const PIPE_CHUNKS: usize = 16;

/// Listeners by name, shared by the nodes that can reach each other.
#[derive(Debug, Clone, Default)]
pub struct MemNet {
    listeners: Arc<SyncMutex<HashMap<String, mpsc::Sender<Pipe>>>>,
    fresh: Arc<AtomicU64>,
}

/// The `mem` transport of one node on a [`MemNet`]. Listening on `mem://0` picks a fresh name.
#[derive(Debug, Clone)]
pub struct Mem {
    net: MemNet,
}

impl Mem {
    /// A node's transport on `net`.
    pub fn new(net: &MemNet) -> Self {
        Mem { net: net.clone() }
    }
}

/// One end of a connection before it is framed.
#[derive(Debug)]
struct Pipe {
    rx: mpsc::Receiver<Bytes>,
    tx: mpsc::Sender<Bytes>,
    remote: String,
}

fn pipe_pair(dialler: String, listener: String) -> (Pipe, Pipe) {
    let (d_tx, l_rx) = mpsc::channel(PIPE_CHUNKS);
    let (l_tx, d_rx) = mpsc::channel(PIPE_CHUNKS);
    let dialler_end = Pipe {
        rx: d_rx,
        tx: d_tx,
        remote: listener,
    };
    let listener_end = Pipe {
        rx: l_rx,
        tx: l_tx,
        remote: dialler,
    };
    (dialler_end, listener_end)
}

impl Pipe {
    fn connection(self, framing: Framing) -> Connection {
        let rd = self.rx.map(Ok::<_, io::Error>).into_async_read();
        Connection {
            remote: self.remote,
            reader: Box::new(StreamReader::new(Zeroing(rd), framing.reader())),
            writer: Arc::new(MemWriter {
                tx: Mutex::new(self.tx),
            }),
        }
    }
}

impl Transport for Mem {
    fn scheme(&self) -> &'static str {
        "mem"
    }

    fn check(&self, _url: &PeerUrl) -> Result<(), String> {
        Ok(())
    }

    fn listen(&self, url: &PeerUrl) -> io::Result<Box<dyn Listener>> {
        let name = match url.authority() {
            "0" => format!("node-{}", self.net.fresh.fetch_add(1, Ordering::Relaxed)),
            name => name.to_owned(),
        };
        let mut listeners = self.net.listeners.lock().expect("not poisoned");
        if listeners.contains_key(&name) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("mem://{name} is taken"),
            ));
        }
        let (tx, rx) = mpsc::channel(16);
        listeners.insert(name.clone(), tx);
        Ok(Box::new(MemListener {
            net: self.net.clone(),
            name,
            rx,
        }))
    }

    fn connect(
        &self,
        url: &PeerUrl,
        framing: Framing,
    ) -> BoxFuture<'static, io::Result<Connection>> {
        let target = self
            .net
            .listeners
            .lock()
            .expect("not poisoned")
            .get(url.authority())
            .cloned();
        let n = self.net.fresh.fetch_add(1, Ordering::Relaxed);
        let url = url.clone();
        Box::pin(async move {
            let refused = || {
                io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("{url}: nobody listens there"),
                )
            };
            let mut target = target.ok_or_else(refused)?;
            let (ours, theirs) = pipe_pair(format!("mem://dialler-{n}"), url.to_string());
            target.send(theirs).await.map_err(|_| refused())?;
            Ok(ours.connection(framing))
        })
    }
}

struct MemListener {
    net: MemNet,
    name: String,
    rx: mpsc::Receiver<Pipe>,
}

impl Drop for MemListener {
    fn drop(&mut self) {
        if let Ok(mut l) = self.net.listeners.lock() {
            l.remove(&self.name);
        }
    }
}

impl Listener for MemListener {
    fn url(&self) -> PeerUrl {
        PeerUrl::new("mem", &self.name, None).expect("a valid name")
    }

    fn accept(&mut self, framing: Framing) -> BoxFuture<'_, io::Result<Connection>> {
        Box::pin(async move {
            match self.rx.next().await {
                Some(pipe) => Ok(pipe.connection(framing)),
                None => Err(io::Error::new(io::ErrorKind::NotConnected, "listener gone")),
            }
        })
    }
}

struct MemWriter {
    tx: Mutex<mpsc::Sender<Bytes>>,
}

fn gone(_: mpsc::SendError) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the peer went away")
}

impl FrameWrite for MemWriter {
    fn write(&self, frame: OutFrame) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            let mut tx = self.tx.lock().await;
            for part in frame.parts {
                tx.send(part).await.map_err(gone)?;
            }
            Ok(())
        })
    }

    fn flush(&self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn close(&self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            self.tx.lock().await.close_channel();
            Ok(())
        })
    }
}
