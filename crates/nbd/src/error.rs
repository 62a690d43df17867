//! What can go wrong while connecting; transmission errors are `io::Error`s (see `NbdClient`).

/// Why [`crate::NbdClient::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    /// cannot connect to the NBD server at {addr}: {source} (is the server running and listening there?)
    #[error("cannot connect to the NBD server at {addr}: {source} (is the server running and listening there?)")]
    Connect {
        /// The server.
        addr: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// NBD negotiation with {addr} failed while {during}: {source}
    #[error("NBD negotiation with {addr} failed while {during}: {source}")]
    Io {
        /// The server.
        addr: String,
        /// What the client was doing.
        during: &'static str,
        /// The socket error (a timeout if the server stopped answering).
        source: std::io::Error,
    },
    /// {addr} is not an NBD server (its greeting does not start with NBDMAGIC)
    #[error("{addr} is not an NBD server (its greeting does not start with NBDMAGIC)")]
    NotNbd {
        /// The server.
        addr: String,
    },
    /// {addr} speaks the {style} NBD negotiation; this client needs fixed newstyle (qemu-nbd and nbd-server ≥ 3.10 speak it unless told otherwise)
    #[error("{addr} speaks the {style} NBD negotiation; this client needs fixed newstyle (qemu-nbd and nbd-server >= 3.10 speak it unless told otherwise)")]
    Unsupported {
        /// The server.
        addr: String,
        /// What it speaks instead.
        style: &'static str,
    },
    /// the NBD server at {addr} refused export `{export}`: {reason}{message}
    #[error("the NBD server at {addr} refused export `{export}`: {reason}{message}")]
    Refused {
        /// The server.
        addr: String,
        /// The export asked for.
        export: String,
        /// The NBD_REP_ERR_* name.
        reason: &'static str,
        /// The server's own words, if it sent any (prefixed with ": ").
        message: String,
    },
    /// the NBD server at {addr} broke the protocol: {what}
    #[error("the NBD server at {addr} broke the protocol: {what}")]
    Protocol {
        /// The server.
        addr: String,
        /// What was wrong.
        what: String,
    },
}
