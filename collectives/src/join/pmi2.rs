//! NOT IMPLEMENTED YET: joining a job through Slurm's launcher; refuses with a clear error.

use std::time::Duration;

use super::store::Store;
use super::{JobInfo, JoinError, Launcher};

/// The launcher's key-value space (not implemented yet).
pub(crate) struct Pmi2;

impl Pmi2 {
    /// Refuses: boad cannot join this launcher's jobs yet.
    pub fn connect(_info: &JobInfo, _timeout: Duration) -> Result<Pmi2, JoinError> {
        Err(JoinError::Launcher {
            launcher: Launcher::Slurm.name(),
            why: "boad cannot join this launcher's jobs yet: start the program with boadrun".into(),
        })
    }
}

impl Store for Pmi2 {
    fn launcher(&self) -> &'static str {
        Launcher::Slurm.name()
    }
    fn put(&mut self, _key: &str, _value: &str) -> Result<(), JoinError> {
        unreachable!("never connected")
    }
    fn fence(&mut self) -> Result<(), JoinError> {
        unreachable!("never connected")
    }
    fn get(&mut self, _key: &str) -> Result<String, JoinError> {
        unreachable!("never connected")
    }
}
