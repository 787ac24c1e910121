//! HTTP/1.1 plumbing shared by the backend and the upload client: serving a
//! listener, a zero-copy request body, one-shot requests over the
//! [`Network`] trait, and JSON replies.
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
use hyper_util::rt::TokioIo;
use serde::Serialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Largest header block a server accepts (hyper's default is larger):
/// requests here carry a handful of short headers.
pub const HEADER_BYTES_MAX: usize = 64 * 1024;

/// A reply with a whole body.
pub type Reply = Response<Full<Bytes>>;

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
pub fn deliver(reply: Reply) -> Result<Reply, ReplyDropped> {
    if reply.extensions().get::<DropReply>().is_some() {
        Err(ReplyDropped)
    } else {
        Ok(reply)
    }
}

/// A request body made of the caller's buffers: one frame each, never
/// copied, with an exact size hint so hyper frames it by `Content-Length`
/// (never by EOF, which turmoil can lose).
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

/// Serves `listener` until it fails: each connection gets HTTP/1.1
/// keep-alive in a task of its own, and each request goes to `handler`.
pub async fn serve<H, F>(mut listener: Box<dyn Listener>, handler: Arc<H>) -> io::Result<()>
where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    loop {
        let (conn, peer) = listener.accept().await?;
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let reply = handler(request);
                async move { deliver(reply.await) }
            });
            let served = http1::Builder::new()
                .keep_alive(true)
                .auto_date_header(false)
                .max_buf_size(HEADER_BYTES_MAX)
                .serve_connection(TokioIo::new(conn), service)
                .await;
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
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
    /// The reply's body exceeded the bound.
    #[error("reply from {addr} exceeds {limit_bytes} bytes")]
    ReplyTooLarge {
        /// Where from.
        addr: String,
        /// The bound.
        limit_bytes: usize,
    },
}

/// Sends one request on a fresh connection and reads the reply (body at
/// most `reply_bytes_max`).
///
/// # Cancel safety
/// Dropping the future drops the connection; the server sees a disconnect.
pub async fn send<B>(
    net: &dyn Network,
    addr: &str,
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
    let conn = net.connect(addr).await.map_err(|e| SendError::Connect {
        addr: addr.to_owned(),
        reason: e.to_string(),
    })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(conn))
        .await
        .map_err(|e| exchange(&e))?;
    let driver = tokio::spawn(async move {
        // The connection task ends with the exchange; its error, if any,
        // surfaces through `send_request` or the body read below.
        let _ = connection.await;
    });
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

/// Reads a request body whole, refusing more than `limit_bytes`.
pub async fn read_body(body: Incoming, limit_bytes: usize) -> Result<Bytes, String> {
    Limited::new(body, limit_bytes)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                format!("body exceeds {limit_bytes} bytes")
            } else {
                format!("body could not be read: {e}")
            }
        })
}
