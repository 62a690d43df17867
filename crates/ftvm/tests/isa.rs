//! The bare-metal ISA test suite: every program in `guests/isa/` is built with the RISC-V cross
//! compiler and run on `ftvm run-elf`, which must report a pass (exit 0). The same programs pass on
//! QEMU's virt board (`guests/isa/qemu-check.sh`), the reference machine.
//!
//! Negative tests in `guests/isa/neg/` check that a failing program, a broken ELF or a runaway
//! guest give the documented exit codes (1 = the program failed a case, 2 = error) with a one-line
//! message and never a panic.

mod isa_support;

use isa_support::{build, isa_dir, run_ftvm, sources, Outcome};

/// Declares one `#[test]` per ISA program and the list checked by [`every_source_is_listed`].
macro_rules! isa_tests {
    ($($name:ident),* $(,)?) => {
        /// Every program that has a `#[test]` below.
        const LISTED: &[&str] = &[$(stringify!($name)),*];
        $(
            #[test]
            fn $name() {
                isa_support::run_isa_test(stringify!($name));
            }
        )*
    };
}

isa_tests!(
    c_smoke,
    csr_ftvm,
    csr_m,
    exceptions_m,
    fp_arith_d,
    fp_arith_s,
    fp_cmp,
    fp_cvt,
    fp_fma,
    fp_fs,
    fp_move,
    interrupts,
    interrupts_priority,
    mprv,
    priv_modes,
    rv64a,
    rv64a_amo_faults,
    rv64a_misaligned,
    rv64i_alu,
    rv64i_branch,
    rv64i_mem,
    rv64m,
    rvc,
    vm_ftvm,
    vm_sv39,
    vm_sv48,
    zicsr,
    zifencei,
);

/// A program added to `guests/isa/` must get a test: otherwise it would silently never run.
#[test]
fn every_source_is_listed() {
    let missing: Vec<String> = sources(&isa_dir())
        .into_iter()
        .filter_map(|p| {
            let stem = p.file_stem()?.to_str()?.to_owned();
            (!LISTED.contains(&stem.as_str())).then_some(stem)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "guests/isa programs without a test: {missing:?}; add them to isa_tests! in {}",
        file!()
    );
    for name in LISTED {
        let dir = isa_dir();
        assert!(
            dir.join(format!("{name}.S")).exists() || dir.join(format!("{name}.c")).exists(),
            "isa_tests! lists {name} but guests/isa has no {name}.S or {name}.c"
        );
    }
}

/// Asserts an error run: exit 2, exactly one line on stderr, no panic.
fn assert_error(out: &Outcome, what: &str) {
    assert_eq!(out.code, Some(2), "{what}: want exit 2\n{out}");
    let lines: Vec<&str> = out.stderr.trim().lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: want a one-line error on stderr\n{out}"
    );
    assert!(
        !lines[0].trim().is_empty(),
        "{what}: empty error line\n{out}"
    );
}

#[test]
fn failing_case_is_reported() {
    let elf = build(&isa_dir().join("neg/fail3.S"));
    let out = run_ftvm(&elf, &[]);
    assert_eq!(out.code, Some(1), "a failed case 3 must exit 1\n{out}");
    let text = format!("{}\n{}", out.stdout, out.stderr);
    assert!(
        mentions_number(&text, 3),
        "the output must name the failing test 3\n{out}"
    );
    assert!(
        !mentions_number(&text, 2) && !mentions_number(&text, 4),
        "the output names another test than 3\n{out}"
    );
}

/// Whether `text` contains the decimal number `n` not as part of a longer number or a hex word.
fn mentions_number(text: &str, n: u64) -> bool {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| w == n.to_string())
}

#[test]
fn truncated_elf_is_an_error() {
    let good = build(&isa_dir().join("neg/fail3.S"));
    let bytes = std::fs::read(&good).unwrap();
    let dir = isa_support::out_dir();
    for (i, len) in [0, 3, 20, 63, 64 + 20, bytes.len() / 2, bytes.len() - 1]
        .into_iter()
        .enumerate()
    {
        let cut = dir.join(format!("truncated-{i}.elf"));
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let out = run_ftvm(&cut, &[]);
        assert_error(
            &out,
            &format!("ELF truncated to {len} of {} bytes", bytes.len()),
        );
    }
}

#[test]
fn host_elf_is_an_error() {
    let out = run_ftvm(std::path::Path::new(env!("CARGO_BIN_EXE_ftvm")), &[]);
    assert_error(&out, "a host (non-RISC-V) ELF");
}

#[test]
fn missing_file_is_an_error() {
    let out = run_ftvm(&isa_support::out_dir().join("does-not-exist.elf"), &[]);
    assert_error(&out, "a file that does not exist");
}

#[test]
fn segment_outside_ram_is_an_error() {
    let elf = build(&isa_dir().join("neg/outside_ram.S"));
    let out = run_ftvm(&elf, &[]);
    assert_error(&out, "a segment outside RAM");
}

#[test]
fn elf_without_tohost_is_an_error() {
    let elf = build(&isa_dir().join("neg/no_tohost.S"));
    let out = run_ftvm(&elf, &[]);
    assert_error(&out, "an ELF without `tohost`");
    assert!(
        out.stderr.contains("tohost"),
        "the error should name `tohost`\n{out}"
    );
}

#[test]
fn illegal_instruction_without_handler_runs_out_of_budget() {
    let elf = build(&isa_dir().join("neg/illegal_no_handler.S"));
    let out = run_ftvm(&elf, &["--max-instructions", "100000"]);
    assert_error(&out, "an illegal instruction with no trap handler");
}

#[test]
fn infinite_loop_runs_out_of_budget() {
    let elf = build(&isa_dir().join("neg/loop.S"));
    let out = run_ftvm(&elf, &["--max-instructions", "5000"]);
    assert_error(&out, "an infinite loop with --max-instructions 5000");
}

#[test]
fn test_device_ends_the_run() {
    // Writing 0x5555 / (n << 16) | 0x3333 to the sifive,test0 device ends the run too.
    let elf = build(&isa_dir().join("neg/syscon_pass.S"));
    let out = run_ftvm(&elf, &["--max-instructions", "100000"]);
    assert_eq!(
        out.code,
        Some(0),
        "0x5555 at 0x100000 must end the run as a pass\n{out}"
    );
    let elf = build(&isa_dir().join("neg/syscon_fail.S"));
    let out = run_ftvm(&elf, &["--max-instructions", "100000"]);
    assert_ne!(
        out.code,
        Some(0),
        "0x3333 at 0x100000 must not read as a pass\n{out}"
    );
    assert!(!out.stderr.contains("panicked"), "{out}");
}
