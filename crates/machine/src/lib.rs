//! The QEMU-`virt`-compatible board around [`rv64`] harts.
pub mod virtio;
