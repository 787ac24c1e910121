//! The synchronisation facade the permit core is generic over.
//!
//! # Why a facade
//! loom checks interleavings only of code that uses loom's own primitives,
//! and `RUSTFLAGS="--cfg loom"` cannot compile this crate's stack (tokio
//! drops `tokio::net` under `cfg(loom)`, hyper-util breaks). So instead of a
//! global cfg, [`Permits`](super::Permits) is generic over a [`SyncFacade`]:
//! production uses [`StdSync`] (std's `Mutex`); the loom models in
//! [`checks::loom_models`](crate::checks::loom_models) use [`LoomSync`]
//! (`loom::sync::Mutex`) and run the *same* permit code under loom's
//! explorer, from plain `cargo test` and from `upsim zoo`. Business code
//! never writes `cfg(loom)`: [`LoomSync`] is an ordinary type, and loom's
//! mutex outside a loom model panics, so it is only ever built inside one.
//!
//! The facade is closure-based (`with`) rather than guard-based so that the
//! trait needs no lifetime-generic associated types, and so that no lock can
//! be held across an `.await` by construction.

use std::sync::PoisonError;

/// A mutual-exclusion lock, as the permit core needs it.
pub trait FacadeMutex<T>: Send + Sync {
    /// Wraps `value`.
    fn new(value: T) -> Self;
    /// Runs `f` with the value locked.
    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R;
}

/// A family of synchronisation primitives.
pub trait SyncFacade: Send + Sync + 'static {
    /// The mutex type.
    type Mutex<T: Send + 'static>: FacadeMutex<T>;
}

/// std's primitives: the production facade.
#[derive(Debug)]
pub struct StdSync;

/// std's mutex, ignoring poison: the permit ledger checks its own invariants
/// after every operation, and a slot dropped while a panic unwinds must still
/// give its permits back.
#[derive(Debug, Default)]
pub struct StdMutex<T>(std::sync::Mutex<T>);

impl<T: Send> FacadeMutex<T> for StdMutex<T> {
    fn new(value: T) -> Self {
        Self(std::sync::Mutex::new(value))
    }

    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }
}

impl SyncFacade for StdSync {
    type Mutex<T: Send + 'static> = StdMutex<T>;
}

/// loom's primitives: the facade the loom models run the permit code on.
/// Only usable inside a loom model (loom's mutex panics elsewhere).
#[derive(Debug)]
pub struct LoomSync;

/// loom's mutex.
#[derive(Debug)]
pub struct LoomMutex<T>(loom::sync::Mutex<T>);

impl<T: Send> FacadeMutex<T> for LoomMutex<T> {
    fn new(value: T) -> Self {
        Self(loom::sync::Mutex::new(value))
    }

    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // loom's mutex poisons only if a model thread panicked, which has
        // already failed the model.
        let mut guard = self
            .0
            .lock()
            .expect("loom mutex poisoned by a failed model thread");
        f(&mut guard)
    }
}

impl SyncFacade for LoomSync {
    type Mutex<T: Send + 'static> = LoomMutex<T>;
}
