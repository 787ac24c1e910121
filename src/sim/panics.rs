//! Panics inside simulated hosts: recorded so the oracle can flag them.
//!
//! The hosts of a simulation run on the thread that steps it, and tokio
//! catches a panicking task (a connection handler, say), so without this a
//! panic inside a simulated server would go unnoticed.

use std::cell::RefCell;

thread_local! {
    /// Panics seen on this thread while a run is in progress.
    static PANICS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Starts recording this thread's panics afresh: installs the hook (once per
/// process) and forgets panics of earlier runs.
pub(super) fn start_recording() {
    install_hook();
    PANICS.with(|p| p.borrow_mut().clear());
}

/// The panics recorded on this thread since [`start_recording`], first
/// line each; the record is left empty.
pub(super) fn take() -> Vec<String> {
    PANICS.with(|p| std::mem::take(&mut *p.borrow_mut()))
}

/// Installs (once per process) a panic hook that records panics in
/// [`PANICS`] and then defers to the previous hook.
fn install_hook() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| {
                if let Ok(mut p) = p.try_borrow_mut() {
                    p.push(
                        info.to_string()
                            .lines()
                            .next()
                            .unwrap_or_default()
                            .to_owned(),
                    );
                }
            });
            previous(info);
        }));
    });
}
