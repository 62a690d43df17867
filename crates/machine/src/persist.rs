//! What goes wrong restoring a board device's saved form. Each device keeps its saved form,
//! its validation and its encoding next to it, in a `persist` submodule (Firecracker's
//! pattern): [`crate::clint::ClintState`], [`crate::plic::PlicState`],
//! [`crate::uart::UartState`], [`crate::syscon::TestDeviceState`], the virtio transports'
//! [`crate::virtio::VirtioMmioState`] (with each device's own state inside), the harts'
//! (`rv64::persist::HartState`, encoded by [`crate::hartstate`]) and the clock's
//! ([`crate::clock::Clock`]). This module is a leaf, so that the devices can use it.

/// Errors restoring a saved device state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// saved {device} state is for {saved} harts, but this machine has {actual}
    #[error("saved {device} state is for {saved} harts, but this machine has {actual}")]
    HartCount {
        /// Which device.
        device: &'static str,
        /// Harts in the saved state.
        saved: usize,
        /// Harts in this machine.
        actual: usize,
    },
    /// saved {device} state is malformed: {why}
    #[error("saved {device} state is malformed: {why}")]
    Malformed {
        /// Which device.
        device: &'static str,
        /// What is wrong.
        why: &'static str,
    },
}
