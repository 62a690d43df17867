//! The code buffer: one fixed-size anonymous mapping, readable, writable and executable, that
//! translated blocks are appended to and that is reset wholesale when full.
//!
//! One RWX mapping (rather than W^X toggling with `mprotect`) because blocks are written while
//! others run between them, and a system call per translated block would cost more than the
//! translation itself. The mapping is private to this process and only ever holds code the
//! translator wrote.

use std::ptr::NonNull;

/// An executable memory area with a bump allocator.
pub(crate) struct CodeBuffer {
    base: NonNull<u8>,
    size: usize,
    used: usize,
}

impl CodeBuffer {
    /// Maps `size` bytes; `None` if the host refuses (e.g. a policy forbidding executable
    /// anonymous memory), in which case the hart stays on the interpreter.
    pub fn new(size: usize) -> Option<CodeBuffer> {
        // SAFETY: an anonymous private mapping with no address hint has no preconditions; the
        // result is checked against MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        Some(CodeBuffer {
            base: NonNull::new(p as *mut u8)?,
            size,
            used: 0,
        })
    }

    /// Bytes still free.
    pub fn free(&self) -> usize {
        self.size - self.used
    }

    /// Copies `code` in and returns where it starts. The caller checked [`CodeBuffer::free`].
    pub fn push(&mut self, code: &[u8]) -> *const u8 {
        assert!(code.len() <= self.free(), "code buffer overflow");
        // SAFETY: `used + code.len() <= size`, so the destination lies inside the mapping, which
        // is writable; source and destination cannot overlap (the source is a Rust slice).
        let dst = unsafe { self.base.as_ptr().add(self.used) };
        // SAFETY: as above.
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), dst, code.len()) };
        // Keep entries 16-byte aligned (cheap, and friendlier to the host's decoders).
        self.used = (self.used + code.len() + 15) & !15;
        self.used = self.used.min(self.size);
        dst
    }

    /// Forgets every block (the caller drops all pointers into the buffer first).
    pub fn reset(&mut self) {
        self.used = 0;
    }
}

impl Drop for CodeBuffer {
    fn drop(&mut self) {
        // SAFETY: `base..base+size` is the mapping made in `new`, unmapped exactly once here.
        unsafe { libc::munmap(self.base.as_ptr() as *mut libc::c_void, self.size) };
    }
}
