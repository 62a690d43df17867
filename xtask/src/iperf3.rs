//! `cargo xtask iperf3`: the host's `iperf3` client against the Debian guest's `iperf3 -s`
//! (TCP) through the guest's network, as a user would run it: on the pair with the primary
//! SIGKILLed `--kills` times during the run (the stream must carry on to its end), on one plain
//! VM (`--on alone`) or on QEMU (`--on qemu`), for the ratios in `docs/ft-benchmarks.md`.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use guestctl::iperf::{self, Direction, Run};

use crate::server;

/// Options of `cargo xtask iperf3`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: server::Common,
    /// The run's length.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Guest to host (iperf3's `-R`) instead of host to guest.
    #[arg(long)]
    pub reverse: bool,
    /// iperf3's `-w`: socket buffers, hence the receiver's window (`--window 256K` lets a stream
    /// recover from a failover at once; see guestctl::iperf::FAILOVER_WINDOW). Default: the
    /// kernels' autotuning.
    #[arg(long, value_name = "SIZE")]
    pub window: Option<String>,
}

/// Runs the task.
pub fn main(a: Args) -> Result<()> {
    let b = server::boot(&a.common, "iperf3", 5201)?;
    let t0 = Instant::now();
    eprintln!(
        "xtask iperf3: booting the Debian guest ({:?}); waiting for iperf3 on 127.0.0.1:{}",
        a.common.on, b.port
    );
    iperf::wait_ready(b.port, Duration::from_secs(900))?;
    let dir = if a.reverse {
        Direction::FromGuest
    } else {
        Direction::ToGuest
    };
    eprintln!(
        "xtask iperf3: the server answers after {:.1} s; {dir:?}, {} s",
        t0.elapsed().as_secs_f64(),
        a.seconds
    );
    let run = Run::start(b.port, a.seconds, dir, a.window.as_deref())?;
    let mut failovers = Vec::new();
    if a.common.on == server::On::Ft {
        for k in 1..=a.common.kills {
            let at = Duration::from_secs(a.seconds * u64::from(k) / u64::from(a.common.kills + 1));
            while run.started().elapsed() < at {
                std::thread::sleep(Duration::from_millis(100));
            }
            failovers.push(b.kill_primary(k, a.common.kills)?);
        }
    }
    let r = run.finish()?;
    let per_second: Vec<String> = r
        .intervals
        .iter()
        .map(|b| format!("{:.0}", b / 1e6))
        .collect();
    println!(
        "xtask iperf3: on {:?}, {dir:?}: {:.1} Mbit/s ({} bytes received in {} s); longest stall {} s; {} failover(s); Mbit/s per second: {}",
        a.common.on,
        r.mbps(),
        r.received_bytes,
        a.seconds,
        r.longest_stall(),
        failovers.len(),
        per_second.join(" ")
    );
    if !r.success {
        bail!("iperf3 failed: {}", r.error.unwrap_or_default());
    }
    let last_kill = a.seconds * u64::from(a.common.kills) / u64::from(a.common.kills + 1);
    if !failovers.is_empty() && !r.carried_on_after(last_kill as usize + 2) {
        bail!("the stream did not carry on after the last failover");
    }
    Ok(())
}
