//! Profiles: placeholder, written next.
