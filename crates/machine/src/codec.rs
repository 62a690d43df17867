//! The little-endian encoder and the bounds-checked decoder that every saved state uses (the
//! snapshot's sections, each device's own state such as a disk's requests in flight). A leaf
//! module: devices encode their state with it without depending on the snapshot module, which
//! only orders the sections.

/// A saved state that does not decode: which part, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{section}: {why}")]
pub struct CodecError {
    /// The part being read (a snapshot section, a device's state).
    pub section: &'static str,
    /// What is wrong.
    pub why: String,
}

/// Little-endian encoder.
#[derive(Default)]
pub(crate) struct Enc(pub(crate) Vec<u8>);

impl Enc {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }
    pub(crate) fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.0.extend_from_slice(b);
    }
    pub(crate) fn u32s(&mut self, v: &[u32]) {
        self.len(v.len());
        v.iter().for_each(|&x| self.u32(x));
    }
    /// Writes a section: tag, length, then what `body` writes.
    pub(crate) fn section(&mut self, tag: u8, body: impl FnOnce(&mut Enc)) {
        self.u8(tag);
        let at = self.0.len();
        self.u64(0);
        body(self);
        let len = (self.0.len() - at - 8) as u64;
        self.0[at..at + 8].copy_from_slice(&len.to_le_bytes());
    }
}

/// Bounds-checked little-endian decoder over one section.
pub(crate) struct Dec<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) section: &'static str,
}

impl<'a> Dec<'a> {
    pub(crate) fn bad(&self, why: impl Into<String>) -> CodecError {
        CodecError {
            section: self.section,
            why: why.into(),
        }
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if n > self.buf.len() {
            return Err(self.bad(format!("needs {n} more bytes, {} left", self.buf.len())));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    pub(crate) fn arr<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.arr::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(self.arr()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    pub(crate) fn bool(&mut self) -> Result<bool, CodecError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.bad(format!("boolean {v}"))),
        }
    }
    /// A count of elements of `size` bytes each that must fit in what is left.
    pub(crate) fn count(&mut self, size: usize) -> Result<usize, CodecError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(size) > self.buf.len() {
            return Err(self.bad(format!("{n} elements do not fit")));
        }
        Ok(n)
    }
    pub(crate) fn bytes(&mut self) -> Result<Vec<u8>, CodecError> {
        let n = self.count(1)?;
        Ok(self.take(n)?.to_vec())
    }
    pub(crate) fn u32s(&mut self) -> Result<Vec<u32>, CodecError> {
        let n = self.count(4)?;
        (0..n).map(|_| self.u32()).collect()
    }
    /// The next section, which must carry `tag`.
    pub(crate) fn section(&mut self, tag: u8, name: &'static str) -> Result<Dec<'a>, CodecError> {
        self.section = name;
        let t = self.u8()?;
        if t != tag {
            return Err(self.bad(format!("tag {t} where {tag} was expected")));
        }
        let len = self.u64()?;
        let len = usize::try_from(len).map_err(|_| self.bad("length"))?;
        Ok(Dec {
            buf: self.take(len)?,
            section: name,
        })
    }
    /// Everything was read.
    pub(crate) fn end(&self) -> Result<(), CodecError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.bad(format!("{} bytes left over", self.buf.len())))
        }
    }
}

/// Test helper: `s` encodes and decodes back to itself with nothing left over, and every
/// truncation of its encoding is an error, not a panic.
#[cfg(test)]
pub(crate) fn assert_round_trips<T: PartialEq + std::fmt::Debug>(
    s: &T,
    encode: impl Fn(&T, &mut Enc),
    decode: impl Fn(&mut Dec) -> Result<T, CodecError>,
) {
    let mut e = Enc::default();
    encode(s, &mut e);
    let mut d = Dec {
        buf: &e.0,
        section: "test",
    };
    assert_eq!(&decode(&mut d).unwrap(), s);
    assert!(d.buf.is_empty());
    for n in 0..e.0.len() {
        let mut d = Dec {
            buf: &e.0[..n],
            section: "test",
        };
        assert!(decode(&mut d).is_err(), "{n} bytes");
    }
}
