//! Helpers for end-to-end tests of `orca-worker` processes.
