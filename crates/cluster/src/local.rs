//! The local store: a directory on one machine (or NFS), no etcd.
//!
//! A record is a file `DIR/KEY.rec`: a first line `ftvm-cluster v1 VERSION`, then the value.
//! Writes go to a temporary file renamed over the record (a crash leaves the old or the new
//! record, never half of one); compare-and-swap holds an exclusive `flock` on `DIR/.lock`.

use crate::{validate_key, Error, Raw, Result, Store};
use std::fs;
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

const MAGIC: &str = "ftvm-cluster v1 ";

/// A store in a directory.
#[derive(Debug)]
pub struct LocalStore {
    dir: PathBuf,
}

/// Holds the store's lock until dropped.
struct Lock(fs::File);

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: the descriptor is open (owned by self.0) for the duration of the call.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

fn io(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.display().to_string();
    move |source| Error::Io {
        path,
        action,
        source,
    }
}

impl LocalStore {
    /// Opens (creating) the directory `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Result<LocalStore> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io(&dir, "creating the store directory"))?;
        Ok(LocalStore { dir })
    }

    fn lock(&self) -> Result<Lock> {
        let p = self.dir.join(".lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(io(&p, "opening the lock file"))?;
        // SAFETY: the descriptor is open (owned by f) for the duration of the call.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io(&p, "locking")(std::io::Error::last_os_error()));
        }
        Ok(Lock(f))
    }

    /// Takes the store's lock for a change of `key`, which must stand at version `expect` (0:
    /// absent), else [`Error::Conflict`]; returns the record's path and the lock.
    fn lock_at(&self, key: &str, expect: u64) -> Result<(PathBuf, Lock)> {
        validate_key(key)?;
        let p = self.path(key);
        let l = self.lock()?;
        let have = self.read(key, &p)?.map_or(0, |r| r.version);
        if have != expect {
            return Err(Error::Conflict(key.to_owned()));
        }
        Ok((p, l))
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.rec"))
    }

    fn read(&self, key: &str, p: &Path) -> Result<Option<Raw>> {
        let bytes = match fs::read(p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(p, "reading a record")(e)),
        };
        let corrupt = |reason: &str| Error::Corrupt {
            key: key.to_owned(),
            reason: format!("{}: {reason}", p.display()),
        };
        let nl = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| corrupt("no header line"))?;
        let head = std::str::from_utf8(&bytes[..nl]).map_err(|_| corrupt("header not UTF-8"))?;
        let version = head
            .strip_prefix(MAGIC)
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&v| v > 0)
            .ok_or_else(|| corrupt(&format!("header {head:?} is not \"{MAGIC}N\"")))?;
        Ok(Some(Raw {
            value: bytes[nl + 1..].to_vec(),
            version,
        }))
    }
}

impl Store for LocalStore {
    fn get(&self, key: &str) -> Result<Option<Raw>> {
        validate_key(key)?;
        self.read(key, &self.path(key))
    }

    fn cas(&self, key: &str, expect: u64, value: &[u8]) -> Result<u64> {
        let (p, _l) = self.lock_at(key, expect)?;
        let version = expect + 1;
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).map_err(io(parent, "creating a directory"))?;
        }
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        let mut f = fs::File::create(&tmp).map_err(io(&tmp, "creating a record"))?;
        f.write_all(format!("{MAGIC}{version}\n").as_bytes())
            .and_then(|_| f.write_all(value))
            .and_then(|_| f.sync_all())
            .map_err(io(&tmp, "writing a record"))?;
        fs::rename(&tmp, &p).map_err(io(&p, "renaming a record into place"))?;
        Ok(version)
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Raw)>> {
        let (dir, stem) = match prefix.rfind('/') {
            Some(i) => (self.dir.join(&prefix[..i]), &prefix[i + 1..]),
            None => (self.dir.clone(), prefix),
        };
        let rd = match fs::read_dir(&dir) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&dir, "listing")(e)),
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e.map_err(io(&dir, "listing"))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(n) = name.strip_suffix(".rec") else {
                continue;
            };
            if !n.starts_with(stem) {
                continue;
            }
            let key = format!("{}{n}", &prefix[..prefix.len() - stem.len()]);
            if let Some(r) = self.read(&key, &e.path())? {
                out.push((key, r));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn delete(&self, key: &str, expect: u64) -> Result<()> {
        let (p, _l) = self.lock_at(key, expect)?;
        fs::remove_file(&p).map_err(io(&p, "removing a record"))
    }

    fn describe(&self) -> String {
        format!("local:{}", self.dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests_common::exercise;

    #[test]
    fn cas_list_corruption() {
        let dir = std::env::temp_dir().join(format!("cluster-local-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let s = LocalStore::new(&dir).unwrap();
        exercise(&s);
        // A damaged record is an error naming it, not a panic.
        fs::write(dir.join("vms/bad.rec"), b"garbage").unwrap();
        let e = s.get("vms/bad").unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("vms/bad"), "{e}");
        fs::write(dir.join("vms/bad.rec"), b"ftvm-cluster v1 3\n{not json").unwrap();
        let e = crate::list::<crate::VmRecord>(&s, "vms/").unwrap_err();
        assert!(e.to_string().contains("corrupt record vms/bad"), "{e}");
        // Concurrent CAS from threads: exactly one wins each version.
        let s = std::sync::Arc::new(s);
        let wins: usize = (0..8)
            .map(|i| {
                let s = s.clone();
                std::thread::spawn(move || s.cas("race/k", 0, format!("{i}").as_bytes()).is_ok())
            })
            .map(|t| usize::from(t.join().unwrap()))
            .sum();
        assert_eq!(wins, 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
