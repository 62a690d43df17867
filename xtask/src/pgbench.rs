//! `cargo xtask pgbench`: PostgreSQL in the Debian guest, driven by the host's own `pgbench`
//! through the guest's network, as a user would run it.
//!
//! `--on ft` (the default) runs `ftvm pair` (passt forwarding a host port to the guest's 5432)
//! and SIGKILLs whichever process is the primary `--kills` times, evenly spread over the run;
//! the pair protects the new primary again by itself after each failover. `--on alone` runs
//! one plain `ftvm run`, `--on qemu` the same guest on `qemu-system-riscv64` (user-mode
//! network), for the ratios in `docs/ft-benchmarks.md`. Every run ends with the check of
//! [`guestctl::pgbench`]: every transaction pgbench saw committed is in the table, none failed,
//! no client lost its connection.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use guestctl::pgbench::{self, Bench};

use crate::server;

/// Options of `cargo xtask pgbench`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: server::Common,
    /// pgbench's run time.
    #[arg(long, default_value_t = 90)]
    pub seconds: u64,
    /// pgbench's client connections.
    #[arg(long, default_value_t = 4)]
    pub clients: u32,
}

/// Runs the task.
pub fn main(a: Args) -> Result<()> {
    let b = server::boot(&a.common, "pgbench", 5432)?;
    let port = b.port;
    let t0 = Instant::now();
    eprintln!("xtask pgbench: booting the Debian guest ({:?}); waiting for PostgreSQL on 127.0.0.1:{port}", a.common.on);
    pgbench::wait_ready(port, Duration::from_secs(900))?;
    eprintln!(
        "xtask pgbench: PostgreSQL answers after {:.1} s; pgbench, {} clients, {} s",
        t0.elapsed().as_secs_f64(),
        a.clients,
        a.seconds
    );
    let bench = Bench::start(port, a.clients, a.seconds, b.work())?;
    let mut failovers = Vec::new();
    if a.common.on == server::On::Ft {
        for k in 1..=a.common.kills {
            let at = Duration::from_secs(a.seconds * u64::from(k) / u64::from(a.common.kills + 1));
            while bench.started().elapsed() < at {
                std::thread::sleep(Duration::from_millis(100));
            }
            failovers.push(b.kill_primary(k, a.common.kills)?);
        }
    }
    let r = bench.finish()?;
    println!("{}", r.stdout.trim());
    let gaps: Vec<String> = failovers
        .iter()
        .map(|d| format!("{:.0} ms", d.as_secs_f64() * 1e3))
        .collect();
    println!(
        "xtask pgbench: on {:?}: {:.1} tps, {:.1} ms average latency; {} transactions committed, {} rows in the table, {} lost; failed: {}; {} failover(s) (kill → the other side primary: {})",
        a.common.on,
        r.tps.unwrap_or(0.0),
        r.latency_ms.unwrap_or(0.0),
        r.committed,
        r.rows,
        r.lost.len(),
        r.failed.map_or("?".into(), |n| n.to_string()),
        failovers.len(),
        if gaps.is_empty() { "none".into() } else { gaps.join(", ") }
    );
    if !r.all_good() {
        bail!(
            "the check failed: pgbench {}; {} committed transactions missing from the table{}",
            if r.success { "succeeded" } else { "failed" },
            r.lost.len(),
            if r.connection_trouble() {
                format!("; a client lost its connection: {}", r.stderr.trim())
            } else {
                String::new()
            }
        );
    }
    println!("xtask pgbench: every committed transaction is in the table; no error, no reset");
    Ok(())
}
