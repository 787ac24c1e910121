//! HTTP/1.1 plumbing shared by the backend and the upload client: serving a
//! listener, a zero-copy request body, one-shot requests over the
//! [`Network`] trait, and JSON replies; [`tls`] holds real mode's TLS, for
//! servers (a listener wrapper) and clients ([`tls::dial`]).
//!
//! Invariants: no `Date` header (it reads the wall clock, which must not
//! reach a simulated trace); every reply body read by a client is bounded;
//! nothing a peer sends can panic a handler here.

use crate::env::{Listener, Network};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

pub mod sse;
pub mod tls;

/// Largest header block a server accepts (hyper's default is larger):
/// requests here carry a handful of short headers.
pub const HEADER_BYTES_MAX: usize = 64 * 1024;

/// A reply with a whole body.
pub type Reply = Response<Full<Bytes>>;

/// A reply whose body may also be a stream (the backend's event streams).
pub type StreamingReply<S> = Response<http_body_util::Either<Full<Bytes>, S>>;

/// Marks a reply that must not be sent: the connection is closed instead,
/// as if the reply were lost on the way (a [`buggify`](crate::buggify) fault;
/// never set outside simulation).
#[derive(Debug, Clone, Copy)]
pub struct DropReply;

/// The error a service returns to make hyper close the connection without
/// answering.
#[derive(Debug, thiserror::Error)]
#[error("reply dropped on purpose (simulated lost reply)")]
pub struct ReplyDropped;

/// `Ok(reply)`, or `Err` if the reply is marked [`DropReply`].
pub fn deliver<B>(reply: Response<B>) -> Result<Response<B>, ReplyDropped> {
    if reply.extensions().get::<DropReply>().is_some() {
        Err(ReplyDropped)
    } else {
        Ok(reply)
    }
}

/// A request body made of the caller's buffers: one frame each, never
/// copied, with an exact size hint so hyper frames it by `Content-Length`
/// (never by EOF, which turmoil can lose). Cloning shares the buffers.
#[derive(Clone)]
pub struct FramesBody {
    frames: VecDeque<Bytes>,
    remaining_bytes: u64,
}

impl FramesBody {
    /// The concatenation of `frames`.
    pub fn new(frames: impl IntoIterator<Item = Bytes>) -> Self {
        let frames: VecDeque<Bytes> = frames.into_iter().filter(|b| !b.is_empty()).collect();
        let remaining_bytes = frames.iter().map(|b| b.len() as u64).sum();
        Self {
            frames,
            remaining_bytes,
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::new([])
    }

    /// Bytes still to be sent.
    pub fn len_bytes(&self) -> u64 {
        self.remaining_bytes
    }
}

impl Body for FramesBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        Poll::Ready(this.frames.pop_front().map(|data| {
            this.remaining_bytes -= data.len() as u64;
            Ok(Frame::data(data))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining_bytes)
    }
}

/// How a server treats its connections. The defaults are what the
/// simulation runs with; real mode bounds header time as well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    /// hyper's read buffer bound, which is also the hard bound on a
    /// request's header block: beyond it hyper itself answers a bare `431`.
    /// `None`: hyper's default (about 400 KiB). Default [`HEADER_BYTES_MAX`].
    pub buf_bytes_max: Option<usize>,
    /// Longest a client may take to send a request's headers, counted from
    /// when the server starts waiting for them (so it also closes idle
    /// keep-alive connections): the slowloris bound. `None`: unbounded.
    /// Default `None` (a turmoil partition must not change what a simulated
    /// server does).
    pub header_read_timeout: Option<Duration>,
    /// After shutdown is asked for, how long connections get to finish the
    /// request they are in before they are dropped. Default 5 s.
    pub close_grace: Duration,
    /// Most connections served at once; beyond it new ones wait in the
    /// listen backlog until one closes. `None`: unbounded. Default `None`.
    pub connections_max: Option<usize>,
    /// What a failed accept does: `None` ends serving with the error (a
    /// simulated listener fails only when its host goes away); `Some(d)`
    /// logs it and accepts again after `d` (a real listener fails on
    /// running out of file descriptors, which passes). Default `None`.
    pub accept_retry: Option<Duration>,
}

/// Real mode's [`ServeOptions::connections_max`]: half the usual soft
/// limit of 1024 file descriptors, leaving the rest for drive connections,
/// stored files and records.
pub const CONNECTIONS_MAX_REAL: usize = 512;

/// Real mode's [`ServeOptions::accept_retry`]: long enough for other
/// connections to close, short enough not to be noticed.
pub const ACCEPT_RETRY_REAL: Duration = Duration::from_millis(100);

/// Default [`ServeOptions::close_grace`]: long enough for a reply in flight,
/// short enough that a stuck peer cannot hold an exit.
pub const CLOSE_GRACE_DEFAULT: Duration = Duration::from_secs(5);

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            buf_bytes_max: Some(HEADER_BYTES_MAX),
            header_read_timeout: None,
            close_grace: CLOSE_GRACE_DEFAULT,
            connections_max: None,
            accept_retry: None,
        }
    }
}

/// Serves `listener` until it fails: each connection gets HTTP/1.1
/// keep-alive in a task of its own, and each request goes to `handler`.
pub async fn serve<H, F, B>(listener: Box<dyn Listener>, handler: Arc<H>) -> io::Result<()>
where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_until(
        listener,
        handler,
        ServeOptions::default(),
        std::future::pending(),
    )
    .await
}

/// Serves `listener` with `options` until it fails or `shutdown`
/// completes. On shutdown it stops accepting, asks every connection to
/// close after the request it is in ([`http1::Connection::graceful_shutdown`]),
/// waits up to `options.close_grace` for them, drops the rest and returns
/// `Ok(())`.
///
/// # Cancel safety
/// Dropping the future drops the listener and aborts every connection.
pub async fn serve_until<H, F, B, S>(
    mut listener: Box<dyn Listener>,
    handler: Arc<H>,
    options: ServeOptions,
    shutdown: S,
) -> io::Result<()>
where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S: Future<Output = ()> + Send,
{
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Reap finished connections so the set stays as small as the
        // number of open ones.
        while connections.try_join_next().is_some() {}
        if options
            .connections_max
            .is_some_and(|max| connections.len() >= max.max(1))
        {
            // Full: wait for a connection to close (or for shutdown).
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                _ = connections.join_next() => continue,
            }
        }
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (conn, peer) = match (accepted, options.accept_retry) {
            (Ok(accepted), _) => accepted,
            (Err(error), None) => return Err(error),
            (Err(error), Some(retry)) => {
                tracing::warn!(%error, retry_ms = retry.as_millis() as u64, "accept failed; retrying");
                tokio::time::sleep(retry).await;
                continue;
            }
        };
        connections.spawn(serve_connection(
            conn,
            peer,
            handler.clone(),
            options.clone(),
            closing_rx.clone(),
        ));
    }
    drop(listener);
    close_connections(connections, closing_tx, options.close_grace).await;
    Ok(())
}

/// One connection: HTTP/1.1 keep-alive, each request to `handler`, until
/// the peer closes or `closing` turns true (then the request in progress
/// finishes and the connection closes).
async fn serve_connection<H, F, B>(
    conn: crate::env::BoxConn,
    peer: std::net::SocketAddr,
    handler: Arc<H>,
    options: ServeOptions,
    mut closing: tokio::sync::watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let service = service_fn(move |request| {
        let reply = handler(request);
        async move { deliver(reply.await) }
    });
    let mut builder = http1::Builder::new();
    builder.keep_alive(true).auto_date_header(false);
    if let Some(max) = options.buf_bytes_max {
        builder.max_buf_size(max);
    }
    if let Some(timeout) = options.header_read_timeout {
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(timeout);
    }
    let connection = builder.serve_connection(TokioIo::new(conn), service);
    let mut connection = std::pin::pin!(connection);
    let served = tokio::select! {
        biased;
        served = connection.as_mut() => served,
        () = async {
            // An error means the server is gone: close as well.
            let _ = closing.wait_for(|closing| *closing).await;
        } => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = served {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// After the listener is gone: asks every connection to close after the
/// request it is in, waits up to `grace` for them, and drops the rest.
async fn close_connections(
    mut connections: tokio::task::JoinSet<()>,
    closing_tx: tokio::sync::watch::Sender<bool>,
    grace: Duration,
) {
    let open_count = connections.len();
    tracing::info!(
        open_count,
        "server: no longer accepting; closing connections"
    );
    // Ignored error: no receiver left means every connection already ended.
    let _ = closing_tx.send(true);
    let deadline = tokio::time::sleep(grace);
    let mut deadline = std::pin::pin!(deadline);
    loop {
        tokio::select! {
            biased;
            joined = connections.join_next() => if joined.is_none() { break },
            () = &mut deadline => {
                tracing::warn!(
                    dropped_count = connections.len(),
                    grace_ms = grace.as_millis() as u64,
                    "server: connections still open after the grace period; dropping them"
                );
                connections.abort_all();
                break;
            }
        }
    }
}

/// A reply as a client sees it, body read whole.
#[derive(Debug, Clone)]
pub struct ClientReply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// A request that did not produce a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No connection could be made.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// Where to.
        addr: String,
        /// The OS's or simulator's reason.
        reason: String,
    },
    /// The exchange broke off.
    #[error("request to {addr} failed: {reason}")]
    Exchange {
        /// Where to.
        addr: String,
        /// hyper's reason.
        reason: String,
    },
    /// TLS refused the server, or the server refused us (an untrusted
    /// certificate, a wrong host name): waiting will not help.
    #[error("TLS with {addr} failed: {reason}")]
    Tls {
        /// Where to.
        addr: String,
        /// rustls's reason.
        reason: String,
    },
    /// The reply's body exceeded the bound.
    #[error("reply from {addr} exceeds {limit_bytes} bytes")]
    ReplyTooLarge {
        /// Where from.
        addr: String,
        /// The bound.
        limit_bytes: usize,
    },
}

/// Sends one request on a fresh connection (TLS over it when `tls` is
/// given) and reads the reply (body at most `reply_bytes_max`).
///
/// # Cancel safety
/// Dropping the future drops the connection; the server sees a disconnect.
pub async fn send<B>(
    net: &dyn Network,
    addr: &str,
    tls: Option<&tls::TlsClient>,
    request: Request<B>,
    reply_bytes_max: usize,
) -> Result<ClientReply, SendError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let exchange = |e: &dyn std::fmt::Display| SendError::Exchange {
        addr: addr.to_owned(),
        reason: e.to_string(),
    };
    let (mut sender, driver) = connect(net, addr, tls).await?;
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| exchange(&e))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, reply_bytes_max)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    SendError::ReplyTooLarge {
                        addr: addr.to_owned(),
                        limit_bytes: reply_bytes_max,
                    }
                } else {
                    exchange(&e)
                }
            })?
            .to_bytes();
        Ok(ClientReply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
    .await;
    driver.abort();
    result
}

/// A fresh HTTP/1.1 connection to `addr` (TLS over it when `tls` is
/// given): its request sender and the task driving it, which the caller
/// aborts when done.
async fn connect<B>(
    net: &dyn Network,
    addr: &str,
    tls: Option<&tls::TlsClient>,
) -> Result<
    (
        hyper::client::conn::http1::SendRequest<B>,
        tokio::task::JoinHandle<()>,
    ),
    SendError,
>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = tls::dial(net, addr, tls).await.map_err(|e| match e {
        tls::DialError::Connect { addr, reason } => SendError::Connect { addr, reason },
        tls::DialError::Tls { addr, reason } => SendError::Tls { addr, reason },
    })?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(conn))
        .await
        .map_err(|e| SendError::Exchange {
            addr: addr.to_owned(),
            reason: e.to_string(),
        })?;
    let driver = tokio::spawn(async move {
        // The connection task ends with the exchange; its error, if any,
        // surfaces through `send_request` or the body read.
        let _ = connection.await;
    });
    Ok((sender, driver))
}

/// A reply whose body is read as it arrives (an event stream); dropping it
/// closes the connection.
pub struct OpenReply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// The body, unread.
    pub body: Incoming,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for OpenReply {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Sends one request on a fresh connection and returns as soon as the
/// reply's head has arrived, its body unread ([`OpenReply`]).
///
/// # Cancel safety
/// Dropping the future (or the reply) drops the connection.
pub async fn open<B>(
    net: &dyn Network,
    addr: &str,
    tls: Option<&tls::TlsClient>,
    request: Request<B>,
) -> Result<OpenReply, SendError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, driver) = connect(net, addr, tls).await?;
    match sender.send_request(request).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            Ok(OpenReply {
                status: parts.status,
                headers: parts.headers,
                body,
                driver,
            })
        }
        Err(e) => {
            driver.abort();
            Err(SendError::Exchange {
                addr: addr.to_owned(),
                reason: e.to_string(),
            })
        }
    }
}

/// A JSON reply.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Reply {
    // Our reply types are plain data: serialising cannot fail.
    let body = serde_json::to_vec(value).expect("reply types always serialise");
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    reply
}

/// Why a request body could not be read whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The body is longer than the reader accepts.
    #[error("body exceeds {limit_bytes} bytes")]
    TooLarge {
        /// The limit it went past.
        limit_bytes: usize,
    },
    /// The body broke off or was malformed on the wire (the peer closed
    /// the connection mid-body, a chunked encoding error, …): nothing says
    /// it was too large.
    #[error("body could not be read: {reason}")]
    Broken {
        /// What hyper said.
        reason: String,
    },
}

/// Reads a request body whole, refusing more than `limit_bytes`.
///
/// # Errors
/// [`BodyError::TooLarge`] past the limit (the rest is not read);
/// [`BodyError::Broken`] when the body ends early or is malformed.
pub async fn read_body(body: Incoming, limit_bytes: usize) -> Result<Bytes, BodyError> {
    Limited::new(body, limit_bytes)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                BodyError::TooLarge { limit_bytes }
            } else {
                BodyError::Broken {
                    reason: e.to_string(),
                }
            }
        })
}

/// Bytes of a request's target and headers, as counted against a server's
/// `request_header_bytes_max`, backend and drive alike (name, value and
/// the four bytes of `": "` and CRLF per header).
pub fn request_header_bytes<B>(req: &http::Request<B>) -> usize {
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    req.headers().iter().fold(target, |sum, (name, value)| {
        sum.saturating_add(name.as_str().len() + value.len() + 4)
    })
}
