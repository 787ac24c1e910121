//! Admission: written next.
