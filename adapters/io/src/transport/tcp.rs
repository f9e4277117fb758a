//! TCP (`tcp://HOST:PORT`, or a bare `HOST:PORT`), written once: a runtime's glue provides only
//! its sockets ([`TcpSockets`]: adopt a bound listener, accept, connect, split) and gets the
//! transport [`Tcp<S>`]. Framing is [`super::stream::connection`].

use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;

use futures::io::AsyncWrite;

use super::{stream, BoxFuture, Connection, Framing, Listener, PeerUrl, Transport};

/// A runtime's TCP sockets: what [`Tcp`] needs of it.
pub trait TcpSockets: Send + Sync + 'static {
    /// A listener of the runtime.
    type Listener: Send + 'static;
    /// A connected stream of the runtime.
    type Stream: Send + 'static;
    /// Adopts a bound, non-blocking `std` listener (where the runtime is current, for tokio).
    fn adopt(listener: std::net::TcpListener) -> io::Result<Self::Listener>;
    /// The next incoming connection.
    fn accept(
        listener: &Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send + '_;
    /// Connects to `addr` (one attempt).
    fn connect(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// Sets `TCP_NODELAY` (best effort: frames are batched by the writer) and splits the
    /// stream into halves used from two tasks. A `futures-io` read half becomes a
    /// [`ReadInto`](stream::ReadInto) as [`Zeroing`](stream::Zeroing).
    fn split(
        stream: Self::Stream,
    ) -> (
        impl stream::ReadInto + 'static,
        impl AsyncWrite + Unpin + Send + 'static,
    );
}

/// The TCP transport over a runtime's sockets `S`.
pub struct Tcp<S>(PhantomData<fn() -> S>);

impl<S> Tcp<S> {
    /// TCP on `S`.
    pub fn new() -> Self {
        Tcp(PhantomData)
    }
}

impl<S> Default for Tcp<S> {
    fn default() -> Self {
        Tcp::new()
    }
}

impl<S> std::fmt::Debug for Tcp<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tcp")
    }
}

fn connection<S: TcpSockets>(
    stream: S::Stream,
    remote: SocketAddr,
    framing: Framing,
) -> Connection {
    let (rd, wr) = S::split(stream);
    stream::connection(format!("tcp://{remote}"), rd, wr, framing)
}

impl<S: TcpSockets> Transport for Tcp<S> {
    fn scheme(&self) -> &'static str {
        "tcp"
    }

    fn check(&self, url: &PeerUrl) -> Result<(), String> {
        if url.fragment().is_some() {
            return Err("a tcp:// address takes no `#` part".into());
        }
        url.socket_addr().map(drop).map_err(|e| e.to_string())
    }

    fn listen(&self, url: &PeerUrl) -> io::Result<Box<dyn Listener>> {
        self.check(url)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let std_listener = std::net::TcpListener::bind(url.socket_addr()?)?;
        std_listener.set_nonblocking(true)?;
        let url = PeerUrl::from_addr("tcp", std_listener.local_addr()?, None);
        Ok(Box::new(TcpListener::<S> {
            listener: S::adopt(std_listener)?,
            url,
        }))
    }

    fn connect(
        &self,
        url: &PeerUrl,
        framing: Framing,
    ) -> BoxFuture<'static, io::Result<Connection>> {
        let addr = url.socket_addr();
        Box::pin(async move {
            let addr = addr?;
            let stream = S::connect(addr).await?;
            Ok(connection::<S>(stream, addr, framing))
        })
    }
}

struct TcpListener<S: TcpSockets> {
    listener: S::Listener,
    url: PeerUrl,
}

impl<S: TcpSockets> Listener for TcpListener<S> {
    fn url(&self) -> PeerUrl {
        self.url.clone()
    }

    fn accept(&mut self, framing: Framing) -> BoxFuture<'_, io::Result<Connection>> {
        Box::pin(async move {
            let (stream, remote) = S::accept(&self.listener).await?;
            Ok(connection::<S>(stream, remote, framing))
        })
    }
}
