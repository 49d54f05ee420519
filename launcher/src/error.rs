//! The one error type of `boadrun`.

/// Everything that can stop `boadrun` before or while running a job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The program (a path) does not exist.
    #[error("{0}: no such file")]
    NoSuchFile(String),
    /// The program (a bare name) is not in any `PATH` directory.
    #[error("{0}: command not found")]
    CommandNotFound(String),
    /// The program is a directory.
    #[error("{0}: is a directory")]
    IsDirectory(String),
    /// The program exists but may not be executed.
    #[error("{0}: is not executable")]
    NotExecutable(String),
    /// Starting a rank failed.
    #[error("cannot start rank {rank} ({program}): {source}")]
    Spawn {
        /// The rank.
        rank: usize,
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// Options that do not fit together.
    #[error("{0}")]
    Usage(String),
    /// `--transport kernel` and the kernel path cannot be set up.
    #[error("kernel path unavailable: {0}")]
    Kernel(String),
    /// Setting up the job (temporary directory, socket, signal handlers) failed.
    #[error("{what}: {source}")]
    Setup {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

impl Error {
    /// The exit code `boadrun` ends with for this error: 127 for a missing program, 126 for one that
    /// cannot be run, 125 when the launcher itself failed (as `env` and `nice` do).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::NoSuchFile(_) | Error::CommandNotFound(_) => 127,
            Error::IsDirectory(_) | Error::NotExecutable(_) => 126,
            Error::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound => 127,
            Error::Spawn { .. } => 126,
            Error::Setup { .. } | Error::Usage(_) | Error::Kernel(_) => 125,
        }
    }

    /// Wraps an I/O error met while doing `what`.
    pub fn setup(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Setup { what, source }
    }
}
