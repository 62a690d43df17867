//! The worked example of `docs/log-format.md`, byte for byte: if this test fails, the format
//! changed, and the document (and `FORMAT_VERSION`) must change with it.

use replay::{part, Decoder, DigestPart, Entry, Event, LogHeader, LogWriter};

/// The example log of the document.
fn example() -> Vec<u8> {
    let header = LogHeader {
        config_fingerprint: 0x0123_4567_89ab_cdef,
        base_icount: 0,
        created_unix_ms: 1_700_000_000_000,
        creator: "ftvm".into(),
    };
    let mut w = LogWriter::new(Vec::new(), &header).unwrap();
    for e in [
        Entry {
            icount: 1000,
            event: Event::DeviceCompletion {
                device: 0,
                request: 1,
                data: b"hi".to_vec(),
            },
        },
        Entry {
            icount: 1500,
            event: Event::IdleSkip {
                hart: 0,
                until: 2000,
            },
        },
        Entry {
            icount: 2000,
            event: Event::OutputMarker {
                device: 0,
                seq: 0,
                len: 2,
            },
        },
    ] {
        w.append(&e).unwrap();
    }
    w.flush().unwrap();
    w.append(&Entry {
        icount: 2000,
        event: Event::StateDigest(vec![DigestPart {
            id: part::CPU,
            digest: *b"0123456789abcdef",
        }]),
    })
    .unwrap();
    w.finish(2100).unwrap()
}

/// The dump in the document (offset, 16 bytes per line).
const EXAMPLE: &str = "\
0000  46 54 56 4d 4c 4f 47 00 08 00 00 00 ef cd ab 89
0010  67 45 23 01 00 00 00 00 00 00 00 00 00 68 e5 cf
0020  8b 01 00 00 04 66 74 76 6d c8 0d c3 c2 16 01 06
0030  e8 07 00 01 68 69 02 05 f4 03 00 f4 03 0a 05 f4
0040  03 00 00 02 75 61 e7 9c 17 08 12 00 00 30 31 32
0050  33 34 35 36 37 38 39 61 62 63 64 65 66 0b 01 64
0060  89 a8 ff af
";

fn dump(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .enumerate()
        .map(|(i, c)| {
            let hex: Vec<String> = c.iter().map(|b| format!("{b:02x}")).collect();
            format!("{:04x}  {}\n", i * 16, hex.join(" "))
        })
        .collect()
}

#[test]
fn worked_example_matches_the_document() {
    let bytes = example();
    assert_eq!(dump(&bytes), EXAMPLE);
    let mut d = Decoder::new();
    d.push(&bytes);
    d.end_input();
    let mut n = 0;
    while d.next_entry().unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 5);
}

/// The document itself, so that it cannot drift from the code.
const DOC: &str = include_str!("../../../docs/log-format.md");

#[test]
fn the_document_holds_the_example_and_states_the_code_s_version() {
    assert!(
        DOC.contains(EXAMPLE),
        "docs/log-format.md does not hold the example dump this build writes:\n{EXAMPLE}"
    );
    let v = replay::FORMAT_VERSION;
    for needle in [
        format!("# The input log format (version {v})"),
        format!("| 0x08 | `{:02x} {:02x}` | version {v} |", v as u8, v >> 8),
        format!("this build reads version {v}"),
    ] {
        assert!(
            DOC.contains(&needle),
            "docs/log-format.md should say {needle:?}"
        );
    }
    // The versions table ends with this one.
    let last = DOC
        .lines()
        .skip_while(|l| !l.starts_with("## Versions"))
        .filter(|l| l.starts_with("| ") && l[2..].starts_with(|c: char| c.is_ascii_digit()))
        .last()
        .expect("a versions table");
    assert!(last.starts_with(&format!("| {v} |")), "{last}");
    // The module documentation of the entry kinds names the same version.
    let entry = include_str!("../src/entry.rs");
    assert!(
        entry.contains(&format!("version {v}: ")),
        "src/entry.rs should say what version {v} changed"
    );
}
