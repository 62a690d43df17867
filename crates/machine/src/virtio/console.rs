//! virtio-console (device id 3, virtio 1.2 §5.3), a single port without MULTIPORT: receiveq 0
//! takes input from a [`ConsoleBackend`], transmitq 1 sends output to it.
//!
//! Input is pulled from the backend only when the guest has a receive buffer ready, and only
//! inside `process`, so every byte the guest receives is one backend call the replay layer can
//! record at an exact instruction count. Output is an output in the FT sense; the backend (or
//! the FT layer wrapping it) decides when it is released.

use super::{
    QueueError, VirtioDevice, VirtioMmio, Virtq, VIRTIO_F_RING_INDIRECT_DESC, VIRTIO_F_VERSION_1,
    VIRTIO_ID_CONSOLE,
};
use rv64::Ram;
use std::io::{self, Read, Write};
use std::sync::mpsc;

/// QueueNumMax of both queues.
const QUEUE_SIZE: u16 = 64;
/// Receive queue index.
const RECEIVEQ: usize = 0;
/// Transmit queue index.
const TRANSMITQ: usize = 1;
/// Bytes moved per step, in both directions.
const CHUNK: usize = 4096;

/// The outside end of a console.
pub trait ConsoleBackend: Send {
    /// Copies input that is waiting into `buf` without blocking; returns how many bytes (0 when
    /// there is none right now).
    fn read_input(&mut self, buf: &mut [u8]) -> usize;
    /// Sends bytes the guest wrote.
    fn write_output(&mut self, data: &[u8]);
}

/// A console with no input whose output is dropped.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullConsole;

impl ConsoleBackend for NullConsole {
    fn read_input(&mut self, _: &mut [u8]) -> usize {
        0
    }
    fn write_output(&mut self, _: &[u8]) {}
}

/// The host's standard input and output. A thread reads stdin so that `read_input` never
/// blocks; only one consumer of stdin should exist in a process.
#[derive(Debug)]
pub struct StdioConsole {
    input: mpsc::Receiver<Vec<u8>>,
    pending: Vec<u8>,
}

impl Default for StdioConsole {
    fn default() -> Self {
        StdioConsole::new()
    }
}

impl StdioConsole {
    /// Starts the stdin reader thread.
    pub fn new() -> StdioConsole {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            let mut stdin = io::stdin();
            while let Ok(n @ 1..) = stdin.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        StdioConsole {
            input: rx,
            pending: Vec::new(),
        }
    }
}

impl ConsoleBackend for StdioConsole {
    fn read_input(&mut self, buf: &mut [u8]) -> usize {
        while self.pending.len() < buf.len() {
            match self.input.try_recv() {
                Ok(more) => self.pending.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        let n = self.pending.len().min(buf.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        n
    }
    fn write_output(&mut self, data: &[u8]) {
        let mut out = io::stdout().lock();
        // A closed stdout loses console output; the guest must not notice.
        let _ = out.write_all(data).and_then(|()| out.flush());
    }
}

impl VirtioMmio {
    /// A virtio-console device connected to `backend`.
    pub fn console(backend: Box<dyn ConsoleBackend>) -> VirtioMmio {
        VirtioMmio::new(Box::new(Console {
            backend,
            bounce: vec![0; CHUNK],
        }))
    }
}

/// The virtio-console device model.
struct Console {
    backend: Box<dyn ConsoleBackend>,
    bounce: Vec<u8>,
}

impl Console {
    fn transmit(&mut self, q: &mut Virtq, ram: &mut Ram) -> Result<(), QueueError> {
        while let Some(chain) = q.pop(ram)? {
            let len = chain.readable_len();
            let mut off = 0;
            while off < len {
                let n = (len - off).min(CHUNK as u64) as usize;
                if chain.read_at(ram, off, &mut self.bounce[..n]).is_err() {
                    break; // a buffer outside RAM: the rest of the chain is lost
                }
                self.backend.write_output(&self.bounce[..n]);
                off += n as u64;
            }
            q.add_used(ram, chain.head, 0)?;
        }
        Ok(())
    }

    fn receive(&mut self, q: &mut Virtq, ram: &mut Ram) -> Result<(), QueueError> {
        while let Some(chain) = q.pop(ram)? {
            let room = chain.writable_len().min(CHUNK as u64) as usize;
            let n = if room == 0 {
                0
            } else {
                self.backend.read_input(&mut self.bounce[..room])
            };
            if n == 0 && room > 0 {
                q.undo_pop(); // keep the buffer for later input
                break;
            }
            let n = n.min(room);
            let len = match chain.write_at(ram, 0, &self.bounce[..n]) {
                Ok(()) => n as u32,
                Err(_) => 0,
            };
            q.add_used(ram, chain.head, len)?;
        }
        Ok(())
    }
}

impl VirtioDevice for Console {
    fn device_id(&self) -> u32 {
        VIRTIO_ID_CONSOLE
    }
    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_F_RING_INDIRECT_DESC
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }
    fn config_read(&self, _offset: u64, data: &mut [u8]) {
        // cols, rows, max_nr_ports, emerg_wr: none of their features is offered.
        data.fill(0);
    }
    fn process(
        &mut self,
        queues: &mut [Virtq],
        notified: u32,
        _features: u64,
        ram: &mut Ram,
    ) -> Result<(), QueueError> {
        if notified & (1 << TRANSMITQ) != 0 {
            self.transmit(&mut queues[TRANSMITQ], ram)?;
        }
        // Input is polled: it arrives whenever the outside world sends it.
        self.receive(&mut queues[RECEIVEQ], ram)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::testutil::{Driver, DATA};
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Pipe {
        input: Arc<Mutex<Vec<u8>>>,
        output: Arc<Mutex<Vec<u8>>>,
    }

    impl ConsoleBackend for Pipe {
        fn read_input(&mut self, buf: &mut [u8]) -> usize {
            let mut input = self.input.lock().unwrap();
            let n = input.len().min(buf.len());
            buf[..n].copy_from_slice(&input[..n]);
            input.drain(..n);
            n
        }
        fn write_output(&mut self, data: &[u8]) {
            self.output.lock().unwrap().extend_from_slice(data);
        }
    }

    fn setup() -> (Driver, Pipe) {
        let pipe = Pipe::default();
        (
            Driver::new(VirtioMmio::console(Box::new(pipe.clone())), 0, 8),
            pipe,
        )
    }

    #[test]
    fn transmits_output() {
        let (mut d, pipe) = setup();
        assert_eq!(d.dev.device_id(), 3);
        d.ram.write(DATA, b"hello, ").unwrap();
        d.ram.write(DATA + 0x100, b"world\n").unwrap();
        d.submit(1, &[(DATA, 7, false), (DATA + 0x100, 6, false)]);
        d.kick(1);
        assert_eq!(&pipe.output.lock().unwrap()[..], b"hello, world\n");
        assert_eq!(d.take_used(1), vec![(0, 0)]);
        assert_eq!(d.ack(), 1);
    }

    #[test]
    fn receives_input_only_when_there_is_some() {
        let (mut d, pipe) = setup();
        d.submit(0, &[(DATA, 4, true)]);
        d.submit(0, &[(DATA + 0x100, 16, true)]);
        d.kick(0);
        assert!(d.take_used(0).is_empty(), "no input yet: buffers are kept");
        assert!(!d.dev.irq_level());

        pipe.input.lock().unwrap().extend_from_slice(b"abcdef");
        d.dev.process(&mut d.ram); // the board's regular poll, no notify needed
        assert_eq!(d.take_used(0), vec![(0, 4), (1, 2)]);
        assert_eq!(d.mem(DATA, 4), b"abcd");
        assert_eq!(d.mem(DATA + 0x100, 2), b"ef");
        assert!(d.dev.irq_level());
        assert!(pipe.input.lock().unwrap().is_empty());
    }

    #[test]
    fn bad_buffers_do_not_stop_the_device() {
        let (mut d, pipe) = setup();
        pipe.input.lock().unwrap().extend_from_slice(b"xy");
        d.submit(0, &[(0x10, 4, true)]);
        d.submit(1, &[(0x10, 4, false)]);
        d.kick(1);
        assert_eq!(d.take_used(0), vec![(0, 0)]);
        assert_eq!(d.take_used(1), vec![(0, 0)]);
        assert!(pipe.output.lock().unwrap().is_empty());
        assert!(!d.needs_reset());
    }
}
