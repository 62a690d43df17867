//! Fuzzes the virtqueue and descriptor-chain parser through whole devices: the input sets up
//! one split ring per queue and fills guest RAM; the device must never panic, whatever it finds.
//!
//! Input layout: `[device, log2 queue size, desc page, avail page, used page, notify mask,
//! RAM image...]`. Pages are 256-byte units from the RAM base; queue n's areas are moved up by
//! n * 0x400. Device: bits 1..2 choose block / rng / console, bit 0 makes the disk read-only.
//! Run with `cargo +nightly fuzz run virtqueue` from `crates/machine/fuzz`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use machine::virtio::block::MemBackend;
use machine::virtio::{NullConsole, VirtioMmio};
use rv64::Ram;

const BASE: u64 = 0x8000_0000;
const RAM_SIZE: usize = 0x1_0000;

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let (head, image) = data.split_at(6);
    let mut ram = Ram::new(BASE, RAM_SIZE);
    ram.write(BASE, &image[..image.len().min(RAM_SIZE)])
        .unwrap();
    let mut dev = match (head[0] >> 1) % 3 {
        0 => VirtioMmio::block_with_backend(
            Box::new(MemBackend {
                data: vec![0x5a; 64 * 512],
                flushes: 0,
            }),
            head[0] & 1 != 0,
        ),
        1 => VirtioMmio::rng(Box::new(Zeros)),
        _ => VirtioMmio::console(Box::new(NullConsole)),
    };
    let w = |dev: &mut VirtioMmio, off: u64, v: u64| assert!(dev.write(off, 4, v));
    w(&mut dev, 0x070, 3);
    w(&mut dev, 0x024, 1);
    w(&mut dev, 0x020, 1); // VIRTIO_F_VERSION_1
    w(&mut dev, 0x070, 11);
    for n in 0..2u64 {
        w(&mut dev, 0x030, n);
        w(&mut dev, 0x038, 1 << (head[1] % 10));
        for (i, page) in head[2..5].iter().enumerate() {
            let addr = BASE + u64::from(*page) * 0x100 + n * 0x400;
            w(&mut dev, 0x080 + 0x10 * i as u64, addr & 0xffff_ffff);
            w(&mut dev, 0x084 + 0x10 * i as u64, addr >> 32);
        }
        w(&mut dev, 0x044, 1);
    }
    w(&mut dev, 0x070, 15);
    for n in 0..2u64 {
        if head[5] & (1 << n) != 0 {
            w(&mut dev, 0x050, n);
        }
    }
    dev.process(&mut ram);
    dev.process(&mut ram);
    let _ = dev.irq_level();
});

struct Zeros;

impl machine::virtio::EntropyBackend for Zeros {
    fn fill(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        buf.fill(0);
        Ok(())
    }
}
