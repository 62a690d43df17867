use machine::virtio::{NullConsole, OsEntropy};
use machine::{Backends, Firmware, Machine, MachineConfig, Stop, DriveConfig};
use std::sync::{Arc, Mutex};
#[derive(Clone, Default)]
struct Cap(Arc<Mutex<Vec<u8>>>);
impl machine::SerialBackend for Cap { fn transmit(&mut self, b: &[u8]) { self.0.lock().unwrap().extend_from_slice(b); } }
#[test]
fn probe() {
    let g = std::env::var("G").unwrap();
    let cfg = MachineConfig {
        bios: Firmware::File("/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_jump.bin".into()),
        kernel: Some(format!("{g}/Image").into()),
        initrd: Some(format!("{g}/initramfs.cpio.gz").into()),
        append: "console=ttyS0".into(),
        drives: vec![DriveConfig { path: "/tmp/bk/disk.img".into(), readonly: false }],
        ..MachineConfig::default()
    };
    let cap = Cap::default();
    let b = Backends { serial: Box::new(cap.clone()), console: Box::new(NullConsole), entropy: Box::new(OsEntropy::default()) };
    let mut m = Machine::new(&cfg, b).unwrap();
    let mut sent = 0;
    let mut last_len = 0; let mut stuck = 0u64;
    let mut idles = 0u64; let mut hist = std::collections::BTreeMap::new();
    loop {
        let s = m.run(m.icount() + 1_000_000);
        if let Stop::Idle { wake } = s { idles += 1; m.skip_to(wake.unwrap_or(m.icount() + 1_000_000)); }
        if let Stop::Power(p) = s { eprintln!("power {p:?}"); break; }
        let out = String::from_utf8_lossy(&cap.0.lock().unwrap()).into_owned();
        if sent == 0 && out.contains("ftvm-guest: ready") { m.console_input(b"cat /proc/cpuinfo\n"); sent = 1; eprintln!("ready at {} idles {idles}", m.icount()); }
        if out.len() != last_len { last_len = out.len(); stuck = 0; } else { stuck += 1; }
        if sent == 1 && stuck > 50 { *hist.entry(m.harts()[0].pc).or_insert(0u32) += 1; }
        if sent == 1 && stuck > 50 && stuck % 500 == 0 { let c = &m.harts()[0].csr; eprintln!("scause {:#x} sepc {:#x} mcause {:#x} mepc {:#x} mip {:#x} mie {:#x} mstatus {:#x} mideleg {:#x} mtimecmp-ish {:?} time {}", c.scause, c.sepc, c.mcause, c.mepc, c.mip, c.mie, c.mstatus, c.mideleg, m.board().clint().save(), machine::clock::mtime_at(m.icount())); }
        if sent == 1 && stuck > 3000 { break; }
    }
    let out = String::from_utf8_lossy(&cap.0.lock().unwrap()).into_owned();
    eprintln!("---tail---\n{}\n---", &out[out.len().saturating_sub(300)..]);
    eprintln!("icount {} idles {idles} harts {:?}", m.icount(), m.harts());
    let b = m.board();
    eprintln!("uart irq {} plic {:?}", b.uart().irq_level(), b.plic().save());
    eprintln!("uart {:?}", b.uart().save());
    for (i, s) in b.slots().iter().enumerate() { eprintln!("slot {i}: {s:?}"); }
    let mut v: Vec<_> = hist.into_iter().collect(); v.sort_by_key(|x| std::cmp::Reverse(x.1));
    for (pc, n) in v.iter().take(12) { eprintln!("{pc:#x} {n}"); }
}
