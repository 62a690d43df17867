//! Building and running the bare-metal ISA programs of `guests/isa/` for the `isa` test.
//!
//! Programs are compiled with `riscv64-unknown-elf-gcc` into `CARGO_TARGET_TMPDIR/isa/`, and
//! rebuilt only when a hash of their inputs (source, headers, linker script, flags) changes. Each
//! run of `ftvm run-elf` has a wall-clock limit, so that an emulator that hangs fails the test
//! instead of blocking the suite.

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The cross compiler.
const CC: &str = "riscv64-unknown-elf-gcc";
/// Instruction budget for a regular ISA program (they need far fewer).
const MAX_INSTRUCTIONS: &str = "300000000";
/// Wall-clock limit of one `ftvm run-elf`.
const WALL_LIMIT: Duration = Duration::from_secs(120);

/// `guests/isa/` in this checkout.
pub fn isa_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guests/isa")
}

/// Where the built programs go.
pub fn out_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("isa");
    std::fs::create_dir_all(&dir).expect("create the ISA build directory");
    dir
}

/// The test programs (`*.S`, `*.c`) directly in `dir`, sorted.
pub fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("S" | "c")))
        .collect();
    v.sort();
    v
}

/// Compiler flags for `src` (a `NAME.ld` beside the source replaces the common linker script).
fn flags(src: &Path) -> Vec<String> {
    let dir = isa_dir();
    let own_ld = src.with_extension("ld");
    let ld = if own_ld.exists() {
        own_ld
    } else {
        dir.join("link.ld")
    };
    let mut f: Vec<String> = [
        "-march=rv64gc",
        "-mabi=lp64d",
        "-nostdlib",
        "-nostartfiles",
        "-static",
        "-mcmodel=medany",
        "-O2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    f.push("-T".into());
    f.push(ld.display().to_string());
    f.push("-I".into());
    f.push(dir.display().to_string());
    f
}

/// Hash of everything the ELF depends on: the source, every header and linker script in
/// `guests/isa/`, and the flags.
fn input_hash(src: &Path, flags: &[String]) -> u64 {
    let mut h = DefaultHasher::new();
    std::fs::read(src)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", src.display()))
        .hash(&mut h);
    let mut deps: Vec<PathBuf> = std::fs::read_dir(isa_dir())
        .expect("list guests/isa")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("h" | "ld")))
        .collect();
    if let Some(parent) = src.parent() {
        let own = parent.join(format!(
            "{}.ld",
            src.file_stem().unwrap_or_default().to_string_lossy()
        ));
        deps.push(own);
    }
    deps.sort();
    for d in deps {
        d.display().to_string().hash(&mut h);
        std::fs::read(&d).unwrap_or_default().hash(&mut h);
    }
    flags.hash(&mut h);
    h.finish()
}

/// Builds `src` (unless an up-to-date ELF exists) and returns the ELF's path.
pub fn build(src: &Path) -> PathBuf {
    let flags = flags(src);
    let stem = src.file_stem().unwrap().to_string_lossy().into_owned();
    let sub = if src.parent().is_some_and(|p| p.ends_with("neg")) {
        "neg-"
    } else {
        ""
    };
    let dir = out_dir();
    let elf = dir.join(format!("{sub}{stem}.elf"));
    let stamp = dir.join(format!("{sub}{stem}.hash"));
    let hash = format!("{:016x}", input_hash(src, &flags));
    if elf.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(hash.as_str()) {
        return elf;
    }
    // Build under a unique name and rename, so that concurrent tests never see half an ELF.
    let tmp = dir.join(format!("{sub}{stem}.{}.tmp", std::process::id()));
    let out = Command::new(CC)
        .args(&flags)
        .arg("-o")
        .arg(&tmp)
        .arg(src)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {CC} ({e}): the ISA tests need the RISC-V cross compiler; \
                 install it with `apt-get install gcc-riscv64-unknown-elf \
                 picolibc-riscv64-unknown-elf`"
            )
        });
    assert!(
        out.status.success(),
        "{CC} failed on {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, &elf).expect("move the ELF into place");
    std::fs::write(&stamp, hash).expect("write the build stamp");
    elf
}

/// The result of one `ftvm run-elf`.
pub struct Outcome {
    /// Exit code (None: killed by a signal or by the wall-clock limit).
    pub code: Option<i32>,
    /// Standard output (the guest's UART).
    pub stdout: String,
    /// Standard error (ftvm's messages).
    pub stderr: String,
    /// The command line, for messages.
    pub command: String,
    /// Whether the wall-clock limit killed it.
    pub timed_out: bool,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "command: {}", self.command)?;
        writeln!(
            f,
            "exit: {:?}{}",
            self.code,
            if self.timed_out {
                " (wall-clock limit: killed)"
            } else {
                ""
            }
        )?;
        writeln!(f, "--- stdout ---\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr ---\n{}", self.stderr.trim_end())
    }
}

/// Runs `ftvm run-elf ELF ARGS...` with the wall-clock limit. Asserts that ftvm did not panic.
pub fn run_ftvm(elf: &Path, args: &[&str]) -> Outcome {
    let bin = env!("CARGO_BIN_EXE_ftvm");
    let mut child = Command::new(bin)
        .arg("run-elf")
        .arg(elf)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    // Drain the pipes on threads so a chatty guest cannot block on a full pipe.
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = so.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = se.read_to_end(&mut s);
        s
    });
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for ftvm") {
            break st;
        }
        if start.elapsed() > WALL_LIMIT {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait for the killed ftvm");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = Outcome {
        code: if timed_out { None } else { status.code() },
        stdout: String::from_utf8_lossy(&t_out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&t_err.join().unwrap()).into_owned(),
        command: format!("{bin} run-elf {} {}", elf.display(), args.join(" ")),
        timed_out,
    };
    assert!(!out.stderr.contains("panicked"), "ftvm panicked\n{out}");
    out
}

/// Builds and runs the ISA program `name` (`guests/isa/NAME.S` or `.c`) on both engines; it must
/// pass on each, with the same output.
pub fn run_isa_test(name: &str) {
    let dir = isa_dir();
    let src = [dir.join(format!("{name}.S")), dir.join(format!("{name}.c"))]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no guests/isa/{name}.S or {name}.c"));
    let elf = build(&src);
    // On both engines; they must also print the same (the verdict and the step count).
    let mut outputs = Vec::new();
    for engine in ["interp", "jit"] {
        let out = run_ftvm(
            &elf,
            &["--engine", engine, "--max-instructions", MAX_INSTRUCTIONS],
        );
        assert_eq!(
            out.code,
            Some(0),
            "ISA program {name} did not pass on ftvm --engine {engine} (exit 1 = a failed case; \
             the case number is in the output; `!cause epc tval` lines are unexpected traps)\n{out}"
        );
        outputs.push(out.stdout);
    }
    assert_eq!(
        outputs[0], outputs[1],
        "ISA program {name}: the interpreter and the JIT printed different things"
    );
}
