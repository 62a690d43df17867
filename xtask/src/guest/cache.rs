//! The guest cache: input keys, one lock, and atomic publication of finished entries.
//!
//! Layout under the root (see `guests/README.md`):
//! `<stage>-<hash>/` finished, never modified entries; `tmp/` work in progress (emptied by each
//! run that takes the lock, so a crashed build leaves nothing that could be mistaken for a
//! result); `src/` unpacked sources and reusable build trees; `logs/` the last output of each
//! long step; `lock` held for the whole of a build.
//!
//! A finished entry appears by `rename(2)` of a complete directory, so a reader that sees it sees
//! all of it, and looking an entry up needs no lock. Builders hold the lock, so two concurrent
//! invocations never build into the same directory: the second waits, then finds the entry.

use std::fmt::Write as _;
use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// `$FTVM_CACHE`, else `$XDG_CACHE_HOME/ftvm`, else `~/.cache/ftvm`.
pub fn default_root() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("FTVM_CACHE").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p).join("ftvm"));
    }
    match std::env::var_os("HOME").filter(|p| !p.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".cache/ftvm")),
        None => bail!("no cache directory: set FTVM_CACHE or HOME"),
    }
}

/// The cache root; builders must call [`Cache::lock`] before writing anything.
pub struct Cache {
    root: PathBuf,
    lock: Option<File>,
}

impl Cache {
    /// Opens (creating) the cache at `root` without locking it.
    pub fn new(root: &Path) -> Result<Self> {
        for d in ["tmp", "src", "logs"] {
            fs::create_dir_all(root.join(d))
                .with_context(|| format!("creating cache directory {}", root.join(d).display()))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
            lock: None,
        })
    }

    /// Takes the builder lock (waiting for another build if need be), then clears `tmp/`, whose
    /// contents can only be leftovers of a build that died.
    pub fn lock(&mut self) -> Result<()> {
        if self.lock.is_some() {
            return Ok(());
        }
        let path = self.root.join("lock");
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        match f.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                println!("guest: another build holds {}; waiting", path.display());
                f.lock()?;
            }
            Err(TryLockError::Error(e)) => return Err(e).context("locking the cache"),
        }
        self.lock = Some(f);
        let tmp = self.root.join("tmp");
        for e in fs::read_dir(&tmp)? {
            let p = e?.path();
            fs::remove_dir_all(&p).or_else(|_| fs::remove_file(&p)).ok();
        }
        Ok(())
    }

    /// Where the finished entry for `key` lives (whether or not it exists yet).
    pub fn entry_path(&self, key: &Key) -> PathBuf {
        self.root.join(format!("{}-{}", key.name, key.short_hash()))
    }

    /// A directory for unpacked sources and reusable build trees, e.g. `src/linux-6.1.192-2`.
    pub fn src_path(&self, name: &str) -> PathBuf {
        self.root.join("src").join(name)
    }

    /// The log file of one long step.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.root.join("logs").join(format!("{name}.log"))
    }

    /// A fresh, empty directory under `tmp/`, private to this (locked) build.
    pub fn tmp_dir(&self, name: &str) -> Result<PathBuf> {
        assert!(self.lock.is_some(), "tmp_dir without the cache lock");
        let p = self
            .root
            .join("tmp")
            .join(format!("{name}.{}", std::process::id()));
        if p.exists() {
            fs::remove_dir_all(&p)?;
        }
        fs::create_dir_all(&p)?;
        Ok(p)
    }

    /// Returns the entry for `key`, first making it with `fill` (which writes into an empty
    /// directory) if it does not exist. The directory is renamed into place only once `fill` has
    /// succeeded.
    pub fn publish(&self, key: &Key, fill: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
        let dst = self.entry_path(key);
        if dst.is_dir() {
            return Ok(dst);
        }
        let tmp = self.tmp_dir(&format!("{}-{}", key.name, key.short_hash()))?;
        fill(&tmp)?;
        self.rename_into_place(&tmp, &dst)?;
        Ok(dst)
    }

    /// Atomically moves a finished directory (built under `tmp/`) to `dst`.
    pub fn rename_into_place(&self, from: &Path, dst: &Path) -> Result<()> {
        fs::rename(from, dst)
            .with_context(|| format!("renaming {} to {}", from.display(), dst.display()))
    }
}

/// A cache key: a named SHA-256 over labelled inputs, plus a readable list of them.
#[derive(Clone)]
pub struct Key {
    name: String,
    hasher: Sha256,
    manifest: String,
}

impl Key {
    /// A key for entries named `<name>-<hash>`, made by the stage recipe `recipe_version`.
    pub fn new(name: &str, recipe_version: &str) -> Self {
        let mut k = Self {
            name: name.to_string(),
            hasher: Sha256::new(),
            manifest: String::new(),
        };
        k.add_text("recipe", recipe_version);
        k
    }

    fn field(&mut self, label: &str, value: &[u8]) {
        // Length prefixes keep ("ab","c") and ("a","bc") apart.
        for part in [label.as_bytes(), value] {
            self.hasher.update((part.len() as u64).to_le_bytes());
            self.hasher.update(part);
        }
    }

    /// A short input given by value, such as a package version.
    pub fn add_text(&mut self, label: &str, text: &str) {
        self.field(label, text.as_bytes());
        for (i, line) in text.lines().enumerate() {
            let l = if i == 0 { label } else { "" };
            let _ = writeln!(self.manifest, "{l:<24} {line}");
        }
    }

    /// A file's contents, shown in the manifest by its digest.
    pub fn add_bytes(&mut self, label: &str, bytes: &[u8]) {
        self.field(label, bytes);
        let _ = writeln!(
            self.manifest,
            "{label:<24} sha256:{}",
            hex(&Sha256::digest(bytes))
        );
    }

    /// Another key, so that an entry depends on everything its parts depend on.
    pub fn add_key(&mut self, k: &Key) {
        let label = format!("{}-key", k.name);
        self.field(&label, k.hash().as_bytes());
        let _ = writeln!(self.manifest, "{label:<24} {}", k.hash());
        for line in k.manifest.lines() {
            let _ = writeln!(self.manifest, "  {line}");
        }
    }

    /// Full hex digest.
    pub fn hash(&self) -> String {
        hex(&self.hasher.clone().finalize())
    }

    /// The part of the digest used in directory names: 64 bits is plenty for one user's cache.
    pub fn short_hash(&self) -> String {
        self.hash()[..16].to_string()
    }

    /// What went into the key, one input per line, written next to each entry as `inputs.txt`.
    pub fn manifest(&self) -> String {
        format!("{}-{}\n{}", self.name, self.hash(), self.manifest)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_depends_on_every_field_and_its_boundaries() {
        let mk = |a: &str, b: &str| {
            let mut k = Key::new("t", "v");
            k.add_text("x", a);
            k.add_text("y", b);
            k.hash()
        };
        assert_eq!(mk("a", "b"), mk("a", "b"));
        assert_ne!(mk("a", "b"), mk("a", "c"));
        assert_ne!(mk("ab", ""), mk("a", "b"));
    }

    #[test]
    fn publish_is_all_or_nothing() {
        let root = std::env::temp_dir().join(format!("ftvm-cache-test-{}", std::process::id()));
        let mut c = Cache::new(&root).unwrap();
        c.lock().unwrap();
        let k = Key::new("thing", "v");
        let failed = c.publish(&k, |d| {
            fs::write(d.join("half"), "x")?;
            bail!("stage failed")
        });
        assert!(failed.is_err());
        assert!(!c.entry_path(&k).exists());
        let p = c
            .publish(&k, |d| Ok(fs::write(d.join("whole"), "x")?))
            .unwrap();
        assert!(p.join("whole").is_file());
        fs::remove_dir_all(&root).unwrap();
    }
}
