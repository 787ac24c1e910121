//! One request and its whole reply on a [`DriveClient`]'s kept connection:
//! opening (or reopening) the connection, sending, and reading the reply
//! within [`REPLY_BYTES_MAX`].
//!
//! Invariant: a connection whose exchange did not end cleanly (the caller's
//! timeout dropped it midway, or any failure after sending began) is
//! dropped, because its state (half a body sent, a reply unread) is unknown.

use super::client::{DriveClient, Scheme, TokenSource};
use super::client_error::DriveError;
use crate::coverage::{self, Probe};
use crate::wire::tls::{dial, DialError};
use crate::wire::FramesBody;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONNECTION, CONTENT_LENGTH, HOST};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

/// Largest reply body read: a file resource or an error is well under a
/// kilobyte; a reply beyond this is a protocol error, not something to buffer.
pub const REPLY_BYTES_MAX: usize = 64 * 1024;

/// A reply, read whole (bounded by [`REPLY_BYTES_MAX`]).
pub(super) struct RawReply {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

/// Holds the connection slot for one exchange; if the exchange is dropped
/// midway (the caller's timeout), the connection is dropped with it, because
/// its state (half a body sent, a reply unread) is unknown.
struct Exchange<'a> {
    slot: tokio::sync::MutexGuard<'a, Option<SendRequest<FramesBody>>>,
    done: bool,
}

impl Drop for Exchange<'_> {
    fn drop(&mut self) {
        if !self.done {
            *self.slot = None;
        }
    }
}

impl DriveClient {
    /// One request and its whole reply, on the kept connection (opened or
    /// reopened as needed). With OAuth tokens, a `401` drops the token and
    /// sends the request once more with a fresh one (the drive refused it
    /// before reading the body, so nothing was committed).
    pub(super) async fn exchange(
        &self,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: FramesBody,
    ) -> Result<RawReply, DriveError> {
        let TokenSource::OAuth(tokens) = &self.access_token else {
            let token = self.access_token.token().await?;
            return self
                .exchange_once(method, path_and_query, headers, body, token)
                .await;
        };
        let token = tokens.token().await?;
        let again = (method.clone(), headers.clone(), body.clone());
        let reply = self
            .exchange_once(method, path_and_query, headers, body, Some(token.clone()))
            .await?;
        if reply.status != StatusCode::UNAUTHORIZED {
            return Ok(reply);
        }
        tracing::info!(addr = %self.addr, "drive client: 401, refreshing the access token once");
        coverage::hit(Probe::DriveTokenRejected);
        tokens.invalidate(&token).await;
        let fresh = tokens.token().await?;
        let (method, headers, body) = again;
        self.exchange_once(method, path_and_query, headers, body, Some(fresh))
            .await
    }

    /// One request with `token` (if any) as its bearer token, and its
    /// whole reply: no token source consulted, no second try.
    pub(super) async fn exchange_once(
        &self,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: FramesBody,
        token: Option<String>,
    ) -> Result<RawReply, DriveError> {
        let request = self.build_request(method, path_and_query, headers, body, token)?;
        let mut exchange = Exchange {
            slot: self.conn.lock().await,
            done: false,
        };
        let sender = self.ready_sender(&mut exchange).await?;
        // From here any failure leaves the connection in an unknown state:
        // `exchange` drops it unless `done` is set.
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| DriveError::Io {
                reason: e.to_string(),
            })?;
        let (reply, closing) = read_reply(response).await?;
        exchange.done = !closing;
        Ok(reply)
    }

    /// The request: `headers` plus `Host`, the exact `Content-Length` and
    /// the `Authorization` token, if any.
    fn build_request(
        &self,
        method: Method,
        path_and_query: &str,
        mut headers: HeaderMap,
        body: FramesBody,
        token: Option<String>,
    ) -> Result<Request<FramesBody>, DriveError> {
        let invalid = |what: &str| DriveError::InvalidRequest {
            reason: format!("{what} is not a header value"),
        };
        headers.insert(
            HOST,
            HeaderValue::from_str(&self.addr).map_err(|_| invalid("drive address"))?,
        );
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len_bytes()));
        if let Some(token) = token {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| invalid("access token"))?;
            headers.insert(AUTHORIZATION, value);
        }
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = path_and_query
            .parse()
            .map_err(|_| DriveError::InvalidRequest {
                reason: format!("{path_and_query:?} is not a request target"),
            })?;
        *request.headers_mut() = headers;
        Ok(request)
    }

    /// The kept connection, ready to send. One that closed while idle is
    /// replaced before anything is sent: that is reconnecting, not retrying
    /// a request.
    async fn ready_sender<'e>(
        &self,
        exchange: &'e mut Exchange<'_>,
    ) -> Result<&'e mut SendRequest<FramesBody>, DriveError> {
        let reusable = match exchange.slot.as_mut() {
            Some(sender) => sender.ready().await.is_ok(),
            None => false,
        };
        if !reusable {
            *exchange.slot = None;
            let mut sender = self.connect().await?;
            sender.ready().await.map_err(|e| DriveError::Connect {
                addr: self.addr.clone(),
                reason: e.to_string(),
            })?;
            *exchange.slot = Some(sender);
        }
        exchange.slot.as_mut().ok_or_else(|| DriveError::Connect {
            addr: self.addr.clone(),
            reason: "no connection after connecting".to_owned(),
        })
    }

    /// A new connection to the drive (TLS for an `https://` drive), its
    /// driver task spawned.
    async fn connect(&self) -> Result<SendRequest<FramesBody>, DriveError> {
        let connect_error = |reason: String| DriveError::Connect {
            addr: self.addr.clone(),
            reason,
        };
        let tls = match (&self.scheme, &self.tls) {
            (Scheme::Http, _) => None,
            (Scheme::Https, Some(tls)) => Some(tls),
            (Scheme::Https, None) => {
                return Err(DriveError::Tls {
                    addr: self.addr.clone(),
                    reason: "an https:// drive needs a TLS client (DriveClient::with_tls)"
                        .to_owned(),
                })
            }
        };
        let stream = dial(&*self.net, &self.addr, tls)
            .await
            .map_err(|e| match e {
                DialError::Connect { addr, reason } => DriveError::Connect { addr, reason },
                DialError::Tls { addr, reason } => DriveError::Tls { addr, reason },
            })?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        let addr = self.addr.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%addr, %error, "drive client: connection ended with an error");
            }
        });
        tracing::debug!(addr = %self.addr, "drive client: connected");
        Ok(sender)
    }
}

/// Reads `response` whole (at most [`REPLY_BYTES_MAX`] body bytes); also
/// whether the drive closes the connection after it.
async fn read_reply(response: Response<Incoming>) -> Result<(RawReply, bool), DriveError> {
    let (parts, mut incoming) = response.into_parts();
    let mut body = Vec::new();
    while let Some(frame) = incoming.frame().await {
        let frame = frame.map_err(|e| DriveError::Io {
            reason: format!("reading the {} reply: {e}", parts.status),
        })?;
        if let Ok(data) = frame.into_data() {
            if body.len().saturating_add(data.len()) > REPLY_BYTES_MAX {
                return Err(DriveError::Protocol {
                    reason: format!(
                        "{} reply body exceeds {REPLY_BYTES_MAX} bytes",
                        parts.status
                    ),
                });
            }
            body.extend_from_slice(&data);
        }
    }
    let closing = parts
        .headers
        .get(CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let reply = RawReply {
        status: parts.status,
        headers: parts.headers,
        body: Bytes::from(body),
    };
    Ok((reply, closing))
}
