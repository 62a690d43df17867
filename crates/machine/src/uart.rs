//! UART0: a 16550A as the `ns16550a` device-tree binding describes it, with as much of the chip
//! as Linux's 8250 driver and OpenSBI's uart8250 driver use: the eight registers, the divisor
//! latch, 16-byte FIFOs, loopback, and the receive-data, THR-empty and line-status interrupts.
//!
//! The transmitter is infinitely fast: a byte written to THR goes to the [`SerialBackend`] at
//! once and THR is empty again. The receiver takes bytes from a line queue that the machine fills
//! ([`Uart::push_input`]) into its FIFO whenever there is room, so input is never dropped and
//! enters the guest at points that depend only on the guest's own execution.

use std::collections::VecDeque;

/// Physical base address.
pub const BASE: u64 = 0x1000_0000;
/// Size of the register window.
pub const SIZE: u64 = 0x100;
/// PLIC source number.
pub const IRQ: u32 = 10;
/// Input clock (the device tree's `clock-frequency`), as on QEMU `virt`.
pub const CLOCK_HZ: u32 = 3_686_400;

const FIFO_SIZE: usize = 16;

const IER_RDI: u8 = 1; // received data available
const IER_THRI: u8 = 2; // THR empty
const IER_RLSI: u8 = 4; // receiver line status
const IER_MSI: u8 = 8; // modem status

const IIR_NO_INT: u8 = 0x01;
const IIR_MSI: u8 = 0x00;
const IIR_THRI: u8 = 0x02;
const IIR_RDI: u8 = 0x04;
const IIR_RLSI: u8 = 0x06;
const IIR_FIFO_ENABLED: u8 = 0xc0;

const FCR_ENABLE: u8 = 1;
const FCR_CLEAR_RCVR: u8 = 2;

const LCR_DLAB: u8 = 0x80;
const MCR_LOOP: u8 = 0x10;

const LSR_DR: u8 = 0x01;
const LSR_OE: u8 = 0x02;
const LSR_THRE: u8 = 0x20;
const LSR_TEMT: u8 = 0x40;

/// The outside world's end of the serial line: where transmitted bytes go.
pub trait SerialBackend: Send {
    /// The guest transmitted `bytes`.
    fn transmit(&mut self, bytes: &[u8]);
}

/// A backend that drops everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSerial;

impl SerialBackend for NullSerial {
    fn transmit(&mut self, _: &[u8]) {}
}

/// A 16550A UART.
pub struct Uart {
    backend: Box<dyn SerialBackend>,
    /// Bytes that arrived from the outside and wait for room in the receive FIFO.
    line: VecDeque<u8>,
    rx: VecDeque<u8>,
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    dll: u8,
    dlm: u8,
    fifo_enabled: bool,
    overrun: bool,
    /// The THR-empty interrupt is pending (set when THR empties or the interrupt is enabled
    /// while it is empty; cleared by reading IIR while it is the reported cause, or by writing
    /// THR).
    thre_pending: bool,
}

impl std::fmt::Debug for Uart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uart")
            .field("ier", &self.ier)
            .field("lcr", &self.lcr)
            .field("rx", &self.rx.len())
            .field("line", &self.line.len())
            .finish_non_exhaustive()
    }
}

impl Uart {
    /// A UART at reset whose transmitted bytes go to `backend`.
    pub fn new(backend: Box<dyn SerialBackend>) -> Self {
        Uart {
            backend,
            line: VecDeque::new(),
            rx: VecDeque::new(),
            ier: 0,
            lcr: 0,
            mcr: 0,
            scr: 0,
            dll: 0,
            dlm: 0,
            fifo_enabled: false,
            overrun: false,
            thre_pending: false,
        }
    }

    pub(crate) fn state(&self) -> UartState {
        UartState {
            line: self.line.iter().copied().collect(),
            rx: self.rx.iter().copied().collect(),
            regs: [self.ier, self.lcr, self.mcr, self.scr, self.dll, self.dlm],
            fifo_enabled: self.fifo_enabled,
            overrun: self.overrun,
            thre_pending: self.thre_pending,
        }
    }

    /// Takes a state the caller checked.
    pub(crate) fn set_state(&mut self, s: &UartState) {
        self.line = s.line.iter().copied().collect();
        self.rx = s.rx.iter().copied().collect();
        [self.ier, self.lcr, self.mcr, self.scr, self.dll, self.dlm] = s.regs;
        self.fifo_enabled = s.fifo_enabled;
        self.overrun = s.overrun;
        self.thre_pending = s.thre_pending;
    }

    /// Queues bytes that arrived on the serial line; they move into the receive FIFO as the
    /// guest makes room.
    pub fn push_input(&mut self, bytes: &[u8]) {
        self.line.extend(bytes);
        self.fill_rx();
    }

    /// Bytes queued on the line that the guest has not yet received into its FIFO.
    pub fn input_backlog(&self) -> usize {
        self.line.len()
    }

    fn fifo_capacity(&self) -> usize {
        if self.fifo_enabled {
            FIFO_SIZE
        } else {
            1
        }
    }

    fn fill_rx(&mut self) {
        while self.rx.len() < self.fifo_capacity() {
            match self.line.pop_front() {
                Some(b) => self.rx.push_back(b),
                None => break,
            }
        }
    }

    fn loopback(&self) -> bool {
        self.mcr & MCR_LOOP != 0
    }

    fn msr(&self) -> u8 {
        if self.loopback() {
            // DTR→DSR, RTS→CTS, OUT1→RI, OUT2→DCD.
            let m = self.mcr;
            ((m & 1) << 5) | ((m & 2) << 3) | ((m & 4) << 4) | ((m & 8) << 4)
        } else {
            0xb0 // DCD, DSR and CTS asserted: a modem that is always there.
        }
    }

    fn lsr(&self) -> u8 {
        let mut v = LSR_THRE | LSR_TEMT;
        if !self.rx.is_empty() {
            v |= LSR_DR;
        }
        if self.overrun {
            v |= LSR_OE;
        }
        v
    }

    /// The interrupt identification, highest priority first.
    fn iir_cause(&self) -> u8 {
        if self.ier & IER_RLSI != 0 && self.overrun {
            IIR_RLSI
        } else if self.ier & IER_RDI != 0 && !self.rx.is_empty() {
            IIR_RDI
        } else if self.ier & IER_THRI != 0 && self.thre_pending {
            IIR_THRI
        } else {
            // Modem status never changes outside loopback, so it never interrupts.
            let _ = (IER_MSI, IIR_MSI);
            IIR_NO_INT
        }
    }

    /// The level of the UART's interrupt line.
    pub fn irq_level(&self) -> bool {
        self.iir_cause() != IIR_NO_INT
    }

    /// A guest read at `offset`. Registers are bytes; wider accesses read the addressed byte
    /// zero-extended. Misaligned accesses fault.
    pub fn read(&mut self, offset: u64, size: u8) -> Option<u64> {
        if !matches!(size, 1 | 2 | 4 | 8)
            || !offset.is_multiple_of(u64::from(size))
            || offset >= SIZE
        {
            return None;
        }
        let dlab = self.lcr & LCR_DLAB != 0;
        let v = match offset {
            0 if dlab => self.dll,
            0 => {
                let b = self.rx.pop_front().unwrap_or(0);
                self.fill_rx();
                b
            }
            1 if dlab => self.dlm,
            1 => self.ier,
            2 => {
                let cause = self.iir_cause();
                if cause == IIR_THRI {
                    self.thre_pending = false;
                }
                cause
                    | if self.fifo_enabled {
                        IIR_FIFO_ENABLED
                    } else {
                        0
                    }
            }
            3 => self.lcr,
            4 => self.mcr,
            5 => {
                let v = self.lsr();
                self.overrun = false;
                v
            }
            6 => self.msr(),
            7 => self.scr,
            _ => 0,
        };
        Some(u64::from(v))
    }

    /// A guest write at `offset`; see [`Uart::read`].
    pub fn write(&mut self, offset: u64, size: u8, val: u64) -> bool {
        if !matches!(size, 1 | 2 | 4 | 8)
            || !offset.is_multiple_of(u64::from(size))
            || offset >= SIZE
        {
            return false;
        }
        let v = val as u8;
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            0 if dlab => self.dll = v,
            0 => {
                if self.loopback() {
                    if self.rx.len() < self.fifo_capacity() {
                        self.rx.push_back(v);
                    } else {
                        self.overrun = true;
                    }
                } else {
                    self.backend.transmit(&[v]);
                }
                // Sent at once: THR is empty again.
                self.thre_pending = true;
            }
            1 if dlab => self.dlm = v,
            1 => {
                let was = self.ier;
                self.ier = v & 0x0f;
                if self.ier & IER_THRI != 0 && was & IER_THRI == 0 {
                    self.thre_pending = true;
                }
            }
            2 => {
                let enable = v & FCR_ENABLE != 0;
                if enable != self.fifo_enabled || v & FCR_CLEAR_RCVR != 0 {
                    self.rx.clear();
                    self.overrun = false;
                }
                self.fifo_enabled = enable;
                self.fill_rx();
            }
            3 => self.lcr = v,
            4 => self.mcr = v & 0x1f,
            7 => self.scr = v,
            _ => {} // LSR and MSR are read-only
        }
        true
    }
}

mod persist;
pub use persist::UartState;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl SerialBackend for Capture {
        fn transmit(&mut self, bytes: &[u8]) {
            self.0.lock().unwrap().extend_from_slice(bytes);
        }
    }

    fn uart() -> (Uart, Capture) {
        let cap = Capture::default();
        (Uart::new(Box::new(cap.clone())), cap)
    }

    #[test]
    fn transmit_goes_to_the_backend() {
        let (mut u, cap) = uart();
        for b in b"hi\n" {
            assert!(u.write(0, 1, u64::from(*b)));
        }
        assert_eq!(cap.0.lock().unwrap().as_slice(), b"hi\n");
        assert_eq!(u.read(5, 1), Some(u64::from(LSR_THRE | LSR_TEMT)));
    }

    #[test]
    fn divisor_latch_and_scratch() {
        let (mut u, cap) = uart();
        u.write(3, 1, 0x83);
        u.write(0, 1, 0x0c);
        u.write(1, 1, 0x01);
        assert_eq!(u.read(0, 1), Some(0x0c));
        assert_eq!(u.read(1, 1), Some(0x01));
        u.write(3, 1, 0x03);
        assert_eq!(u.read(1, 1), Some(0), "IER is separate from DLM");
        assert!(cap.0.lock().unwrap().is_empty(), "DLL writes are not data");
        u.write(7, 1, 0x5a);
        assert_eq!(u.read(7, 1), Some(0x5a));
        assert_eq!(u.read(3, 1), Some(0x03));
    }

    #[test]
    fn receive_interrupt_and_fifo_refill() {
        let (mut u, _) = uart();
        u.write(2, 1, 0x07); // enable and clear FIFOs
        u.push_input(&[b'x'; 20]);
        assert_eq!(u.input_backlog(), 4);
        assert!(!u.irq_level(), "interrupt not enabled yet");
        assert_eq!(u.read(5, 1).unwrap() as u8 & LSR_DR, LSR_DR);
        u.write(1, 1, u64::from(IER_RDI));
        assert!(u.irq_level());
        assert_eq!(u.read(2, 1), Some(u64::from(IIR_RDI | IIR_FIFO_ENABLED)));
        for _ in 0..20 {
            assert_eq!(u.read(0, 1), Some(u64::from(b'x')));
        }
        assert!(!u.irq_level());
        assert_eq!(u.read(2, 1), Some(u64::from(IIR_NO_INT | IIR_FIFO_ENABLED)));
        assert_eq!(u.read(5, 1).unwrap() as u8 & LSR_DR, 0);
    }

    #[test]
    fn fifo_clear_drops_only_the_fifo() {
        let (mut u, _) = uart();
        u.write(2, 1, 0x01);
        u.push_input(b"0123456789abcdefXYZ");
        u.write(2, 1, 0x03);
        assert_eq!(u.read(0, 1), Some(u64::from(b'X')));
    }

    #[test]
    fn thre_interrupt_reasserts_when_enabled_and_clears_on_iir_read() {
        // The sequence Linux's 8250 startup uses to detect UART_BUG_THRE.
        let (mut u, _) = uart();
        u.write(1, 1, u64::from(IER_THRI));
        assert_eq!(u.read(2, 1), Some(u64::from(IIR_THRI)));
        assert_eq!(u.read(2, 1), Some(u64::from(IIR_NO_INT)));
        u.write(1, 1, 0);
        u.write(1, 1, u64::from(IER_THRI));
        assert!(u.irq_level());
        assert_eq!(u.read(2, 1), Some(u64::from(IIR_THRI)));
        u.write(0, 1, u64::from(b'a'));
        assert!(u.irq_level(), "THR empties again after a write");
    }

    #[test]
    fn loopback_and_overrun() {
        let (mut u, cap) = uart();
        u.write(4, 1, u64::from(MCR_LOOP | 0x0b));
        assert_eq!(u.read(6, 1), Some(0x20 | 0x10 | 0x80));
        u.write(1, 1, u64::from(IER_RLSI));
        u.write(0, 1, 0x55);
        u.write(0, 1, 0x66); // FIFO disabled: a one-byte holding register
        assert!(u.irq_level());
        assert_eq!(u.read(2, 1), Some(u64::from(IIR_RLSI)));
        assert_eq!(
            u.read(5, 1).unwrap() as u8 & (LSR_OE | LSR_DR),
            LSR_OE | LSR_DR
        );
        assert_eq!(u.read(5, 1).unwrap() as u8 & LSR_OE, 0);
        assert_eq!(u.read(0, 1), Some(0x55));
        assert!(cap.0.lock().unwrap().is_empty());
        assert_eq!(u.read(SIZE, 1), None);
        assert_eq!(u.read(1, 2), None);
    }
}
