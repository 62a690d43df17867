//! The two images: a gzip-compressed `newc` cpio initramfs, written here rather than by
//! `cpio -o` so that it needs no root (device nodes) and is byte-for-byte reproducible (fixed
//! owners, times and inode numbers, sorted entries); and an ext2 `disk.img` from `mke2fs -d`,
//! with a fixed UUID, hash seed and clock for the same reason.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::cache::Key;
use super::programs::{Binary, Sources};
use super::run;

/// The file the boot check reads back from the disk.
pub const HELLO_TXT: &str = "hello from the ftvm disk\n";
/// Disk size in MiB: room for `appendlog` runs, small enough to copy per test.
const DISK_MIB: u32 = 16;
/// Fixed identity and clock of the file system: same inputs, same image bytes.
const DISK_UUID: &str = "f7f70000-0000-4000-8000-000000000001";
const FAKE_TIME: &str = "1700000000";

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n";
const GROUP: &str = "root:x:0:\n";

/// Adds the layout constants of the images to a key.
pub fn add_to_key(key: &mut Key) {
    key.add_text(
        "disk",
        &format!("{DISK_MIB} MiB ext2 {DISK_UUID} {FAKE_TIME} {HELLO_TXT:?}"),
    );
}

/// An entry of the archive; parents are created implicitly.
enum Node {
    Dir(u32),
    File(u32, Vec<u8>),
    Symlink(String),
    CharDev(u32, u32),
}

/// A `newc` archive under construction, keyed by path (no leading `/`), so entries come out
/// sorted and each directory before what it holds.
#[derive(Default)]
struct Tree(BTreeMap<String, Node>);

impl Tree {
    fn add(&mut self, path: &str, node: Node) {
        let mut parent = Path::new(path).parent();
        while let Some(p) = parent.and_then(|p| p.to_str()).filter(|p| !p.is_empty()) {
            self.0.entry(p.to_string()).or_insert(Node::Dir(0o755));
            parent = Path::new(p).parent();
        }
        self.0.insert(path.to_string(), node);
    }

    /// Serialises as SVR4 "new ASCII" cpio (`070701`), the format the kernel unpacks.
    fn to_newc(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut ino = 1u32;
        let mut put = |name: &str, mode: u32, data: &[u8], rdev: (u32, u32), nlink: u32| {
            let fields = [
                ino,
                mode,
                0,
                0,
                nlink,
                0,
                data.len() as u32,
                0,
                0,
                rdev.0,
                rdev.1,
                name.len() as u32 + 1,
                0,
            ];
            ino += 1;
            out.extend_from_slice(b"070701");
            for f in fields {
                out.extend_from_slice(format!("{f:08X}").as_bytes());
            }
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            out.resize(out.len().next_multiple_of(4), 0);
            out.extend_from_slice(data);
            out.resize(out.len().next_multiple_of(4), 0);
        };
        for (name, node) in &self.0 {
            match node {
                Node::Dir(perm) => put(name, 0o040000 | perm, &[], (0, 0), 2),
                Node::File(perm, data) => put(name, 0o100000 | perm, data, (0, 0), 1),
                Node::Symlink(target) => put(name, 0o120777, target.as_bytes(), (0, 0), 1),
                Node::CharDev(maj, min) => put(name, 0o020600, &[], (*maj, *min), 1),
            }
        }
        put("TRAILER!!!", 0, &[], (0, 0), 1);
        out
    }
}

/// Writes `initramfs.cpio.gz`: busybox with a symlink per applet, `/init`, our programs, a
/// few `/etc` files and `/dev/console` (the kernel opens it for `/init` before anything can
/// mount devtmpfs).
pub fn initramfs(busybox: &Path, bins: &[Binary], src: &Sources, out: &Path) -> Result<()> {
    let mut t = Tree::default();
    for d in ["dev", "proc", "sys", "mnt", "root", "run", "var", "etc"] {
        t.add(d, Node::Dir(0o755));
    }
    t.add("tmp", Node::Dir(0o1777));
    t.add("dev/console", Node::CharDev(5, 1));
    t.add("etc/passwd", Node::File(0o644, PASSWD.into()));
    t.add("etc/group", Node::File(0o644, GROUP.into()));
    t.add(
        "bin/busybox",
        Node::File(0o755, fs::read(busybox.join("busybox"))?),
    );
    for link in fs::read_to_string(busybox.join("busybox.links"))?.lines() {
        let link = link.trim().trim_start_matches('/');
        if !link.is_empty() && link != "bin/busybox" {
            t.add(link, Node::Symlink("/bin/busybox".into()));
        }
    }
    for (dest, bytes) in src.extra_files() {
        t.add(&dest, Node::File(0o755, bytes.to_vec()));
    }
    for b in bins {
        let data = fs::read(&b.path).with_context(|| format!("reading {}", b.path.display()))?;
        t.add(&b.dest, Node::File(0o755, data));
    }
    let raw = out.with_extension("");
    fs::write(&raw, t.to_newc())?;

    // GNU cpio must read back exactly our entries: a cheap check of the writer.
    let listed = run::capture(
        Command::new("cpio")
            .args(["-it", "--quiet"])
            .stdin(File::open(&raw)?),
    )?;
    if listed.lines().count() != t.0.len() {
        bail!(
            "cpio lists {} entries, we wrote {}",
            listed.lines().count(),
            t.0.len()
        );
    }
    // -n: no name or time in the gzip header, so equal archives compress to equal files.
    let st = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .stdin(File::open(&raw)?)
        .stdout(Stdio::from(File::create(out)?))
        .status()?;
    if !st.success() {
        bail!("gzip failed: {st}");
    }
    fs::remove_file(&raw)?;
    Ok(())
}

/// Writes `disk.img`: ext2 holding `hello.txt`.
pub fn disk(out: &Path) -> Result<()> {
    let root = out.with_extension("root");
    fs::create_dir_all(&root)?;
    let hello = root.join("hello.txt");
    fs::write(&hello, HELLO_TXT)?;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(FAKE_TIME.parse()?);
    // mke2fs -d copies access and modification times, the root directory's included...
    let times = fs::FileTimes::new().set_accessed(t).set_modified(t);
    File::options().write(true).open(&hello)?.set_times(times)?;
    File::open(&root)?.set_times(times)?;
    let mut mk = Command::new("mke2fs");
    mk.env("E2FSPROGS_FAKE_TIME", FAKE_TIME)
        .args(["-q", "-F", "-t", "ext2", "-L", "ftvm", "-U", DISK_UUID])
        .arg("-E")
        .arg(format!("hash_seed={DISK_UUID},root_owner=0:0"))
        .arg("-d")
        .arg(&root)
        .arg(out)
        .arg(format!("{DISK_MIB}M"));
    run::capture(&mut mk).context("mke2fs")?;
    // ...and the inode change times, which no one can set on the host: fix them afterwards.
    let script: String = ["/", "/lost+found", "/hello.txt"]
        .iter()
        .map(|p| format!("set_inode_field {p} ctime @{FAKE_TIME}\n"))
        .collect();
    let script_file = out.with_extension("debugfs");
    fs::write(&script_file, script)?;
    let mut fix = Command::new("debugfs");
    fix.env("E2FSPROGS_FAKE_TIME", FAKE_TIME)
        .arg("-w")
        .arg("-f")
        .arg(&script_file)
        .arg(out);
    let res = fix.output().context("running debugfs")?;
    // debugfs reports failed requests on stderr, after its version banner, and still exits 0.
    let err = String::from_utf8_lossy(&res.stderr);
    let complaints: Vec<&str> = err.lines().filter(|l| !l.starts_with("debugfs ")).collect();
    if !res.status.success() || !complaints.is_empty() {
        bail!("debugfs failed on disk.img: {}", complaints.join("; "));
    }
    fs::remove_file(&script_file)?;
    run::capture(Command::new("e2fsck").arg("-fn").arg(out)).context("e2fsck of disk.img")?;
    fs::remove_dir_all(&root)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let mut t = Tree::default();
        t.add("a/b", Node::File(0o644, b"xyz".to_vec()));
        let bytes = t.to_newc();
        // "a" (implicit dir), "a/b", trailer: each header is 110 bytes + name, padded to 4.
        assert!(bytes.starts_with(b"070701"));
        assert_eq!(&bytes[110..112], b"a\0");
        let second = (110 + 2usize).next_multiple_of(4);
        assert_eq!(&bytes[second..second + 6], b"070701");
        assert_eq!(
            &bytes[second + 54..second + 62],
            b"00000003",
            "file size field"
        );
        assert!(bytes.windows(10).any(|w| w == b"TRAILER!!!"));
        assert_eq!(bytes.len() % 4, 0);
    }
}
