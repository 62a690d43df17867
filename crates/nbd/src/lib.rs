//! A client of the Network Block Device protocol
//! (<https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md>), so that a virtio-blk
//! disk can live on another machine, e.g. behind `qemu-nbd`, which also serves qcow2 images.
//!
//! Why our own: a disk backend is called synchronously from inside the device pass
//! (`machine::virtio::BlockBackend`: one request in, one answer out), so what we need is a
//! small blocking client with a timeout on every socket operation, and nothing more. The NBD
//! crates on crates.io are built on async runtimes (tokio) or are servers; pulling a runtime into
//! the VM loop to drive one request at a time would add threads and a scheduler for no gain.
//! (`cargo search nbd` could not be run here: the registry mirror refuses searches, so this
//! is from what we know of those crates, not a fresh survey.)
//!
//! What it speaks: fixed newstyle negotiation, `NBD_OPT_GO` (with the `NBD_INFO_EXPORT` reply
//! that every server sends), then simple replies only (no structured replies are negotiated):
//! `NBD_CMD_READ`, `WRITE` (with `NBD_CMD_FLAG_FUA` when asked and the server offers
//! `NBD_FLAG_SEND_FUA`), `FLUSH`, `TRIM` and `DISC`. One request is in flight at a time and
//! every reply's handle is checked against the request's.
//!
//! This crate knows nothing of the machine: `machine` implements its `BlockBackend` for
//! [`NbdClient`], so dependencies point one way (machine → nbd).

mod addr;
mod client;
mod error;
pub mod proto;

pub use addr::NbdAddr;
pub use client::{NbdClient, DEFAULT_TIMEOUT};
pub use error::NbdError;
