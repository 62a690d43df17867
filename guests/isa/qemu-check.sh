#!/bin/sh
# Build every ISA test in this directory and run it on the reference machine, QEMU's virt board:
#   qemu-system-riscv64 -M virt -cpu $QEMU_CPU -bios none -nographic -kernel FILE
# with QEMU's optional extensions turned off so that the CPU is RV64GC like ftvm's (QEMU 7.2's
# default rv64 has H, V, Sstc, Svpbmt, Zb*, ... which change CSR behaviour).
# A test passes when QEMU exits with status 0 (sifive,test0 written with 0x5555); on a failure the
# test writes (n << 16) | 0x3333 and QEMU exits with status n & 0xff (255 = outside any case).
#
# Usage: guests/isa/qemu-check.sh [TEST.S|TEST.c ...]    (default: all tests, fp_* included)
set -u
here=$(cd "$(dirname "$0")" && pwd)
out=${TMPDIR:-/tmp}/ftvm-isa-qemu
mkdir -p "$out"

# Tests whose ftvm semantics legitimately differ from QEMU 7.2: name and reason.
ftvm_only() {
  case "$1" in
    rv64a_amo_faults) echo "QEMU 7.2 raises cause 4 (not 6) for a misaligned AMO, 5 (not 7) for an AMO access fault, and fails a misaligned SC silently";;
    vm_ftvm) echo "QEMU 7.2 reports an AMO on an invalid/unmapped page as cause 13, not 15";;
    csr_ftvm) echo "QEMU 7.2 keeps MPP = 2, MPRV after MRET to S, mepc bit 0, has Sstc/Sv57/ASIDs, priority";;
    interrupts_priority) echo "QEMU 7.2 takes simultaneous interrupts lowest cause first, not MEI > MSI > MTI > SEI > SSI > STI";;
    *) return 1;;
  esac
}

QEMU_CPU=rv64,h=false,v=false,sstc=false,svpbmt=false,sscofpmf=false,svinval=false,svnapot=false,zba=false,zbb=false,zbs=false
CC=riscv64-unknown-elf-gcc
CFLAGS="-march=rv64gc -mabi=lp64d -nostdlib -nostartfiles -T $here/link.ld -I $here -O2 -mcmodel=medany -static"

if [ $# -eq 0 ]; then set -- "$here"/*.S "$here"/*.c; fi
pass=0; fail=0; skip=0
for src in "$@"; do
  [ -e "$src" ] || continue
  name=$(basename "$src"); name=${name%.*}
  if reason=$(ftvm_only "$name"); then
    echo "SKIP $name (ftvm-only: $reason)"; skip=$((skip + 1)); continue
  fi
  if ! $CC $CFLAGS -o "$out/$name.elf" "$src" 2>"$out/$name.log"; then
    echo "FAIL $name (does not build, see $out/$name.log)"; fail=$((fail + 1)); continue
  fi
  timeout 20 qemu-system-riscv64 -M virt -cpu "$QEMU_CPU" -bios none -nographic -monitor none -serial stdio \
    -kernel "$out/$name.elf" >"$out/$name.out" 2>&1 </dev/null
  rc=$?
  if [ $rc -eq 0 ]; then echo "PASS $name"; pass=$((pass + 1))
  elif [ $rc -eq 124 ]; then echo "FAIL $name (timeout)"; fail=$((fail + 1))
  else echo "FAIL $name (case $rc) $(head -c 300 "$out/$name.out" | tr '\n' ' ')"; fail=$((fail + 1)); fi
done
echo "qemu: $pass passed, $fail failed, $skip ftvm-only"
[ $fail -eq 0 ]
