//! The project's own guest programs: `guests/init/init.c` becomes `/init`, each
//! `guests/programs/<name>.c` becomes `/usr/bin/<name>`; all static, so they need nothing else
//! in the initramfs. Other files in `guests/init/` are copied in as they are (see
//! [`Sources::extra_files`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::cache::Key;
use super::{run, BuildOptions};

/// `-Werror`: the toolchain is pinned by the cache key, so a warning is a bug in our code.
const CFLAGS: &[&str] = &[
    "-std=gnu11",
    "-O2",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-static",
    "-s",
];

/// The source files, read once: their bytes are both hashed and compiled.
pub struct Sources {
    /// `(path relative to the repository, contents)`, sorted by path.
    files: Vec<(String, Vec<u8>)>,
    repo: PathBuf,
}

/// One compiled program and where it goes in the initramfs.
pub struct Binary {
    /// Path inside the initramfs, without the leading `/`.
    pub dest: String,
    /// The compiled file.
    pub path: PathBuf,
}

impl Sources {
    /// Reads every file under `guests/init` and `guests/programs`.
    pub fn collect(repo: &Path) -> Result<Self> {
        let mut files = Vec::new();
        for dir in ["guests/init", "guests/programs"] {
            let rd = fs::read_dir(repo.join(dir)).with_context(|| format!("reading {dir}"))?;
            for e in rd {
                let p = e?.path();
                if p.is_file() {
                    let name = p
                        .file_name()
                        .and_then(|n| n.to_str())
                        .context("odd file name")?;
                    files.push((format!("{dir}/{name}"), fs::read(&p)?));
                }
            }
        }
        files.sort();
        if !files.iter().any(|(p, _)| p == "guests/init/init.c") {
            bail!("guests/init/init.c is missing");
        }
        Ok(Self {
            files,
            repo: repo.to_path_buf(),
        })
    }

    /// Adds every source file to a cache key.
    pub fn add_to(&self, key: &mut Key) {
        for (p, bytes) in &self.files {
            key.add_bytes(p, bytes);
        }
    }

    /// Non-C files of `guests/init`, with their place in the initramfs.
    pub fn extra_files(&self) -> Vec<(String, &[u8])> {
        self.files
            .iter()
            .filter_map(|(p, b)| {
                let dest = match p.as_str() {
                    "guests/init/udhcpc.script" => "usr/share/udhcpc/default.script",
                    "guests/init/profile" => "etc/profile",
                    _ => return None,
                };
                Some((dest.to_string(), b.as_slice()))
            })
            .collect()
    }
}

/// Compiles every program into `out`.
pub fn compile(src: &Sources, out: &Path, opts: &BuildOptions) -> Result<Vec<Binary>> {
    let mut bins = Vec::new();
    for (rel, _) in src.files.iter().filter(|(p, _)| p.ends_with(".c")) {
        let stem = Path::new(rel)
            .file_stem()
            .and_then(|s| s.to_str())
            .context("odd file name")?;
        let dest = if rel.starts_with("guests/init/") {
            if stem != "init" {
                bail!("{rel}: guests/init holds only init.c and data files");
            }
            "init".to_string()
        } else {
            format!("usr/bin/{stem}")
        };
        let path = out.join(stem);
        let mut cc = Command::new("riscv64-linux-gnu-gcc");
        cc.args(CFLAGS).arg("-o").arg(&path).arg(src.repo.join(rel));
        if opts.verbose {
            println!("{cc:?}");
        }
        run::capture(&mut cc).with_context(|| format!("compiling {rel}"))?;
        bins.push(Binary { dest, path });
    }
    println!("guest: compiled {} programs", bins.len());
    Ok(bins)
}
