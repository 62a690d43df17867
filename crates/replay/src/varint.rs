//! Unsigned LEB128 and zigzag, the variable-length integers of the log. Decoding accepts only the
//! shortest encoding of each value, so every value has exactly one encoding and a decoded log
//! re-encodes to the same bytes (which is what the fuzz target checks).

/// Longest encoding of a `u64`.
pub const MAX_LEN: usize = 10;

/// Why a varint could not be read. Internal: the decoder turns it into a
/// [`DecodeError`](crate::DecodeError) that names where it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarintError {
    /// The bytes end before the varint does.
    Incomplete,
    /// Longer than the shortest encoding of its value, or more than 64 bits.
    Malformed,
}

/// Appends `v` in LEB128.
pub fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Number of bytes [`put`] writes for `v`.
pub fn len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Reads a LEB128 value from the start of `bytes`: the value and how many bytes it took.
#[inline]
pub fn get(bytes: &[u8]) -> Result<(u64, usize), VarintError> {
    // Fast path: one byte.
    match bytes.first() {
        None => return Err(VarintError::Incomplete),
        Some(&b) if b < 0x80 => return Ok((u64::from(b), 1)),
        Some(_) => {}
    }
    let mut v = 0u64;
    for (i, &b) in bytes.iter().take(MAX_LEN).enumerate() {
        let low = u64::from(b & 0x7f);
        if i == MAX_LEN - 1 && b > 1 {
            return Err(VarintError::Malformed);
        }
        v |= low << (7 * i);
        if b < 0x80 {
            // A final zero byte after the first would make an overlong encoding.
            if b == 0 {
                return Err(VarintError::Malformed);
            }
            return Ok((v, i + 1));
        }
    }
    if bytes.len() >= MAX_LEN {
        Err(VarintError::Malformed)
    } else {
        Err(VarintError::Incomplete)
    }
}

/// Maps a signed value to an unsigned one with small magnitudes staying small.
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The inverse of [`zigzag`].
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_lengths() {
        let mut samples = vec![
            0,
            1,
            127,
            128,
            255,
            300,
            16383,
            16384,
            u64::MAX,
            u64::MAX - 1,
        ];
        samples.extend((0..64).map(|s| 1u64 << s));
        samples.extend((1..64).map(|s| (1u64 << s) - 1));
        for v in samples {
            let mut out = Vec::new();
            put(&mut out, v);
            assert_eq!(out.len(), len(v), "{v}");
            assert_eq!(get(&out), Ok((v, out.len())), "{v}");
            for cut in 0..out.len() {
                assert_eq!(
                    get(&out[..cut]),
                    Err(VarintError::Incomplete),
                    "{v} cut {cut}"
                );
            }
        }
    }

    #[test]
    fn rejects_overlong_and_too_wide() {
        assert_eq!(get(&[0x80, 0x00]), Err(VarintError::Malformed));
        assert_eq!(get(&[0xff, 0x80, 0x00]), Err(VarintError::Malformed));
        let mut max = Vec::new();
        put(&mut max, u64::MAX);
        assert_eq!(max.last(), Some(&1));
        *max.last_mut().unwrap() = 2;
        assert_eq!(get(&max), Err(VarintError::Malformed));
        assert_eq!(get(&[0x80; 11]), Err(VarintError::Malformed));
        assert_eq!(get(&[0x80; 9]), Err(VarintError::Incomplete));
    }

    #[test]
    fn zigzag_round_trip() {
        for v in [0, 1, -1, 2, -2, i64::MAX, i64::MIN, 12345, -12345] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
    }
}
