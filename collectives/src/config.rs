//! Run-time settings read from the environment (`BOAD_*`).

use std::time::Duration;

pub use boad_proto::TransportKind;

use crate::error::UsageError;

/// The most `BOAD_SHM_SLOT_BYTES` can be: the data bytes of a slot (`transport::shm`).
pub const SHM_SLOT_BYTES_MAX: usize = 4096;

/// Settings, from `BOAD_*` environment variables.
#[derive(Clone, Debug)]
pub struct Config {
    /// `BOAD_TIMEOUT_MS` (default 60000): how long a peer may stay silent while this rank waits for it.
    pub timeout: Duration,
    /// `BOAD_CHUNK_BYTES`: payload bytes per datagram; a multiple of 8, 8..=65000. Default (0 until
    /// [`Config::resolve`]): 32768 on loopback, 1400 elsewhere (a 1500-byte MTU with no fragments).
    pub chunk_bytes: usize,
    /// `BOAD_WINDOW`: datagrams of one message in flight before an acknowledgement. Default (0 until
    /// [`Config::resolve`]): 1 MiB worth of chunks, between 4 and 256.
    pub window: u32,
    /// `BOAD_DROP_RATE` (default 0): fraction of received datagrams to drop, to test loss recovery.
    pub drop_rate: f64,
    /// `BOAD_DROP_SEED` (default 1): seed of the drop decisions (mixed with the rank).
    pub drop_seed: u64,
    /// `BOAD_STATS=1`: print per-rank counters to stderr at finalize.
    pub stats: bool,
    /// `BOAD_TRANSPORT` (default `auto`).
    pub transport: TransportKind,
    /// `BOAD_SHM_SPIN_US`, `BOAD_SHM_YIELD_US` (shm transport): how long a waiting rank polls, then
    /// polls between `sched_yield`s, before it sleeps on its futex. Default (None): 100 and 0 µs
    /// with at most one rank per core; with more ranks than cores, 0 µs and 10 ms up to 2 ranks
    /// per core, 0 and 100 µs above.
    pub shm_spin: Option<(Duration, Duration)>,
    /// `BOAD_SHM_SLOT_BYTES` (default and most 4096; 0: none): the largest collective (bytes per
    /// rank) that goes through each rank's slot in shared memory instead of the rings. The value
    /// of the rank that creates the segment (rank 0 of the host) holds for the whole job.
    pub shm_slot_bytes: usize,
    /// `BOAD_FOLD_THREADS`: threads a rank folds a large buffer on (1: the calling thread only).
    /// Default (None, or `auto`): the cores each rank of this host has to itself, when that is at
    /// least 2, else 1 ([`crate::ops::par::auto_threads`]).
    pub fold_threads: Option<usize>,
    /// `BOAD_FOLD_PAR_BYTES`: the smallest buffer folded on several threads. Default (None):
    /// [`crate::ops::par::DEFAULT_MIN_BYTES`].
    pub fold_par_bytes: Option<usize>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            timeout: Duration::from_millis(60_000),
            chunk_bytes: 0,
            window: 0,
            drop_rate: 0.0,
            drop_seed: 1,
            stats: false,
            transport: TransportKind::Auto,
            shm_spin: None,
            shm_slot_bytes: SHM_SLOT_BYTES_MAX,
            fold_threads: None,
            fold_par_bytes: None,
        }
    }
}

fn parse<T: std::str::FromStr>(name: &'static str) -> Result<Option<T>, UsageError>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Err(_) => Ok(None),
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|e: T::Err| UsageError::Config {
                name,
                value: v,
                why: e.to_string(),
            }),
    }
}

fn check(ok: bool, name: &'static str, value: impl ToString, why: &str) -> Result<(), UsageError> {
    if ok {
        Ok(())
    } else {
        Err(UsageError::Config {
            name,
            value: value.to_string(),
            why: why.into(),
        })
    }
}

impl Config {
    /// Fills in the defaults that depend on where the rank's socket is bound.
    pub fn resolve(&mut self, bind: std::net::IpAddr) {
        if self.chunk_bytes == 0 {
            self.chunk_bytes = if bind.is_loopback() { 32768 } else { 1400 };
        }
        if self.window == 0 {
            self.window = ((1 << 20) / self.chunk_bytes).clamp(4, 256) as u32;
        }
    }

    /// Reads the settings from the environment, with defaults for the unset ones.
    pub fn from_env() -> Result<Config, UsageError> {
        let mut c = Config::default();
        if let Some(ms) = parse::<u64>("BOAD_TIMEOUT_MS")? {
            check(ms > 0, "BOAD_TIMEOUT_MS", ms, "must be positive")?;
            c.timeout = Duration::from_millis(ms);
        }
        if let Some(b) = parse::<usize>("BOAD_CHUNK_BYTES")? {
            check(
                (8..=65000).contains(&b) && b.is_multiple_of(8),
                "BOAD_CHUNK_BYTES",
                b,
                "must be a multiple of 8 between 8 and 65000",
            )?;
            c.chunk_bytes = b;
        }
        if let Some(w) = parse::<u32>("BOAD_WINDOW")? {
            check(
                (1..=4096).contains(&w),
                "BOAD_WINDOW",
                w,
                "must be between 1 and 4096",
            )?;
            c.window = w;
        }
        if let Some(r) = parse::<f64>("BOAD_DROP_RATE")? {
            check(
                (0.0..1.0).contains(&r),
                "BOAD_DROP_RATE",
                r,
                "must be in [0, 1)",
            )?;
            c.drop_rate = r;
        }
        if let Some(s) = parse::<u64>("BOAD_DROP_SEED")? {
            c.drop_seed = s;
        }
        if let Some(s) = parse::<String>("BOAD_STATS")? {
            c.stats = !matches!(s.as_str(), "0" | "false" | "no" | "off");
        }
        let spin = parse::<u64>("BOAD_SHM_SPIN_US")?;
        let yields = parse::<u64>("BOAD_SHM_YIELD_US")?;
        if spin.is_some() || yields.is_some() {
            c.shm_spin = Some((
                Duration::from_micros(spin.unwrap_or(0)),
                Duration::from_micros(yields.unwrap_or(0)),
            ));
        }
        if let Some(b) = parse::<usize>("BOAD_SHM_SLOT_BYTES")? {
            check(
                b <= SHM_SLOT_BYTES_MAX,
                "BOAD_SHM_SLOT_BYTES",
                b,
                &format!("must be at most {SHM_SLOT_BYTES_MAX}"),
            )?;
            c.shm_slot_bytes = b;
        }
        match parse::<String>("BOAD_FOLD_THREADS")?.as_deref() {
            None | Some("auto") => {}
            Some(v) => {
                let max = crate::ops::par::MAX_THREADS;
                let t = v.parse::<usize>().ok().filter(|t| (1..=max).contains(t));
                c.fold_threads = Some(t.ok_or_else(|| UsageError::Config {
                    name: "BOAD_FOLD_THREADS",
                    value: v.into(),
                    why: format!("must be auto or a number of threads between 1 and {max}"),
                })?);
            }
        }
        if let Some(b) = parse::<usize>("BOAD_FOLD_PAR_BYTES")? {
            check(b > 0, "BOAD_FOLD_PAR_BYTES", b, "must be positive")?;
            c.fold_par_bytes = Some(b);
        }
        if let Some(t) = parse::<TransportKind>(boad_proto::env::TRANSPORT)? {
            c.transport = t;
        }
        Ok(c)
    }
}
