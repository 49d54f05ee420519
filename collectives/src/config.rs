//! Run-time settings read from the environment (`BOAD_*`).

use std::time::Duration;

use crate::error::UsageError;

/// One `BOAD_*` variable a rank reads: what `boadrun --help` and the README list (a test checks that
/// they agree).
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    /// The variable.
    pub name: &'static str,
    /// Its default, as written in the docs.
    pub default: &'static str,
    /// What it does.
    pub meaning: &'static str,
}

/// Every setting [`Config::from_env`] reads.
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "BOAD_TIMEOUT_MS",
        default: "60000",
        meaning: "how long a peer this rank waits for may stay silent: past it, a peer that is alive \
                  (busy outside boad) is waited for with a warning naming it every BOAD_TIMEOUT_MS, \
                  and one that shows no sign of life (lost network, stopped process) is a Timeout \
                  error naming it",
    },
    Setting {
        name: "BOAD_CHUNK_BYTES",
        default: "32768 on loopback, else 1400",
        meaning: "payload bytes per datagram (a multiple of 8, up to 65000)",
    },
    Setting {
        name: "BOAD_WINDOW",
        default: "1 MiB of chunks (4..256)",
        meaning: "unacknowledged datagrams per message",
    },
    Setting {
        name: "BOAD_DROP_RATE",
        default: "0",
        meaning: "drop this fraction of received datagrams (to test loss recovery)",
    },
    Setting {
        name: "BOAD_DROP_SEED",
        default: "1",
        meaning: "seed of the dropped datagrams (mixed with the rank)",
    },
    Setting {
        name: "BOAD_STATS",
        default: "off",
        meaning: "1: print each rank's counters at finalize",
    },
    Setting {
        name: "BOAD_TRANSPORT",
        default: "auto",
        meaning: "auto, kernel, udp or shm: the data path (see --transport)",
    },
    Setting {
        name: "BOAD_SHM_SPIN_US",
        default: "100 (0 with more ranks than cores)",
        meaning: "shared memory: how long a waiting rank polls before it yields",
    },
    Setting {
        name: "BOAD_SHM_YIELD_US",
        default: "0 (100 with more ranks than cores)",
        meaning: "shared memory: how long a waiting rank polls between sched_yields before it \
                  sleeps on its futex",
    },
];

/// Which transport a job uses (`BOAD_TRANSPORT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind {
    /// Shared memory when every rank of the job is on this host; else the kernel path where the
    /// launcher attached it (UDP for the calls it does not fit); else hierarchical (shared memory
    /// inside each host, UDP between one leader per host) when some host has several ranks; else UDP.
    Auto,
    /// Userspace UDP, rank to rank.
    Udp,
    /// The eBPF kernel path where the call fits, else UDP (an error at init if the launcher did not
    /// attach it).
    Kernel,
    /// Shared memory; over several hosts, hierarchical (shared memory inside each host, UDP
    /// between one leader per host).
    Shm,
}

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
    /// with at most one rank per core, 0 and 100 µs with more ranks than cores.
    pub shm_spin: Option<(Duration, Duration)>,
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
        if let Some(t) = parse::<String>("BOAD_TRANSPORT")? {
            c.transport = match t.as_str() {
                "auto" => TransportKind::Auto,
                "udp" => TransportKind::Udp,
                "kernel" => TransportKind::Kernel,
                "shm" => TransportKind::Shm,
                _ => {
                    return Err(UsageError::Config {
                        name: "BOAD_TRANSPORT",
                        value: t,
                        why: "must be one of auto, udp, kernel, shm".into(),
                    })
                }
            };
        }
        Ok(c)
    }
}
