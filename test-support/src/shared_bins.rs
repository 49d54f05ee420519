//! Binaries another user can run: tests that run boadrun, its agents or ranks as `nobody` cannot
//! count on the checkout being reachable by other users (a clone in a 0700 temporary directory is
//! not), so they run copies from a directory of their own that everyone may enter.
//!
//! Contract: [`SharedBins::new`] copies each file into a fresh `/tmp/boad-bins-*` directory (mode
//! 0755, files 0755) under its own file name; dropping it removes the directory.

use std::path::{Path, PathBuf};

/// Copies of binaries in a directory every user may enter (removed on drop).
pub struct SharedBins {
    dir: tempfile::TempDir,
}

impl SharedBins {
    /// Copies `bins` (each under its file name).
    pub fn new(bins: &[&Path]) -> std::io::Result<SharedBins> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new().prefix("boad-bins-").tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        for bin in bins {
            let name = bin.file_name().ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{} names no file", bin.display()),
                )
            })?;
            let to = dir.path().join(name);
            std::fs::copy(bin, &to)?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755))?;
        }
        Ok(SharedBins { dir })
    }

    /// The copy of the binary named `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn copies_are_executable_in_a_directory_anyone_may_enter_and_go_with_it() {
        let sh = Path::new("/bin/sh");
        let bins = SharedBins::new(&[sh]).expect("copy");
        let copy = bins.path("sh");
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&copy), 0o755);
        assert_eq!(mode(copy.parent().expect("dir")), 0o755);
        let out = std::process::Command::new(&copy)
            .args(["-c", "echo ok"])
            .output()
            .expect("run the copy");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
        let dir = copy.parent().expect("dir").to_path_buf();
        drop(bins);
        assert!(!dir.exists());
    }
}
