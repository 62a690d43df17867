//! The worked example of `docs/snapshot-format.md`, byte for byte, and the format versions the
//! documents state: if this test fails, the format changed, and the document (and `VERSION` /
//! `DELTA_VERSION`) must change with it. The expected dumps are read from the document itself,
//! so the two cannot drift apart; on a mismatch the test prints what the document should say.

use machine::snapshot::{DELTA_MAGIC, DELTA_VERSION, MAGIC, VERSION};
use machine::uart::NullSerial;
use machine::virtio::{EntropyBackend, NullConsole};
use machine::{Backends, Firmware, Machine, MachineConfig};

const DOC: &str = include_str!("../../../docs/snapshot-format.md");
const SNAPSHOT_RS: &str = include_str!("../src/snapshot.rs");
const DELTA_RS: &str = include_str!("../src/snapshot/delta.rs");

/// Bytes before a full snapshot's payload (magic, version, configuration, two lengths).
const HEADER_LEN: usize = 78;
/// Bytes before a delta's payload (magic, version, configuration, chain, two lengths).
const DELTA_HEADER_LEN: usize = 94;

struct Zeros;

impl EntropyBackend for Zeros {
    fn fill(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        buf.fill(0);
        Ok(())
    }
}

/// The document's kernel: one instruction, `j .` (an endless loop). Each call writes its own
/// file: the tests run in parallel, and one rewriting the file while another loads it fails.
fn kernel() -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = std::env::temp_dir().join(format!(
        "ftvm-snapshot-format-{}-{n}.bin",
        std::process::id()
    ));
    std::fs::write(&p, 0x0000_006f_u32.to_le_bytes()).unwrap();
    p
}

/// The document's configuration: 8 MiB of RAM, one hart, no firmware, that kernel, no disk.
fn example_config() -> MachineConfig {
    MachineConfig {
        mem_size: 8 << 20,
        harts: 1,
        bios: Firmware::None,
        kernel: Some(kernel()),
        ..MachineConfig::default()
    }
}

/// The document's machine, at power-on.
fn example_machine() -> Machine {
    let cfg = example_config();
    let backends = Backends {
        serial: Box::new(NullSerial),
        console: Box::new(NullConsole),
        entropy: Box::new(Zeros),
    };
    let m = Machine::new(&cfg, backends).expect("the example machine");
    if let Some(k) = &cfg.kernel {
        let _ = std::fs::remove_file(k);
    }
    m
}

/// A hex dump: offset, 16 bytes per line (offsets counted from `base`).
fn dump(bytes: &[u8], base: usize) -> String {
    bytes
        .chunks(16)
        .enumerate()
        .map(|(i, c)| {
            let hex: Vec<String> = c.iter().map(|b| format!("{b:02x}")).collect();
            format!("{:04x}  {}\n", base + i * 16, hex.join(" "))
        })
        .collect()
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The sections of a decompressed payload: (offset, tag, body length).
fn sections(payload: &[u8]) -> Vec<(usize, u8, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < payload.len() {
        let len = usize::try_from(u64_at(payload, at + 1)).unwrap();
        out.push((at, payload[at], len));
        at += 9 + len;
    }
    assert_eq!(at, payload.len(), "sections overrun the payload");
    out
}

fn section_table(payload: &[u8]) -> String {
    let names = [
        "", "machine", "harts", "CLINT", "PLIC", "UART", "test", "virtio", "RAM", "pages",
    ];
    let mut s = String::from("offset  tag  name     body bytes\n");
    for (at, tag, len) in sections(payload) {
        s.push_str(&format!(
            "{at:06x}  {tag:3}  {:<7}  {len}\n",
            names.get(usize::from(tag)).copied().unwrap_or("?")
        ));
    }
    s
}

/// Checks that the document holds each block verbatim; on failure, shows every missing one.
fn assert_documented(blocks: &[(&str, String)]) {
    let missing: Vec<String> = blocks
        .iter()
        .filter(|(_, b)| !DOC.contains(b.as_str()))
        .map(|(what, b)| format!("--- the {what} should read:\n{b}"))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/snapshot-format.md does not hold what this build writes:\n{}",
        missing.join("\n")
    );
}

fn decompress(file: &[u8], header_len: usize) -> Vec<u8> {
    let raw_len = usize::try_from(u64_at(file, header_len - 16)).unwrap();
    let comp_len = usize::try_from(u64_at(file, header_len - 8)).unwrap();
    assert_eq!(header_len + comp_len + 4, file.len());
    lz4_flex::block::decompress(&file[header_len..header_len + comp_len], raw_len).unwrap()
}

#[test]
fn worked_example_of_a_full_snapshot_matches_the_document() {
    let m = example_machine();
    let snap = m.snapshot().unwrap();
    assert_eq!(&snap[..8], MAGIC);
    let tail = snap.len() - 4;
    let payload = decompress(&snap, HEADER_LEN);
    // The machine section in full: tag, length, then its eight u64.
    let (at, tag, len) = sections(&payload)[0];
    assert_eq!(tag, 1);
    assert_documented(&[
        ("full snapshot's header", dump(&snap[..HEADER_LEN], 0)),
        ("full snapshot's checksum", dump(&snap[tail..], tail)),
        ("full snapshot's length", format!("is {} bytes", snap.len())),
        ("full snapshot's sections", section_table(&payload)),
        ("machine section", dump(&payload[at..at + 9 + len], at)),
    ]);
    // And the example restores.
    let cfg = example_config();
    let backends = Backends {
        serial: Box::new(NullSerial),
        console: Box::new(NullConsole),
        entropy: Box::new(Zeros),
    };
    let r = Machine::restore(&cfg, backends, &snap).unwrap();
    if let Some(k) = &cfg.kernel {
        let _ = std::fs::remove_file(k);
    }
    assert_eq!(r.digest(), m.digest());
}

#[test]
fn worked_example_of_a_delta_matches_the_document() {
    let mut m = example_machine();
    let base = m.snapshot_base().unwrap();
    let delta = m.snapshot_delta().unwrap();
    assert_eq!(&delta[..8], DELTA_MAGIC);
    let tail = delta.len() - 4;
    let payload = decompress(&delta, DELTA_HEADER_LEN);
    assert_documented(&[
        ("delta's header", dump(&delta[..DELTA_HEADER_LEN], 0)),
        ("delta's checksum", dump(&delta[tail..], tail)),
        ("delta's length", format!("is {} bytes", delta.len())),
        ("delta's sections", section_table(&payload)),
        // The base id (at 0x3e) is the XXH3-64 of the base's bytes.
        (
            "base snapshot's length",
            format!("base snapshot of {} bytes", base.len()),
        ),
    ]);
}

#[test]
fn documented_versions_are_the_code_s() {
    let title = format!("# The snapshot format (version {VERSION})");
    assert!(
        DOC.starts_with(&title),
        "the document's title should be {title:?}"
    );
    for needle in [
        format!("## Delta snapshots (version {DELTA_VERSION})"),
        format!(
            "`{:02x} {:02x}` | version {VERSION}",
            VERSION as u8,
            VERSION >> 8
        ),
        format!(
            "`{:02x} {:02x}` | version {DELTA_VERSION}",
            DELTA_VERSION as u8,
            DELTA_VERSION >> 8
        ),
    ] {
        assert!(DOC.contains(&needle), "the document should say {needle:?}");
    }
    // The module documents.
    for (file, text, version) in [
        ("snapshot.rs", SNAPSHOT_RS, VERSION),
        ("snapshot/delta.rs", DELTA_RS, DELTA_VERSION),
    ] {
        let heading = format!("//! # File format (version {version})");
        assert!(text.contains(&heading), "{file} should say {heading:?}");
        let stated = text
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .filter(|l| l.contains("(version "))
            .count();
        assert_eq!(stated, 1, "{file}: one version heading in its module doc");
    }
}
