//! [`Outbox`]: the guest's console output (UART0 and the virtio console), collected where the
//! machine writes it and taken by whoever decides when it may leave: `ftvm run` prints it after
//! each slice, the FT primary holds it until the backup has acknowledged the log position it
//! was produced at, a replayer prints or keeps it.

use machine::virtio::ConsoleBackend;
use machine::SerialBackend;
use std::sync::{Arc, Mutex};

/// Console output waiting to be taken. Clones share the buffer.
#[derive(Clone, Default)]
pub struct Outbox(Arc<Mutex<Vec<u8>>>);

impl Outbox {
    /// Appends bytes the guest wrote.
    pub fn push(&self, bytes: &[u8]) {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(bytes);
        }
    }

    /// Takes everything written since the last call.
    pub fn take(&self) -> Vec<u8> {
        match self.0.lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(_) => Vec::new(),
        }
    }
}

impl SerialBackend for Outbox {
    fn transmit(&mut self, bytes: &[u8]) {
        self.push(bytes);
    }
}

/// The virtio console shares the output; its input is not connected (input goes to UART0).
impl ConsoleBackend for Outbox {
    fn read_input(&mut self, _: &mut [u8]) -> usize {
        0
    }
    fn write_output(&mut self, data: &[u8]) {
        self.push(data);
    }
}
