//! The records `appendlog` (guests/programs/appendlog.c) writes to its disk — one line
//! `SEQ BODY... CRC` per record, CRC the IEEE CRC-32 of everything before its last space, in
//! hex — and reading them back from the guest's ext2 image with `debugfs`, for the tests and the
//! soak that check no acknowledged record was lost.

use std::path::Path;

/// CRC-32 (IEEE), as appendlog computes it.
pub fn crc32(b: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &x in b {
        c ^= u32::from(x);
        for _ in 0..8 {
            c = (c >> 1) ^ (0xedb8_8320 & (c & 1).wrapping_neg());
        }
    }
    !c
}

/// The file `/name` of the ext2 image `img`, read with debugfs (e2fsprogs), which may read it
/// while the guest runs; empty if the file is not there.
pub fn read_image_file(img: &Path, name: &str) -> std::io::Result<String> {
    let out = std::process::Command::new("debugfs")
        .args(["-R", &format!("cat /{name}")])
        .arg(img)
        .stderr(std::process::Stdio::null())
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        // The CRC-32 check value of the catalogue of parametrised CRCs.
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }
}
