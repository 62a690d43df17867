//! The flattened device tree the board hands to firmware and kernel, shaped like QEMU `virt`'s
//! (`qemu-system-riscv64 -M virt,dumpdtb=…`) minus the devices ftvm does not have (PCI, flash,
//! fw-cfg, RTC, PMU) and minus QEMU's random `rng-seed`, which would break determinism.

use crate::{board, clint, clock, plic, syscon, uart};
use vm_fdt::FdtWriter;

/// The ISA string of every hart. Linux 6.1 reads the single letters and skips the `_z…`
/// extensions it does not know; OpenSBI 1.1 reads the ISA from `misa`.
pub const RISCV_ISA: &str = "rv64imafdc_zicsr_zifencei";
/// The MMU type of every hart.
pub const MMU_TYPE: &str = "riscv,sv48";

/// Errors building the device tree.
#[derive(Debug, thiserror::Error)]
pub enum FdtError {
    /// cannot build the device tree: {0}
    #[error("cannot build the device tree: {0}")]
    Build(#[from] vm_fdt::Error),
}

/// What goes into the device tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdtConfig {
    /// Number of harts.
    pub harts: usize,
    /// RAM base address.
    pub ram_base: u64,
    /// RAM size.
    pub ram_size: u64,
    /// `/chosen/bootargs` (omitted when empty).
    pub bootargs: String,
    /// `/chosen/linux,initrd-start` and `-end`.
    pub initrd: Option<(u64, u64)>,
}

const PHANDLE_PLIC: u32 = 1;
const PHANDLE_TEST: u32 = 2;

fn cpu_phandle(hart: usize) -> u32 {
    3 + 2 * hart as u32
}

fn intc_phandle(hart: usize) -> u32 {
    4 + 2 * hart as u32
}

fn reg(base: u64, size: u64) -> [u64; 2] {
    [base, size]
}

/// Builds the device tree blob.
pub fn build(cfg: &FdtConfig) -> Result<Vec<u8>, FdtError> {
    let mut f = FdtWriter::new()?;
    let root = f.begin_node("")?;
    f.property_u32("#address-cells", 2)?;
    f.property_u32("#size-cells", 2)?;
    f.property_string("compatible", "riscv-virtio")?;
    f.property_string("model", "riscv-virtio,qemu")?;

    let chosen = f.begin_node("chosen")?;
    if !cfg.bootargs.is_empty() {
        f.property_string("bootargs", &cfg.bootargs)?;
    }
    f.property_string("stdout-path", &format!("/soc/serial@{:x}", uart::BASE))?;
    if let Some((start, end)) = cfg.initrd {
        f.property_u64("linux,initrd-start", start)?;
        f.property_u64("linux,initrd-end", end)?;
    }
    f.end_node(chosen)?;

    for (name, value) in [("poweroff", 0x5555), ("reboot", 0x7777)] {
        let n = f.begin_node(name)?;
        f.property_u32("value", value)?;
        f.property_u32("offset", 0)?;
        f.property_u32("regmap", PHANDLE_TEST)?;
        f.property_string("compatible", &format!("syscon-{name}"))?;
        f.end_node(n)?;
    }

    let mem = f.begin_node(&format!("memory@{:x}", cfg.ram_base))?;
    f.property_string("device_type", "memory")?;
    f.property_array_u64("reg", &reg(cfg.ram_base, cfg.ram_size))?;
    f.end_node(mem)?;

    let cpus = f.begin_node("cpus")?;
    f.property_u32("#address-cells", 1)?;
    f.property_u32("#size-cells", 0)?;
    f.property_u32("timebase-frequency", clock::TIMEBASE_HZ as u32)?;
    for h in 0..cfg.harts {
        let cpu = f.begin_node(&format!("cpu@{h}"))?;
        f.property_phandle(cpu_phandle(h))?;
        f.property_string("device_type", "cpu")?;
        f.property_u32("reg", h as u32)?;
        f.property_string("status", "okay")?;
        f.property_string("compatible", "riscv")?;
        f.property_string("riscv,isa", RISCV_ISA)?;
        f.property_string("mmu-type", MMU_TYPE)?;
        let intc = f.begin_node("interrupt-controller")?;
        f.property_u32("#interrupt-cells", 1)?;
        f.property_null("interrupt-controller")?;
        f.property_string("compatible", "riscv,cpu-intc")?;
        f.property_phandle(intc_phandle(h))?;
        f.end_node(intc)?;
        f.end_node(cpu)?;
    }
    let map = f.begin_node("cpu-map")?;
    let cluster = f.begin_node("cluster0")?;
    for h in 0..cfg.harts {
        let core = f.begin_node(&format!("core{h}"))?;
        f.property_u32("cpu", cpu_phandle(h))?;
        f.end_node(core)?;
    }
    f.end_node(cluster)?;
    f.end_node(map)?;
    f.end_node(cpus)?;

    let soc = f.begin_node("soc")?;
    f.property_u32("#address-cells", 2)?;
    f.property_u32("#size-cells", 2)?;
    f.property_string("compatible", "simple-bus")?;
    f.property_null("ranges")?;

    let serial = f.begin_node(&format!("serial@{:x}", uart::BASE))?;
    f.property_u32("interrupts", uart::IRQ)?;
    f.property_u32("interrupt-parent", PHANDLE_PLIC)?;
    f.property_u32("clock-frequency", uart::CLOCK_HZ)?;
    f.property_array_u64("reg", &reg(uart::BASE, uart::SIZE))?;
    f.property_string("compatible", "ns16550a")?;
    f.end_node(serial)?;

    let test = f.begin_node(&format!("test@{:x}", syscon::BASE))?;
    f.property_phandle(PHANDLE_TEST)?;
    f.property_array_u64("reg", &reg(syscon::BASE, syscon::SIZE))?;
    f.property_string_list(
        "compatible",
        vec![
            "sifive,test1".into(),
            "sifive,test0".into(),
            "syscon".into(),
        ],
    )?;
    f.end_node(test)?;

    // Highest slot first, as QEMU lists them: Linux probes in this order.
    for slot in (0..board::VIRTIO_SLOTS).rev() {
        let base = board::virtio_base(slot);
        let n = f.begin_node(&format!("virtio_mmio@{base:x}"))?;
        f.property_u32("interrupts", board::virtio_irq(slot))?;
        f.property_u32("interrupt-parent", PHANDLE_PLIC)?;
        f.property_array_u64("reg", &reg(base, board::VIRTIO_SLOT_SIZE))?;
        f.property_string("compatible", "virtio,mmio")?;
        f.end_node(n)?;
    }

    let mut plic_irqs = Vec::new();
    let mut clint_irqs = Vec::new();
    for h in 0..cfg.harts {
        let intc = intc_phandle(h);
        plic_irqs.extend([
            intc,
            rv64::trap::irq::MEI as u32,
            intc,
            rv64::trap::irq::SEI as u32,
        ]);
        clint_irqs.extend([
            intc,
            rv64::trap::irq::MSI as u32,
            intc,
            rv64::trap::irq::MTI as u32,
        ]);
    }
    let p = f.begin_node(&format!("plic@{:x}", plic::BASE))?;
    f.property_phandle(PHANDLE_PLIC)?;
    f.property_u32("riscv,ndev", plic::NDEV)?;
    f.property_array_u64("reg", &reg(plic::BASE, plic::SIZE))?;
    f.property_array_u32("interrupts-extended", &plic_irqs)?;
    f.property_null("interrupt-controller")?;
    f.property_string_list(
        "compatible",
        vec!["sifive,plic-1.0.0".into(), "riscv,plic0".into()],
    )?;
    f.property_u32("#address-cells", 0)?;
    f.property_u32("#interrupt-cells", 1)?;
    f.end_node(p)?;

    let c = f.begin_node(&format!("clint@{:x}", clint::BASE))?;
    f.property_array_u32("interrupts-extended", &clint_irqs)?;
    f.property_array_u64("reg", &reg(clint::BASE, clint::SIZE))?;
    f.property_string_list(
        "compatible",
        vec!["sifive,clint0".into(), "riscv,clint0".into()],
    )?;
    f.end_node(c)?;

    f.end_node(soc)?;
    f.end_node(root)?;
    Ok(f.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> FdtConfig {
        FdtConfig {
            harts: 2,
            ram_base: 0x8000_0000,
            ram_size: 256 << 20,
            bootargs: "console=ttyS0 earlycon".into(),
            initrd: Some((0x8820_0000, 0x8830_0000)),
        }
    }

    #[test]
    fn parses_back() {
        let blob = build(&config()).unwrap();
        let fdt = fdt::Fdt::new(&blob).unwrap();
        assert_eq!(fdt.root().compatible().first(), "riscv-virtio");
        let chosen = fdt.chosen();
        assert_eq!(chosen.bootargs(), Some("console=ttyS0 earlycon"));
        assert_eq!(chosen.stdout().map(|n| n.name), Some("serial@10000000"));
        let initrd_start = fdt
            .find_node("/chosen")
            .unwrap()
            .property("linux,initrd-start")
            .unwrap();
        assert_eq!(initrd_start.value, 0x8820_0000u64.to_be_bytes());
        let mem = fdt.memory().regions().next().unwrap();
        assert_eq!(mem.starting_address as u64, 0x8000_0000);
        assert_eq!(mem.size, Some(256 << 20));

        let cpus: Vec<_> = fdt.cpus().collect();
        assert_eq!(cpus.len(), 2);
        for (i, cpu) in cpus.iter().enumerate() {
            assert_eq!(cpu.ids().first(), i);
            assert_eq!(cpu.timebase_frequency(), 10_000_000);
            assert_eq!(
                cpu.property("riscv,isa").and_then(|p| p.as_str()),
                Some(RISCV_ISA)
            );
            assert_eq!(
                cpu.property("mmu-type").and_then(|p| p.as_str()),
                Some(MMU_TYPE)
            );
        }

        let uart = fdt.find_compatible(&["ns16550a"]).unwrap();
        assert_eq!(
            uart.reg().unwrap().next().unwrap().starting_address as u64,
            uart::BASE
        );
        assert_eq!(uart.interrupts().unwrap().collect::<Vec<_>>(), vec![10]);
        assert_eq!(uart.interrupt_parent().unwrap().name, "plic@c000000");
        assert_eq!(
            uart.property("clock-frequency").unwrap().as_usize(),
            Some(3_686_400)
        );

        let plic = fdt.find_compatible(&["riscv,plic0"]).unwrap();
        assert_eq!(plic.property("riscv,ndev").unwrap().as_usize(), Some(96));
        let ie = plic.property("interrupts-extended").unwrap().value;
        assert_eq!(
            ie.len(),
            2 * 4 * 4,
            "two contexts per hart, two cells per context"
        );
        let clint = fdt.find_compatible(&["riscv,clint0"]).unwrap();
        assert_eq!(clint.reg().unwrap().next().unwrap().size, Some(0x10000));

        let slots: Vec<_> = fdt
            .all_nodes()
            .filter(|n| {
                n.compatible()
                    .is_some_and(|c| c.all().any(|s| s == "virtio,mmio"))
            })
            .map(|n| {
                let r = n.reg().unwrap().next().unwrap();
                (
                    r.starting_address as u64,
                    n.interrupts().unwrap().next().unwrap(),
                )
            })
            .collect();
        assert_eq!(slots.len(), 8);
        assert!(slots.contains(&(0x1000_1000, 1)));
        assert!(slots.contains(&(0x1000_8000, 8)));

        let test = fdt.find_compatible(&["sifive,test0"]).unwrap();
        let poweroff = fdt.find_compatible(&["syscon-poweroff"]).unwrap();
        let regmap = poweroff.property("regmap").unwrap().as_usize().unwrap() as u32;
        assert_eq!(fdt.find_phandle(regmap).unwrap().name, test.name);
        assert_eq!(poweroff.property("value").unwrap().as_usize(), Some(0x5555));
    }

    #[test]
    fn no_bootargs_no_initrd() {
        let cfg = FdtConfig {
            bootargs: String::new(),
            initrd: None,
            harts: 1,
            ..config()
        };
        let blob = build(&cfg).unwrap();
        let fdt = fdt::Fdt::new(&blob).unwrap();
        assert_eq!(fdt.chosen().bootargs(), None);
        assert!(fdt
            .find_node("/chosen")
            .unwrap()
            .property("linux,initrd-start")
            .is_none());
        assert_eq!(fdt.cpus().count(), 1);
    }
}
