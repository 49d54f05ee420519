//! Finding the program to run before any rank is started.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// Whether the calling process may execute `path` (`access(2)` with `X_OK`).
fn executable(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call; access() only reads it.
    unsafe { libc::access(c.as_ptr(), libc::X_OK) == 0 }
}

/// Resolves `program` as a shell would: a name containing `/` is a path, any other name is searched
/// in the directories of `path_var` (an empty entry is the current directory).
pub fn resolve(program: &OsStr, path_var: Option<&OsStr>) -> Result<PathBuf, Error> {
    let name = program.to_string_lossy().into_owned();
    if program.as_bytes().contains(&b'/') {
        let p = PathBuf::from(program);
        return match std::fs::metadata(&p) {
            Err(_) => Err(Error::NoSuchFile(name)),
            Ok(m) if m.is_dir() => Err(Error::IsDirectory(name)),
            Ok(_) if !executable(&p) => Err(Error::NotExecutable(name)),
            Ok(_) => Ok(p),
        };
    }
    if program.is_empty() {
        return Err(Error::CommandNotFound(name));
    }
    let dirs = path_var.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    for dir in std::env::split_paths(dirs) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = dir.join(program);
        if candidate.is_file() && executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(Error::CommandNotFound(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names_and_paths() {
        let sh = resolve(
            OsStr::new("sh"),
            Some(OsStr::new("/nonexistent:/bin:/usr/bin")),
        );
        assert!(sh.is_ok_and(|p| p.ends_with("sh")));
        let missing = resolve(OsStr::new("no-such-boad-prog"), Some(OsStr::new("/bin")));
        assert!(matches!(missing, Err(Error::CommandNotFound(_))));
        assert!(matches!(
            resolve(OsStr::new("/"), None),
            Err(Error::IsDirectory(_))
        ));
        assert!(matches!(
            resolve(OsStr::new("./nope/x"), None),
            Err(Error::NoSuchFile(_))
        ));
    }
}
