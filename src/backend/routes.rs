//! The one routing table of the chunk API, and what every route shares:
//! who sent the request, and which of their uploads it names.
//!
//! ```text
//! GET    /                             the upload page (page.rs)
//! GET    /page/{file}                  its script, style and worker
//! GET    /healthz                      health (with a drive probe)
//! GET    /metrics                      Prometheus text
//! POST   /uploads                      create        (create.rs)
//! GET    /uploads/{id}                 status        (here)
//! DELETE /uploads/{id}                 abort         (here)
//! PUT    /uploads/{id}/chunks/{index}  one chunk     (intake.rs)
//! GET    /uploads/{id}/events          event stream  (events.rs)
//! POST   /uploads/{id}/events/token    events token  (events.rs)
//! *      /files, /files/{id}           tus 1.0.0     (tus/)
//! ```
//!
//! The event stream is the one reply that is not whole: it is routed
//! first, in [`Backend::handle`]; every other route answers in
//! `handle_whole`.

use super::committer::Ending;
use super::events::Served;
use super::refusals::Refusal;
use super::server::Backend;
use super::upload::Upload;
use crate::auth::{authenticate, Auth};
use crate::chunk_api::Cause;
use crate::chunk_api::USER_HEADER;
use crate::user::UserId;
use crate::wire::{json, Reply};
use http::{Method, Request, StatusCode};
use http_body_util::Either;
use hyper::body::Incoming;
use std::sync::Arc;

impl Backend {
    /// Routes one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Served {
        let path = req.uri().path();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        if let (&Method::GET, ["uploads", id, "events"]) = (req.method(), segments.as_slice()) {
            if crate::wire::request_header_bytes(&req) <= self.inner.config.request_header_bytes_max
            {
                return self
                    .events(&req, id)
                    .unwrap_or_else(|r| r.reply().map(Either::Left));
            }
        }
        self.handle_whole(req).await.map(Either::Left)
    }

    /// Routes a request whose reply is whole.
    async fn handle_whole(&self, req: Request<Incoming>) -> Reply {
        let header_bytes = crate::wire::request_header_bytes(&req);
        let header_bytes_max = self.inner.config.request_header_bytes_max;
        if header_bytes > header_bytes_max {
            let mut r = Refusal::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                Cause::HeaderTooLarge,
                format!(
                    "the request's target and headers take {header_bytes} bytes; the limit is {header_bytes_max}"
                ),
            );
            r.details = serde_json::json!({
                "header_bytes": header_bytes,
                "header_bytes_max": header_bytes_max,
            });
            let tus = matches!(req.uri().path().split('/').nth(1), Some("files"));
            return if tus {
                super::tus::refused_before_routing(r)
            } else {
                r.reply()
            };
        }
        let path = req.uri().path().to_owned();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let result = match (req.method().clone(), segments.as_slice()) {
            (Method::GET, [""]) => Ok(super::page::index()),
            (Method::GET, ["page", file]) => super::page::asset(file),
            (Method::GET, ["healthz"]) => Ok(json(StatusCode::OK, &self.health_public().await)),
            (Method::GET, ["metrics"]) => Ok(self.metrics_reply()),
            (Method::POST, ["uploads"]) => self.create(req).await,
            (Method::GET, ["uploads", id]) => self.get_status(&req, id),
            (Method::DELETE, ["uploads", id]) => self.abort(&req, id),
            (Method::PUT, ["uploads", id, "chunks", index]) => {
                let (id, index) = ((*id).to_owned(), (*index).to_owned());
                self.put_chunk(req, &id, &index).await
            }
            (Method::POST, ["uploads", id, "events", "token"]) => self.events_token(&req, id),
            (_, ["files"]) => return self.tus(req, None).await,
            (_, ["files", id]) => {
                let id = (*id).to_owned();
                return self.tus(req, Some(&id)).await;
            }
            (
                _,
                [""]
                | ["page", _]
                | ["healthz"]
                | ["metrics"]
                | ["uploads"]
                | ["uploads", _]
                | ["uploads", _, "chunks", _]
                | ["uploads", _, "events"]
                | ["uploads", _, "events", "token"],
            ) => Err(Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                Cause::MethodNotAllowed,
                format!("{} is not allowed on {path}", req.method()),
            )),
            _ => Err(Refusal::new(
                StatusCode::NOT_FOUND,
                Cause::NotFound,
                format!("no route {path}"),
            )),
        };
        result.unwrap_or_else(Refusal::reply)
    }

    /// Who sent `req`, as [`BackendConfig::auth`] says to tell.
    pub(super) fn user(&self, req: &Request<Incoming>) -> Result<UserId, Refusal> {
        match &self.inner.config.auth {
            Auth::UserHeader => Self::user_header(req),
            Auth::Tokens(table) => authenticate(table, req.headers()).cloned().map_err(|e| {
                let mut r = Refusal::new(
                    StatusCode::UNAUTHORIZED,
                    Cause::Unauthenticated,
                    e.to_string(),
                );
                r.challenge = true;
                r
            }),
        }
    }

    pub(super) fn user_header(req: &Request<Incoming>) -> Result<UserId, Refusal> {
        let header = req.headers().get(USER_HEADER).ok_or_else(|| {
            Refusal::new(
                StatusCode::UNAUTHORIZED,
                Cause::Unauthenticated,
                format!("missing {USER_HEADER} header"),
            )
        })?;
        let text = header.to_str().map_err(|_| {
            Refusal::new(
                StatusCode::UNAUTHORIZED,
                Cause::Unauthenticated,
                "user header is not ASCII",
            )
        })?;
        UserId::new(text).map_err(|e| {
            Refusal::new(
                StatusCode::UNAUTHORIZED,
                Cause::Unauthenticated,
                e.to_string(),
            )
        })
    }

    /// The chunk API upload `id` of `user`; another user's upload (or a
    /// tus upload) is reported as missing (its existence is not revealed).
    pub(super) fn find(&self, id: &str, user: &UserId) -> Result<Arc<Upload>, Refusal> {
        self.find_of(id, user, false)
    }

    /// The upload `id` of `user` if it is a tus upload (`tus`) or a chunk
    /// API one (`!tus`); otherwise, as for another user's, 404.
    pub(super) fn find_of(
        &self,
        id: &str,
        user: &UserId,
        tus: bool,
    ) -> Result<Arc<Upload>, Refusal> {
        let found = self.uploads().get(id).cloned();
        match found {
            Some(u) if &u.user == user && u.tus.is_some() == tus => Ok(u),
            _ => Err(Refusal::new(
                StatusCode::NOT_FOUND,
                Cause::UnknownUpload,
                format!("no upload {id:?}"),
            )),
        }
    }

    pub(super) fn get_status(&self, req: &Request<Incoming>, id: &str) -> Result<Reply, Refusal> {
        let user = self.user(req)?;
        let upload = self.find(id, &user)?;
        Ok(json(StatusCode::OK, &upload.status()))
    }

    pub(super) fn abort(&self, req: &Request<Incoming>, id: &str) -> Result<Reply, Refusal> {
        let user = self.user(req)?;
        let upload = self.find(id, &user)?;
        let aborted = Refusal::new(
            StatusCode::GONE,
            Cause::Aborted,
            "the upload was aborted by its owner",
        );
        self.end(&upload, Ending::Failed(aborted));
        Ok(json(StatusCode::OK, &upload.status()))
    }
}
