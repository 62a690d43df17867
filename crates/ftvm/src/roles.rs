//! `ftvm primary` and `ftvm backup`: one side of a fault-tolerant pair as a process (see
//! `crates/ft`), from the machine flags of `ftvm run` and the pair flags of `ft_cmd`.
//!
//! Exit codes: 0 when the guest or an operator powered the VM off, 2 on errors of input or
//! setup, 3 when this side stopped itself (it lost the arbiter, or the arbiter was unreachable).

use crate::ft_cmd::{addr, exit, metrics_addr, pair_config, NetArgs, PairArgs};
use crate::run::VmArgs;
use ft::backup::BackupConfig;
use ft::primary::PrimaryConfig;
use std::time::Duration;

/// Options of `ftvm primary`.
#[derive(clap::Args, Debug)]
pub struct PrimaryArgs {
    /// The machine.
    #[command(flatten)]
    pub vm: VmArgs,
    /// The network card.
    #[command(flatten)]
    pub net: NetArgs,
    /// The pair.
    #[command(flatten)]
    pub pair: PairArgs,
    /// The backup's channel address (its --listen).
    #[arg(long, value_name = "HOST:PORT")]
    pub peer: String,
    /// Where console clients and `ftvm status` reach this side.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7101")]
    pub console: String,
    /// How long to keep trying to reach the backup at start, in seconds.
    #[arg(long, value_name = "S", default_value_t = 30)]
    pub connect_timeout: u64,
    /// Serve Prometheus metrics (the figures of `ftvm status`) at http://HOST:PORT/metrics.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics: Option<String>,
}

/// Options of `ftvm backup`.
#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    /// The machine (its shape and state come from the primary; disks are the host's own).
    #[command(flatten)]
    pub vm: VmArgs,
    /// The network card.
    #[command(flatten)]
    pub net: NetArgs,
    /// The pair.
    #[command(flatten)]
    pub pair: PairArgs,
    /// Where the primary connects (TCP) and heartbeats arrive (UDP, same port).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7100")]
    pub listen: String,
    /// Where console clients and `ftvm status` reach this side (console once live).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7102")]
    pub console: String,
    /// Serve Prometheus metrics (the figures of `ftvm status`) at http://HOST:PORT/metrics.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics: Option<String>,
}

/// `ftvm primary`.
pub fn primary(a: PrimaryArgs) -> i32 {
    exit(
        "primary",
        (|| {
            a.pair.init_logging();
            let console = addr(&a.console, "--console")?;
            let pc = PrimaryConfig {
                backup: addr(&a.peer, "--peer")?,
                console,
                connect_for: Duration::from_secs(a.connect_timeout),
                netdev: a.net.netdev.clone(),
                disk_reads_own: a.pair.disk_reads_own()?,
            };
            let mut cfg = pair_config(&a.pair, format!("primary@{console}"))?;
            cfg.metrics = metrics_addr(&a.metrics)?;
            let mut mcfg = a.vm.config();
            a.net.apply(&mut mcfg);
            Ok(ft::primary::run(&mcfg, &pc, cfg)?)
        })(),
    )
}

/// `ftvm backup`.
pub fn backup(a: BackupArgs) -> i32 {
    exit(
        "backup",
        (|| {
            a.pair.init_logging();
            let bc = BackupConfig {
                listen: addr(&a.listen, "--listen")?,
                console: addr(&a.console, "--console")?,
                netdev: a.net.netdev.clone(),
                disk_reads_own: a.pair.disk_reads_own()?,
            };
            let mut cfg = pair_config(&a.pair, format!("backup@{}", bc.console))?;
            cfg.metrics = metrics_addr(&a.metrics)?;
            Ok(ft::backup::run(&a.vm.config(), &bc, cfg)?)
        })(),
    )
}
