//! Fault points inside the code (FoundationDB's BUGGIFY): named sites in the
//! drive, the backend and the client where a simulation may make things go
//! wrong on purpose — a short `308`, a reply lost after the work was done, a
//! slow disk, a late slot release, a duplicated chunk, a client restart.
//!
//! A run activates a set of sites from its seed ([`install`]): each site is
//! on or off for the whole run, and an active site then fires with its own
//! probability, drawn from a RNG seeded by the run. [`stop`] turns every site
//! off (the liveness phase). Sites live in a thread-local: a simulation runs
//! on one thread, so runs on other threads (a sweep's workers) never see
//! each other's sites.
//!
//! Inert outside simulation: nothing installs sites in real mode, and
//! [`fire`] is then one thread-local read and a `None` check — no RNG, no
//! lock, no allocation.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// The fault sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Site {
    /// The drive keeps only half of a piece (a short `308`).
    DriveShortRange,
    /// The drive commits a piece, then loses the reply (the connection
    /// closes without an answer).
    DriveReplyLost,
    /// The drive's storage stalls before an append.
    DriveSlowDisk,
    /// The backend stores a chunk, then loses the reply.
    BackendChunkReplyLost,
    /// The backend releases an ended upload's slot late.
    BackendSlowRelease,
    /// The client sends a chunk twice at once.
    ClientDuplicateChunk,
    /// The client restarts mid-round (in-flight chunks dropped) and resumes
    /// from the backend's status.
    ClientRestart,
    /// A chunk body loses a bit on the way to the backend (flipped after
    /// the client checksummed it): the backend's CRC-32C must refuse it.
    ClientChunkBitFlip,
    /// A drive piece loses a bit on the way to the drive: the drive
    /// protocol has no per-piece checksum, so the drive stores it, and
    /// only the backend's whole-file check at the end can catch it.
    BackendPieceBitFlip,
    /// The backend admits an upload, then loses the create's reply.
    BackendCreateReplyLost,
    /// The backend answers a create only after the client's request
    /// timeout: the reply reaches a requester that gave up on it.
    BackendCreateReplyLate,
    /// The client sends the same create (same client token) twice at once.
    ClientDuplicateCreate,
    /// The client adds to a round the first chunk beyond the backend's
    /// window (the chunk at the window's end index), which the backend
    /// must refuse with `window_full`: the window's edge, probed.
    ClientWindowEdge,
    /// The client's event stream drops after an event, as a flaky network
    /// or a proxy would cut it: the client opens it again with
    /// `Last-Event-ID`.
    ClientEventStreamDrop,
    /// A tus client sends a HEAD while its own PATCH is in flight (tusd
    /// #1161): the offset it reads must lie within that PATCH.
    TusHeadDuringPatch,
    /// A tus client sends a second PATCH at the same offset while the
    /// first is in flight: one takes over, the bytes are stored once.
    TusSamePatchTwice,
    /// A tus client disconnects mid-PATCH (the request dropped after part
    /// of its body): what arrived is kept, the client resumes from HEAD.
    TusPatchCut,
}

impl Site {
    /// Every site of the chunk API's world, in a fixed order (the tus
    /// client's are in [`TUS`](Self::TUS)).
    pub const ALL: [Site; 14] = [
        Site::DriveShortRange,
        Site::DriveReplyLost,
        Site::DriveSlowDisk,
        Site::BackendChunkReplyLost,
        Site::BackendSlowRelease,
        Site::ClientDuplicateChunk,
        Site::ClientRestart,
        // Added later: after the first seven, so swarm seeds draw the
        // first seven's choices as before.
        Site::ClientChunkBitFlip,
        Site::BackendPieceBitFlip,
        Site::BackendCreateReplyLost,
        Site::BackendCreateReplyLate,
        Site::ClientDuplicateCreate,
        Site::ClientWindowEdge,
        Site::ClientEventStreamDrop,
    ];

    /// The tus client's sites: not in [`ALL`](Self::ALL), which swarm
    /// draws from its main stream (adding them there would move every
    /// later draw); swarm draws these from its own tus stream.
    pub const TUS: [Site; 3] = [
        Site::TusHeadDuringPatch,
        Site::TusSamePatchTwice,
        Site::TusPatchCut,
    ];
}

/// An active site and how often it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// The site.
    pub site: Site,
    /// Chance to fire each time it is reached, in thousandths (0–1000).
    pub permille: u32,
}

struct Active {
    sites: BTreeMap<Site, u32>,
    rng: ChaCha8Rng,
    fired: BTreeMap<Site, u32>,
}

thread_local! {
    static ACTIVE: RefCell<Option<Active>> = const { RefCell::new(None) };
}

/// Activates `sites` on this thread, firing from a RNG seeded by `seed`.
/// Replaces any sites already active.
pub fn install(sites: &[SiteConfig], seed: u64) {
    let active = Active {
        sites: sites
            .iter()
            .map(|s| (s.site, s.permille.min(1000)))
            .collect(),
        rng: ChaCha8Rng::seed_from_u64(seed),
        fired: BTreeMap::new(),
    };
    ACTIVE.with(|a| *a.borrow_mut() = Some(active));
}

/// Turns every site off; returns how often each fired.
pub fn stop() -> BTreeMap<Site, u32> {
    ACTIVE.with(|a| a.borrow_mut().take().map(|a| a.fired).unwrap_or_default())
}

/// How often each site fired so far on this thread.
pub fn fired() -> BTreeMap<Site, u32> {
    ACTIVE.with(|a| {
        a.borrow()
            .as_ref()
            .map(|a| a.fired.clone())
            .unwrap_or_default()
    })
}

/// Whether `site` fires now. Always `false` unless a simulation installed it.
pub fn fire(site: Site) -> bool {
    ACTIVE.with(|a| {
        let Ok(mut guard) = a.try_borrow_mut() else {
            return false;
        };
        let Some(active) = guard.as_mut() else {
            return false;
        };
        let Some(&permille) = active.sites.get(&site) else {
            return false;
        };
        let fires = active.rng.random_range(0..1000) < permille;
        if fires {
            *active.fired.entry(site).or_insert(0) += 1;
        }
        fires
    })
}

/// Flips one bit of `bytes` (the low bit of the middle byte), as a link
/// that damaged them in transit would. For the bit-flip sites; a no-op on
/// empty bytes.
pub fn flip_bit(bytes: &mut [u8]) {
    let middle = bytes.len() / 2;
    if let Some(b) = bytes.get_mut(middle) {
        *b ^= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inert_until_installed_and_after_stop() {
        assert!(!fire(Site::DriveShortRange));
        install(
            &[SiteConfig {
                site: Site::DriveShortRange,
                permille: 1000,
            }],
            1,
        );
        assert!(fire(Site::DriveShortRange));
        assert!(!fire(Site::ClientRestart), "only installed sites fire");
        assert_eq!(stop().get(&Site::DriveShortRange), Some(&1));
        assert!(!fire(Site::DriveShortRange));
    }

    #[test]
    fn a_flipped_bit_changes_the_checksum_and_flips_back() {
        let original: Vec<u8> = (0..=255).collect();
        let mut damaged = original.clone();
        flip_bit(&mut damaged);
        assert_ne!(
            crate::checksum::crc32c(&damaged),
            crate::checksum::crc32c(&original)
        );
        flip_bit(&mut damaged);
        assert_eq!(damaged, original);
        flip_bit(&mut []);
    }

    #[test]
    fn firing_is_seeded() {
        let run = |seed| {
            install(
                &[SiteConfig {
                    site: Site::DriveSlowDisk,
                    permille: 300,
                }],
                seed,
            );
            let pattern: Vec<bool> = (0..64).map(|_| fire(Site::DriveSlowDisk)).collect();
            stop();
            pattern
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
        let fired = run(5).iter().filter(|f| **f).count();
        assert!((5..=40).contains(&fired), "{fired} of 64 at 30 %");
    }
}
