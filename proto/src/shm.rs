//! Names of a job's shared-memory segments: the ranks create them, the launcher removes what a dead
//! job left. A name is `/dev/shm/boad-` and 32 hex digits of a SHA-256 of the job key and the host,
//! so it reveals neither the key nor anything another user could use to predict the name of another
//! job's segment; the segment's header carries a tag derived the same way (not the key).

use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Where segments live.
pub const SHM_DIR: &str = "/dev/shm";

/// SHA-256 of a purpose, the job key and the host: names and tags only the key's holders can
/// compute.
fn keyed_digest(job: u64, purpose: &[u8], host: u32) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"boad shm ");
    h.update(purpose);
    h.update(job.to_le_bytes());
    h.update(host.to_le_bytes());
    h.finalize().into()
}

/// The segment path of job `job` on host `host`.
pub fn segment_path(job: u64, host: u32) -> PathBuf {
    let d = keyed_digest(job, b"segment-name", host);
    let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    PathBuf::from(format!("{SHM_DIR}/boad-{hex}"))
}

/// The tag the segment of job `job` on host `host` carries in its header.
pub fn segment_tag(job: u64, host: u32) -> u64 {
    let d = keyed_digest(job, b"segment-tag", host);
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// Removes the segment of job `job` on host `host` if it was left in `/dev/shm` (by a job that died
/// before all its ranks mapped it) and this user owns it; true if it removed it.
pub fn remove_segment(job: u64, host: u32) -> std::io::Result<bool> {
    let path = segment_path(job, host);
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() && m.uid() == me => match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(false),
            Err(err) => Err(err),
        },
        Ok(_) => Ok(false),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_do_not_reveal_the_key_and_differ_per_job_and_host() {
        for key in [0x0123_4567_89ab_cdefu64, 1, u64::MAX] {
            for host in 0..4 {
                let p = segment_path(key, host).display().to_string();
                assert!(!p.contains(&format!("{key:016x}")), "{p}");
                assert!(p.starts_with("/dev/shm/boad-") && p.len() == "/dev/shm/boad-".len() + 32);
            }
        }
        assert_ne!(segment_path(1, 0), segment_path(1, 1));
        assert_ne!(segment_path(1, 0), segment_path(2, 0));
        assert_ne!(segment_tag(1, 0), segment_tag(2, 0));
    }
}
