//! The protocol's numbers, named as in `proto.md`.

/// First 8 bytes of every newstyle greeting: "NBDMAGIC".
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// Second 8 bytes of a newstyle greeting, and the prefix of every option: "IHAVEOPT".
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Second 8 bytes of an oldstyle greeting (not supported).
pub const CLISERV_MAGIC: u64 = 0x0000_4202_8186_1253;
/// Magic of every option reply.
pub const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of every transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic of a structured reply (never negotiated, so a protocol error if seen).
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flag: the server speaks fixed newstyle.
pub const NBD_FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flag: the server can omit the 124 zero bytes (irrelevant with OPT_GO).
pub const NBD_FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flag: we speak fixed newstyle.
pub const NBD_FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: omit the zero padding.
pub const NBD_FLAG_C_NO_ZEROES: u32 = 1 << 1;

/// Option: end negotiation and enter transmission on an export.
pub const NBD_OPT_GO: u32 = 7;
/// Option: end the session during negotiation.
pub const NBD_OPT_ABORT: u32 = 2;

/// Option reply: done.
pub const NBD_REP_ACK: u32 = 1;
/// Option reply: an information block.
pub const NBD_REP_INFO: u32 = 3;
/// Bit set in every option error reply.
pub const NBD_REP_FLAG_ERROR: u32 = 1 << 31;
/// Info type: export size and transmission flags.
pub const NBD_INFO_EXPORT: u16 = 0;

/// Transmission flag: the other flags are valid.
pub const NBD_FLAG_HAS_FLAGS: u16 = 1 << 0;
/// Transmission flag: the export is read-only.
pub const NBD_FLAG_READ_ONLY: u16 = 1 << 1;
/// Transmission flag: the server accepts `NBD_CMD_FLUSH`.
pub const NBD_FLAG_SEND_FLUSH: u16 = 1 << 2;
/// Transmission flag: the server accepts `NBD_CMD_FLAG_FUA`.
pub const NBD_FLAG_SEND_FUA: u16 = 1 << 3;
/// Transmission flag: the server accepts `NBD_CMD_TRIM`.
pub const NBD_FLAG_SEND_TRIM: u16 = 1 << 5;

/// Command: read.
pub const NBD_CMD_READ: u16 = 0;
/// Command: write.
pub const NBD_CMD_WRITE: u16 = 1;
/// Command: disconnect (no reply).
pub const NBD_CMD_DISC: u16 = 2;
/// Command: flush.
pub const NBD_CMD_FLUSH: u16 = 3;
/// Command: trim (discard).
pub const NBD_CMD_TRIM: u16 = 4;
/// Command flag: force unit access (the write is durable when it is acknowledged).
pub const NBD_CMD_FLAG_FUA: u16 = 1 << 0;

/// The name of an option error reply type, for messages.
pub fn rep_err_name(code: u32) -> &'static str {
    match code & !NBD_REP_FLAG_ERROR {
        1 => "NBD_REP_ERR_UNSUP (the server does not know this option)",
        2 => "NBD_REP_ERR_POLICY (the server forbids it)",
        3 => "NBD_REP_ERR_INVALID (the request was invalid)",
        4 => "NBD_REP_ERR_PLATFORM (not supported on the server's platform)",
        5 => "NBD_REP_ERR_TLS_REQD (the server requires TLS, which this client does not speak)",
        6 => "NBD_REP_ERR_UNKNOWN (no such export)",
        7 => "NBD_REP_ERR_SHUTDOWN (the server is shutting down)",
        8 => "NBD_REP_ERR_BLOCK_SIZE_REQD (the server requires block size negotiation)",
        9 => "NBD_REP_ERR_TOO_BIG (the request is too big)",
        _ => "an unknown NBD_REP_ERR_* code",
    }
}

/// The name of a transmission error (an errno value on the wire), for messages.
pub fn errno_name(code: u32) -> &'static str {
    match code {
        1 => "EPERM (operation not permitted, e.g. a write to a read-only export)",
        5 => "EIO (input/output error on the server)",
        12 => "ENOMEM (the server is out of memory)",
        22 => "EINVAL (invalid request)",
        28 => "ENOSPC (no space left on the server)",
        75 => "EOVERFLOW (request too large)",
        95 => "ENOTSUP (not supported)",
        108 => "ESHUTDOWN (the server is shutting down)",
        _ => "an unknown error code",
    }
}
