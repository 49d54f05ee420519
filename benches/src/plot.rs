//! PNG plots made from [`crate::record::Record`]s (not written yet: see the benchmark issue).
