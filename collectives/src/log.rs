//! What the library says on stderr: `tracing` events (a warning naming a peer that is waited for,
//! an error dropping a communicator), filtered by `BOAD_LOG` (default `warn`; `off` silences them,
//! `debug` adds the data path each rank chose, any `tracing` filter works).
//!
//! A program with its own `tracing` subscriber gets boad's events there: [`init`] installs one only
//! when none is set yet.

use tracing_subscriber::EnvFilter;

/// Installs a subscriber printing boad's events to stderr, unless the program has one.
pub(crate) fn init() {
    if tracing::dispatcher::has_been_set() {
        return;
    }
    let filter = EnvFilter::try_from_env("BOAD_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_ansi(false)
        .try_init();
}
