//! What the translating engine did: the numbers benchmarks and diagnostics report.

/// Statistics of the translating engine (for benchmarks and diagnostics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitStats {
    /// Blocks translated (including re-translations after invalidation and flushes).
    pub blocks: u64,
    /// Guest instructions translated.
    pub insns: u64,
    /// Bytes of host code emitted.
    pub code_bytes: u64,
    /// Time spent translating, in nanoseconds (host time, never seen by the guest).
    pub translate_ns: u64,
    /// Wholesale flushes of the translation cache because it was full.
    pub flushes: u64,
    /// Block executions started by the dispatcher (chained blocks are not counted).
    pub runs: u64,
    /// Block exits patched to jump straight to the next block (direct chaining).
    pub chains: u64,
    /// Blocks entered straight from another block's exit through the inline jump-cache probe
    /// (returns, indirect jumps, exits to another page), without the dispatcher.
    pub inline_entries: u64,
}
