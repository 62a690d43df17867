//! Fuzzes the snapshot decoder: `Machine::load_snapshot` (what `Machine::restore` runs after
//! building the machine) on arbitrary bytes must return an error or restore, never panic. See
//! `common/snapshot_input.rs` for how the input becomes a file (raw, CRC fixed up, or a payload
//! sealed into a valid file). Run with `cargo +nightly fuzz run snapshot` from
//! `crates/machine/fuzz`; the seeds are in `corpus/snapshot`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

#[path = "common/snapshot_input.rs"]
mod snapshot_input;

/// A valid snapshot of a fresh machine, for the header of sealed payloads.
fn like() -> &'static [u8] {
    static LIKE: OnceLock<Vec<u8>> = OnceLock::new();
    LIKE.get_or_init(|| snapshot_input::machine().snapshot().unwrap())
}

fuzz_target!(|data: &[u8]| {
    let file = snapshot_input::file_for(like(), data);
    let mut m = snapshot_input::machine();
    if m.load_snapshot(&file).is_ok() {
        // A restored machine must also run and snapshot again without panicking.
        let _ = m.run(m.icount().saturating_add(1000));
        let _ = m.snapshot();
    }
});
