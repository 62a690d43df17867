//! PostgreSQL in a guest driven by the host's own clients, `psql` and `pgbench` (Debian 12's
//! `postgresql-15`), with the check a database's clients rely on: every transaction pgbench saw
//! committed is in the table afterwards.
//!
//! The pgbench script inserts a random 63-bit id per transaction and, only once the commit has
//! returned, appends the id to a file on the host (`\shell`). [`Bench::finish`] then reads the
//! table back and lists every logged id that is missing. Used by the end-to-end tests
//! (`crates/ftvm/tests/debian.rs`) and by `cargo xtask pgbench`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;

/// PostgreSQL's client tools on the host.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The table the script fills.
const TABLE: &str = "ftvm_tx";

/// What went wrong with the database or its clients.
#[derive(Debug, Error)]
pub enum PgError {
    /// A client program could not be run.
    #[error("cannot run {program} (apt-get install postgresql-15): {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// psql reported an error.
    #[error("psql `{sql}` failed: {stderr}")]
    Psql {
        /// The statement.
        sql: String,
        /// What psql said.
        stderr: String,
    },
    /// The server did not answer in time.
    #[error("PostgreSQL did not answer on 127.0.0.1:{port} within {secs} s (last: {last})")]
    NoAnswer {
        /// The port.
        port: u16,
        /// The wait.
        secs: u64,
        /// The last error.
        last: String,
    },
    /// pgbench ran far past its time: a connection hung.
    #[error(
        "pgbench did not end {secs} s after its {run} s run (a connection hung); it said: {stderr}"
    )]
    Hung {
        /// How long past the run it was given.
        secs: u64,
        /// The run's length.
        run: u64,
        /// What it had printed on stderr (progress, client errors).
        stderr: String,
    },
    /// A file of the run could not be written or read.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// `psql` against 127.0.0.1:`port` as `postgres`; its output (tuples only, unaligned).
pub fn psql(port: u16, sql: &str) -> Result<String, PgError> {
    let program = Path::new(PG_BIN).join("psql");
    let out = Command::new(&program)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args(["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-tAq", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| PgError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(PgError::Psql {
            sql: sql.into(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Waits until PostgreSQL answers a query on 127.0.0.1:`port`.
pub fn wait_ready(port: u16, within: Duration) -> Result<(), PgError> {
    let t = Instant::now();
    loop {
        let last = match psql(port, "select 40+2") {
            Ok(s) if s.trim() == "42" => return Ok(()),
            Ok(s) => format!("answered {s:?}"),
            Err(e @ PgError::Spawn { .. }) => return Err(e),
            Err(e) => e.to_string(),
        };
        if t.elapsed() >= within {
            return Err(PgError::NoAnswer {
                port,
                secs: within.as_secs(),
                last,
            });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A pgbench run in progress.
pub struct Bench {
    child: Child,
    port: u16,
    seconds: u64,
    ids: PathBuf,
    started: Instant,
}

/// What a finished run shows.
#[derive(Debug)]
pub struct Report {
    /// pgbench exited with success.
    pub success: bool,
    /// Its standard output (the summary) and error (progress, client errors).
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
    /// Transactions pgbench saw committed (ids in the client-side log).
    pub committed: usize,
    /// Of those, the ones not in the table.
    pub lost: Vec<String>,
    /// Rows in the table.
    pub rows: usize,
    /// pgbench's "number of failed transactions", if it printed one.
    pub failed: Option<u64>,
    /// pgbench's throughput (without initial connection time), transactions per second.
    pub tps: Option<f64>,
    /// pgbench's average latency in ms.
    pub latency_ms: Option<f64>,
    /// How long the run took.
    pub elapsed: Duration,
}

impl Report {
    /// Whether a client reported a lost or reset connection, or aborted.
    pub fn connection_trouble(&self) -> bool {
        let e = self.stderr.to_lowercase();
        e.contains("aborted") || e.contains("connection") || e.contains("server closed")
    }

    /// Every check passed: pgbench succeeded, no transaction failed, none was lost, no client
    /// lost its connection.
    pub fn all_good(&self) -> bool {
        self.success && self.failed == Some(0) && self.lost.is_empty() && !self.connection_trouble()
    }
}

impl Bench {
    /// Creates the table (dropping an old one) and starts pgbench: `clients` connections for
    /// `seconds`, with its files in `dir`.
    pub fn start(port: u16, clients: u32, seconds: u64, dir: &Path) -> Result<Bench, PgError> {
        psql(port, &format!("drop table if exists {TABLE}"))?;
        psql(
            port,
            &format!("create table {TABLE} (id bigint primary key, client int, at timestamptz default now())"),
        )?;
        let file = |path: PathBuf| move |source| PgError::File { path, source };
        std::fs::create_dir_all(dir).map_err(file(dir.into()))?;
        let ids = dir.join("committed-ids");
        let _ = std::fs::remove_file(&ids);
        let script = dir.join("insert.sql");
        std::fs::write(
            &script,
            format!(
                "\\set id random(1, 9223372036854775806)\n\
                 BEGIN;\n\
                 INSERT INTO {TABLE} (id, client) VALUES (:id, :client_id);\n\
                 END;\n\
                 \\shell echo :id >> {}\n",
                ids.display()
            ),
        )
        .map_err(file(script.clone()))?;
        let program = Path::new(PG_BIN).join("pgbench");
        let child = Command::new(&program)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
            .args(["-n", "-c", &clients.to_string(), "-j", "1", "-P", "5"])
            .args(["-T", &seconds.to_string()])
            .arg("-f")
            .arg(&script)
            .arg("postgres")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| PgError::Spawn {
                program: program.display().to_string(),
                source,
            })?;
        Ok(Bench {
            child,
            port,
            seconds,
            ids,
            started: Instant::now(),
        })
    }

    /// When the run started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Waits for pgbench to end, then compares its log with the table.
    pub fn finish(mut self) -> Result<Report, PgError> {
        // pgbench ends its clients' last transactions after -T: a hung connection would keep
        // it forever.
        let grace = Duration::from_secs(180);
        let deadline = self.started + Duration::from_secs(self.seconds) + grace;
        if !crate::wait_or_kill(&mut self.child, deadline) {
            let out = self.child.wait_with_output();
            return Err(PgError::Hung {
                secs: grace.as_secs(),
                run: self.seconds,
                stderr: out
                    .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                    .unwrap_or_default(),
            });
        }
        let out = self
            .child
            .wait_with_output()
            .map_err(|source| PgError::Spawn {
                program: "pgbench".into(),
                source,
            })?;
        let elapsed = self.started.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let committed: Vec<String> = std::fs::read_to_string(&self.ids)
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        let in_table: HashSet<String> = psql(self.port, &format!("select id from {TABLE}"))?
            .lines()
            .map(|l| l.trim().to_string())
            .collect();
        let lost = committed
            .iter()
            .filter(|id| !in_table.contains(*id))
            .cloned()
            .collect();
        Ok(Report {
            success: out.status.success(),
            failed: number_after(&stdout, "number of failed transactions: "),
            tps: number_after(&stdout, "tps = "),
            latency_ms: number_after(&stdout, "latency average = "),
            committed: committed.len(),
            lost,
            rows: in_table.len(),
            stdout,
            stderr,
            elapsed,
        })
    }
}

/// The number right after `prefix` on the first line holding it.
fn number_after<T: std::str::FromStr>(text: &str, prefix: &str) -> Option<T> {
    text.lines().find_map(|l| {
        let (_, rest) = l.split_once(prefix)?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pgbench_summary_numbers() {
        let out = "number of transactions actually processed: 1234\n\
                   number of failed transactions: 0 (0.000%)\n\
                   latency average = 12.345 ms\n\
                   initial connection time = 3.210 ms\n\
                   tps = 321.5 (without initial connection time)\n";
        assert_eq!(
            number_after::<u64>(out, "number of failed transactions: "),
            Some(0)
        );
        assert_eq!(number_after::<f64>(out, "tps = "), Some(321.5));
        assert_eq!(number_after::<f64>(out, "latency average = "), Some(12.345));
        assert_eq!(number_after::<u64>("nothing here", "tps = "), None);
    }

    #[test]
    fn a_lost_transaction_or_a_reset_fails_the_report() {
        let good = Report {
            success: true,
            stdout: String::new(),
            stderr: "progress: 5.0 s, 10.0 tps".into(),
            committed: 3,
            lost: vec![],
            rows: 3,
            failed: Some(0),
            tps: Some(10.0),
            latency_ms: Some(1.0),
            elapsed: Duration::from_secs(1),
        };
        assert!(good.all_good());
        let lost = Report {
            lost: vec!["7".into()],
            ..good
        };
        assert!(!lost.all_good());
        let reset = Report {
            lost: vec![],
            stderr: "client 2 aborted in command 2: server closed the connection unexpectedly"
                .into(),
            ..lost
        };
        assert!(!reset.all_good());
    }
}
