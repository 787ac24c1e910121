//! The environment the upload system runs in, as traits.
//!
//! Business code never touches tokio's clock, the OS or sockets directly: it
//! is handed a [`Clock`], a [`MemoryProbe`] and a [`Network`]. Production
//! passes the real implementations; simulation passes turmoil-backed and
//! scripted ones. There are no `cfg(test)` branches in business logic — the
//! only difference between the two worlds is which value is passed in.
//!
//! Every trait is object safe and used as `Arc<dyn …>`: the environment is
//! consulted per request or per write, never per byte, so dynamic dispatch
//! costs nothing measurable and keeps generics out of every signature.

mod clock;
mod memory;
mod net;
mod shaper;

pub use clock::{Clock, ManualClock, SimClock, TokioClock, UtcDay};
pub use memory::{MemoryProbe, MemoryProbeError, MemorySnapshot, OsMemory, ScriptedMemory};
pub use net::{split_host_port, BoxConn, Connection, Listener, Network, SimNetwork, TokioNetwork};
pub use shaper::{Link, LinkRate, Shaped, ShapedNetwork, ZeroLinkRate};

use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future: what the object-safe environment traits return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
