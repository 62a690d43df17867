//! The QEMU-`virt`-compatible board around [`rv64`] harts: memory map, boot ROM, CLINT, PLIC,
//! 16550 UART, SiFive test device, virtio-mmio slots, device tree, image loading, and the
//! deterministic loop that interleaves the harts ([`Machine`]).
//!
//! This crate never reads a host clock and never decides when outside input arrives: guest time
//! is a function of the instruction count ([`clock`]), and every input enters through
//! [`Machine::console_input`], [`Machine::skip_to`] or a device backend trait, which is what
//! record and replay hook into. The host-side loop (terminal, wall-clock pacing of idle time)
//! belongs to the caller.

pub mod board;
pub mod clint;
pub mod clock;
mod codec;
pub mod config;
pub mod dirty;
pub mod fdt;
mod hartstate;
pub mod loader;
pub mod machine;
pub mod persist;
pub mod plic;
mod ramdigest;
pub mod rom;
pub mod snapshot;
pub mod syscon;
pub mod uart;
pub mod virtio;
pub mod wake;

pub use config::{
    format_mac, parse_mac, parse_size, ConfigError, DriveConfig, Firmware, MachineConfig,
    NbdDriveConfig, NetConfig, ServerAddr, NBD_DEFAULT_TIMEOUT,
};
pub use dirty::DirtyConsumer;
pub use machine::{
    default_engine, set_default_engine, Backends, BootInfo, Machine, MachineError, Stop,
};
pub use rv64::Engine;
pub use syscon::PowerEvent;
pub use uart::SerialBackend;
