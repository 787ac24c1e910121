//! Diagnose: written next.
