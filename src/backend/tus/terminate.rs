//! `DELETE /files/{id}`: tus's termination. The drive keeps a file that
//! was completed (termination frees the server's resources, not the
//! drive's file); what the backend holds goes.

use super::super::committer::Ending;
use super::super::refusals::Refusal;
use super::super::server::Backend;
use super::reply::empty;
use crate::chunk_api::{Cause, Phase};
use crate::wire::Reply;
use http::{Request, StatusCode};
use hyper::body::Incoming;

impl Backend {
    /// `DELETE /files/{id}`: 204. An upload still receiving ends as
    /// aborted, as the chunk API's abort ends it (its slot, reservation
    /// and window go at once; a PATCH in progress stops at its next frame;
    /// requests get 410 `aborted` while it is retained, then 404); an
    /// upload that ended already is forgotten at once (404); a
    /// length-deferred one is dropped.
    pub(super) fn tus_terminate(
        &self,
        req: &Request<Incoming>,
        id: &str,
    ) -> Result<Reply, Refusal> {
        let user = self.user(req)?;
        if self.inner.tus_deferred.remove(id, &user) {
            return Ok(empty(StatusCode::NO_CONTENT));
        }
        let upload = self.find_tus(id, &user)?;
        let ended = matches!(upload.lock().phase, Phase::Complete | Phase::Failed);
        if ended {
            self.forget(&upload.id);
        } else {
            let aborted = Refusal::new(
                StatusCode::GONE,
                Cause::Aborted,
                "the upload was terminated by its owner",
            );
            self.end(&upload, Ending::Failed(aborted));
        }
        Ok(empty(StatusCode::NO_CONTENT))
    }
}
