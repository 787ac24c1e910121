//! The network: listen and connect, yielding async byte streams.
//!
//! Addresses are `host:port` strings. The real network resolves them with the
//! OS; the simulated one with turmoil's DNS (host names given to
//! `Sim::host`). Streams are boxed ([`BoxConn`]): a connection is opened per
//! request at most, so dynamic dispatch is noise next to the bytes moved.

use super::BoxFuture;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream: what a connection is, whichever network carries it.
pub trait Connection: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Connection for T {}

/// A boxed connection.
pub type BoxConn = Box<dyn Connection>;

/// A bound listener.
pub trait Listener: Send + 'static {
    /// Waits for the next connection; returns it and the peer's address.
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxConn, SocketAddr)>>;
    /// The address actually bound (port 0 becomes a real port).
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// The network trait.
pub trait Network: Send + Sync + 'static {
    /// Binds `addr` (`host:port`; port 0 picks a free one where supported).
    fn listen(&self, addr: &str) -> BoxFuture<'_, io::Result<Box<dyn Listener>>>;
    /// Opens a connection to `addr` (`host:port`).
    fn connect(&self, addr: &str) -> BoxFuture<'_, io::Result<BoxConn>>;
}

/// Splits `host:port`, refusing anything else with `InvalidInput`.
pub fn split_host_port(addr: &str) -> io::Result<(&str, u16)> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("address {addr:?} is not host:port"),
        )
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    let port = port.parse::<u16>().map_err(|_| bad())?;
    Ok((host, port))
}

/// Real TCP through tokio.
#[derive(Debug, Clone, Default)]
pub struct TokioNetwork;

struct TokioListener(tokio::net::TcpListener);

impl Listener for TokioListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxConn, SocketAddr)>> {
        Box::pin(async move {
            let (stream, peer) = self.0.accept().await?;
            stream.set_nodelay(true)?;
            Ok((Box::new(stream) as BoxConn, peer))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl Network for TokioNetwork {
    fn listen(&self, addr: &str) -> BoxFuture<'_, io::Result<Box<dyn Listener>>> {
        let addr = addr.to_owned();
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind(&addr).await?;
            Ok(Box::new(TokioListener(listener)) as Box<dyn Listener>)
        })
    }

    fn connect(&self, addr: &str) -> BoxFuture<'_, io::Result<BoxConn>> {
        let addr = addr.to_owned();
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(&addr).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as BoxConn)
        })
    }
}

/// turmoil's simulated TCP. Must be used inside a turmoil host.
#[derive(Debug, Clone, Default)]
pub struct SimNetwork;

struct SimListener(turmoil::net::TcpListener);

impl Listener for SimListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxConn, SocketAddr)>> {
        Box::pin(async move {
            let (stream, peer) = self.0.accept().await?;
            Ok((Box::new(stream) as BoxConn, peer))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl Network for SimNetwork {
    fn listen(&self, addr: &str) -> BoxFuture<'_, io::Result<Box<dyn Listener>>> {
        let parsed = split_host_port(addr).map(|(_, port)| port);
        Box::pin(async move {
            // A simulated host has one address; bind on it whatever host
            // name was given.
            let port = parsed?;
            let listener =
                turmoil::net::TcpListener::bind((IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)).await?;
            Ok(Box::new(SimListener(listener)) as Box<dyn Listener>)
        })
    }

    fn connect(&self, addr: &str) -> BoxFuture<'_, io::Result<BoxConn>> {
        let parsed = split_host_port(addr).map(|(h, p)| (h.to_owned(), p));
        Box::pin(async move {
            let target = parsed?;
            let stream = turmoil::net::TcpStream::connect(target).await?;
            Ok(Box::new(stream) as BoxConn)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn host_port_is_split_and_junk_refused() {
        assert_eq!(split_host_port("drive:443").ok(), Some(("drive", 443)));
        assert_eq!(split_host_port("[::1]:80").ok(), Some(("::1", 80)));
        for junk in ["drive", ":80", "drive:", "drive:99999", "drive:x"] {
            assert!(split_host_port(junk).is_err(), "{junk:?} accepted");
        }
    }

    #[tokio::test]
    async fn tokio_network_round_trips_on_loopback() -> io::Result<()> {
        let net = TokioNetwork;
        let mut listener = net.listen("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await?;
            let mut buf = [0u8; 4];
            conn.read_exact(&mut buf).await?;
            conn.write_all(&buf).await?;
            io::Result::Ok(())
        });
        let mut conn = net.connect(&addr).await?;
        conn.write_all(b"ping").await?;
        let mut back = [0u8; 4];
        conn.read_exact(&mut back).await?;
        assert_eq!(&back, b"ping");
        server.await.map_err(io::Error::other)?
    }

    #[test]
    fn sim_network_round_trips_between_hosts() -> turmoil::Result {
        let mut sim = turmoil::Builder::new().build();
        sim.host("server", || async {
            let mut listener = SimNetwork.listen("server:7000").await?;
            let (mut conn, _) = listener.accept().await?;
            let mut buf = [0u8; 4];
            conn.read_exact(&mut buf).await?;
            conn.write_all(&buf).await?;
            Ok(())
        });
        sim.client("client", async {
            let mut conn = SimNetwork.connect("server:7000").await?;
            conn.write_all(b"pong").await?;
            let mut back = [0u8; 4];
            conn.read_exact(&mut back).await?;
            assert_eq!(&back, b"pong");
            Ok(())
        });
        sim.run()
    }
}
