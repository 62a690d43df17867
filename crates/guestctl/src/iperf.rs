//! iperf3 in a guest driven by the host's own `iperf3` client (Debian's `iperf3`), reading its
//! JSON report (`-J`): bytes carried, the receiver's throughput, and the second-by-second
//! intervals, whose longest run of empty seconds is how long the stream stood still (a
//! failover's pause, seen from the client). Used by the end-to-end tests
//! (`crates/ftvm/tests/debian.rs`) and by `cargo xtask iperf3`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;

/// What went wrong with the client.
#[derive(Debug, Error)]
pub enum IperfError {
    /// The client could not be run.
    #[error("cannot run iperf3 (apt-get install iperf3): {0}")]
    Spawn(std::io::Error),
    /// The server did not answer in time.
    #[error("no iperf3 server answered on 127.0.0.1:{port} within {secs} s (last: {last})")]
    NoAnswer {
        /// The port.
        port: u16,
        /// The wait.
        secs: u64,
        /// What the last try said.
        last: String,
    },
    /// The client ran far past its time: the stream hung.
    #[error("iperf3 did not end {grace} s after its {run} s run (the stream hung)")]
    Hung {
        /// How long past the run it was given.
        grace: u64,
        /// The run's length.
        run: u64,
    },
    /// The client's output was not the JSON report it prints with `-J`.
    #[error("iperf3's report is not JSON ({why}); it printed: {text}")]
    Report {
        /// The parse error.
        why: String,
        /// The start of what it printed.
        text: String,
    },
}

/// Which way the bytes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Host to guest (iperf3's default).
    ToGuest,
    /// Guest to host (`-R`).
    FromGuest,
}

/// Waits until an iperf3 server answers on 127.0.0.1:`port` (a one-second test succeeds).
pub fn wait_ready(port: u16, within: Duration) -> Result<(), IperfError> {
    let t = Instant::now();
    loop {
        let out = Command::new("iperf3")
            .args(["-c", "127.0.0.1", "-p", &port.to_string(), "-t", "1"])
            .args(["--connect-timeout", "5000", "-J"])
            .stdin(Stdio::null())
            .output()
            .map_err(IperfError::Spawn)?;
        let last = match Report::parse(out.status.success(), &out.stdout) {
            Ok(r) if r.success => {
                // The server takes a moment after a test before it accepts the next one
                // (behind QEMU's user-mode network, a test started at once was reset).
                std::thread::sleep(Duration::from_secs(2));
                return Ok(());
            }
            Ok(r) => r.error.unwrap_or_else(|| "no error, but no success".into()),
            Err(e) => e.to_string(),
        };
        if t.elapsed() >= within {
            return Err(IperfError::NoAnswer {
                port,
                secs: within.as_secs(),
                last,
            });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A window that lets a stream through a failover at full speed again within a second or two.
///
/// Frames passt sent to the primary that died are lost, and passt recovers by going back:
/// on two duplicate ACKs it sends everything from the last acknowledged byte again. With the
/// guest's autotuned window (megabytes) that is thousands of frames per round, most of them
/// duplicates, at an emulated guest that takes each with interrupts and an ACK of its own: it
/// falls behind for good (about 6,000 frames a second arrived, nearly all duplicates, and the
/// stream moved 0–10 Mbit/s for the rest of a 40 s run). With 256 KiB it recovered in 2 s and
/// went on at 120 Mbit/s (host to guest, `cargo xtask iperf3 --window 256K`).
///
/// For host to guest only: guest to host (`-R`) with the autotuned window carried on through
/// the failover at once (60 Mbit/s in its second, then 117–212), while with `-w 256K` that
/// direction stalled for the rest of the run (cause not found).
pub const FAILOVER_WINDOW: &str = "256K";

/// An iperf3 run in progress.
pub struct Run {
    child: Child,
    seconds: u64,
    started: Instant,
}

impl Run {
    /// Starts a TCP run of `seconds` against 127.0.0.1:`port`, reporting every second, with
    /// the socket buffers (and so the receiver's window) of `window` bytes (iperf3's `-w`, e.g.
    /// [`FAILOVER_WINDOW`]) or the kernels' own autotuning.
    pub fn start(
        port: u16,
        seconds: u64,
        dir: Direction,
        window: Option<&str>,
    ) -> Result<Run, IperfError> {
        let mut c = Command::new("iperf3");
        c.args(["-c", "127.0.0.1", "-p", &port.to_string()])
            .args(["-t", &seconds.to_string(), "-i", "1", "-J"])
            .args(["--connect-timeout", "10000"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if dir == Direction::FromGuest {
            c.arg("-R");
        }
        if let Some(w) = window {
            c.args(["-w", w]);
        }
        let child = c.spawn().map_err(IperfError::Spawn)?;
        Ok(Run {
            child,
            seconds,
            started: Instant::now(),
        })
    }

    /// When the run started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Waits for the client to end and reads its report.
    pub fn finish(mut self) -> Result<Report, IperfError> {
        let grace = Duration::from_secs(120);
        let deadline = self.started + Duration::from_secs(self.seconds) + grace;
        if !crate::wait_or_kill(&mut self.child, deadline) {
            let _ = self.child.wait();
            return Err(IperfError::Hung {
                grace: grace.as_secs(),
                run: self.seconds,
            });
        }
        let out = self.child.wait_with_output().map_err(IperfError::Spawn)?;
        Report::parse(out.status.success(), &out.stdout)
    }
}

/// What a finished run shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The client exited with success and reported no error.
    pub success: bool,
    /// The error iperf3 reported, if any.
    pub error: Option<String>,
    /// Bytes the sender sent.
    pub sent_bytes: u64,
    /// Bytes the receiver received.
    pub received_bytes: u64,
    /// The receiver's average throughput, bits per second.
    pub received_bps: f64,
    /// Bits per second in each reported interval (about a second each).
    pub intervals: Vec<f64>,
    /// TCP retransmissions the sender counted (when the sender is this host).
    pub retransmits: Option<u64>,
}

impl Report {
    /// Reads iperf3's `-J` output.
    pub fn parse(exited_ok: bool, stdout: &[u8]) -> Result<Report, IperfError> {
        let v: serde_json::Value =
            serde_json::from_slice(stdout).map_err(|e| IperfError::Report {
                why: e.to_string(),
                text: String::from_utf8_lossy(&stdout[..stdout.len().min(400)]).into_owned(),
            })?;
        let end = &v["end"];
        let num = |x: &serde_json::Value| x.as_f64().unwrap_or(0.0);
        let error = v["error"].as_str().map(str::to_string);
        let intervals = v["intervals"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| num(&i["sum"]["bits_per_second"]))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Report {
            success: exited_ok && error.is_none(),
            error,
            sent_bytes: num(&end["sum_sent"]["bytes"]) as u64,
            received_bytes: num(&end["sum_received"]["bytes"]) as u64,
            received_bps: num(&end["sum_received"]["bits_per_second"]),
            intervals,
            retransmits: end["sum_sent"]["retransmits"].as_u64(),
        })
    }

    /// The longest run of consecutive intervals that carried (almost) nothing, in intervals
    /// (seconds): how long the stream stood still.
    pub fn longest_stall(&self) -> usize {
        let floor = self.received_bps * 0.01;
        let (mut run, mut best) = (0, 0);
        for &b in &self.intervals {
            run = if b <= floor { run + 1 } else { 0 };
            best = best.max(run);
        }
        best
    }

    /// Whether the stream carried on past second `from`: bytes moved in its last interval and
    /// in at least a third of the intervals from `from` on.
    pub fn carried_on_after(&self, from: usize) -> bool {
        let after = self.intervals.get(from..).unwrap_or(&[]);
        let moving = after.iter().filter(|&&b| b > 0.0).count();
        after.last().is_some_and(|&b| b > 0.0) && moving * 3 >= after.len()
    }

    /// Megabits per second received.
    pub fn mbps(&self) -> f64 {
        self.received_bps / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of iperf3 3.12's `-J` report, cut down to the fields read.
    const GOOD: &str = r#"{"start":{},"intervals":[
        {"sum":{"bits_per_second":8.0e7}},{"sum":{"bits_per_second":0.0}},
        {"sum":{"bits_per_second":0.0}},{"sum":{"bits_per_second":9.0e7}},
        {"sum":{"bits_per_second":8.5e7}}],
      "end":{"sum_sent":{"bytes":30000000,"retransmits":12},
             "sum_received":{"bytes":29000000,"bits_per_second":4.6e7}}}"#;

    #[test]
    fn reads_bytes_throughput_intervals_and_stalls() {
        let r = Report::parse(true, GOOD.as_bytes()).unwrap();
        assert!(r.success);
        assert_eq!(r.sent_bytes, 30_000_000);
        assert_eq!(r.received_bytes, 29_000_000);
        assert_eq!(r.retransmits, Some(12));
        assert!((r.mbps() - 46.0).abs() < 1e-9);
        assert_eq!(r.longest_stall(), 2);
        assert!(
            r.carried_on_after(1),
            "2 of 4 intervals moved, the last one too"
        );
        let mut stopped = r.clone();
        stopped.intervals[4] = 0.0;
        assert!(
            !stopped.carried_on_after(1),
            "the last interval moved nothing"
        );
        assert!(!stopped.carried_on_after(10), "nothing after the end");
    }

    #[test]
    fn an_error_or_a_failed_exit_is_no_success() {
        let e = r#"{"start":{},"intervals":[],"end":{},"error":"unable to connect to server"}"#;
        let r = Report::parse(true, e.as_bytes()).unwrap();
        assert!(!r.success);
        assert_eq!(r.error.as_deref(), Some("unable to connect to server"));
        assert!(!Report::parse(false, GOOD.as_bytes()).unwrap().success);
        let bad = Report::parse(false, b"iperf3: error - bad").unwrap_err();
        assert!(bad.to_string().contains("iperf3: error - bad"), "{bad}");
    }
}
