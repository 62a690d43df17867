//! A Prometheus endpoint on each pair member (`--metrics HOST:PORT`, `GET /metrics`): the
//! figures of `ftvm status` as gauges, so that the health of a protected VM can be scraped,
//! graphed and alerted on (is it protected, how far behind is the backup, how much log flows,
//! how long since the peer was heard). `prometheus-client` (the Prometheus project's Rust
//! client) encodes them; `tiny_http` serves them on a thread of its own.

use crate::status::Status;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

type Float = Gauge<f64, AtomicU64>;
type Labels = Vec<(String, String)>;

/// The gauges of one process, set from its [`Status`] each time that is published.
pub struct Metrics {
    registry: Registry,
    info: Family<Labels, Gauge>,
    /// The labels `info` carries now (a role change replaces them).
    info_now: Mutex<Labels>,
    protected: Gauge,
    icount: Gauge,
    sent_entries: Gauge,
    sent_bytes: Gauge,
    acked_entries: Gauge,
    acked_bytes: Gauge,
    replayed: Gauge,
    lag: Float,
    slowdown: Float,
    stalls: Gauge,
    bandwidth: Float,
    held: Gauge,
    silence: Float,
    max_gap: Float,
    failovers: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The gauges, registered under the `ftvm_` prefix.
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("ftvm"),
            info: Family::default(),
            info_now: Mutex::new(Vec::new()),
            protected: Gauge::default(),
            icount: Gauge::default(),
            sent_entries: Gauge::default(),
            sent_bytes: Gauge::default(),
            acked_entries: Gauge::default(),
            acked_bytes: Gauge::default(),
            replayed: Gauge::default(),
            lag: Float::default(),
            slowdown: Float::default(),
            stalls: Gauge::default(),
            bandwidth: Float::default(),
            held: Gauge::default(),
            silence: Float::default(),
            max_gap: Float::default(),
            failovers: Gauge::default(),
        };
        let r = &mut m.registry;
        r.register(
            "info",
            "The VM this process runs and its role (the value is always 1)",
            m.info.clone(),
        );
        r.register(
            "protected",
            "1 while a backup keeps up with this primary (a backup reports 1)",
            m.protected.clone(),
        );
        r.register(
            "icount",
            "Instructions executed (primary) or replayed (backup)",
            m.icount.clone(),
        );
        r.register(
            "log_sent_entries",
            "Log entries sent (primary) or received (backup)",
            m.sent_entries.clone(),
        );
        r.register(
            "log_sent_bytes",
            "Log bytes sent (primary) or received (backup)",
            m.sent_bytes.clone(),
        );
        r.register(
            "log_acked_entries",
            "Log entries the backup acknowledged",
            m.acked_entries.clone(),
        );
        r.register(
            "log_acked_bytes",
            "Log bytes the backup acknowledged",
            m.acked_bytes.clone(),
        );
        r.register(
            "log_replayed_icount",
            "The icount the backup has replayed to",
            m.replayed.clone(),
        );
        r.register(
            "lag_seconds",
            "How far the backup's execution is behind the primary's, in guest time",
            m.lag.clone(),
        );
        r.register(
            "slowdown_ratio",
            "How much the primary is slowed down for a lagging backup (0 to 1)",
            m.slowdown.clone(),
        );
        r.register(
            "log_stalls",
            "Times the primary stalled on a full log buffer (1 ms each)",
            m.stalls.clone(),
        );
        r.register(
            "log_bandwidth_bits_per_second",
            "Log bandwidth over the last second",
            m.bandwidth.clone(),
        );
        r.register(
            "output_held_bytes",
            "Guest output held back by the output rule",
            m.held.clone(),
        );
        r.register(
            "peer_silence_seconds",
            "Time since the peer was last heard",
            m.silence.clone(),
        );
        r.register(
            "peer_max_gap_seconds",
            "The longest time the peer went unheard",
            m.max_gap.clone(),
        );
        r.register(
            "failovers",
            "Failovers this process has seen (its peer lost and the arbiter won)",
            m.failovers.clone(),
        );
        m
    }

    /// Sets every gauge from `s`.
    pub fn update(&self, s: &Status) {
        let labels: Labels = vec![
            ("vm".into(), s.vm.clone()),
            ("role".into(), s.role.to_string()),
            ("peer".into(), s.peer.clone()),
        ];
        if let Ok(mut now) = self.info_now.lock() {
            if *now != labels {
                self.info.clear();
                self.info.get_or_create(&labels).set(1);
                *now = labels;
            }
        }
        let int = |g: &Gauge, v: u64| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        self.protected.set(i64::from(s.protected));
        int(&self.icount, s.icount);
        int(&self.sent_entries, s.sent_entries);
        int(&self.sent_bytes, s.sent_bytes);
        int(&self.acked_entries, s.acked_entries);
        int(&self.acked_bytes, s.acked_bytes);
        int(&self.replayed, s.replayed);
        self.lag.set(s.lag.as_secs_f64());
        self.slowdown.set(s.slowdown);
        int(&self.stalls, s.stalls);
        self.bandwidth.set(s.bandwidth_bps);
        int(&self.held, s.held_bytes as u64);
        self.silence.set(s.peer_silence.as_secs_f64());
        self.max_gap.set(s.max_gap.as_secs_f64());
        self.failovers.set(i64::from(s.last_failover.is_some()));
    }

    /// The Prometheus text exposition of every gauge.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Serves `GET /metrics` on `addr` from a thread of its own (anything else: 404).
    pub fn serve(self: &Arc<Self>, addr: SocketAddr) -> std::io::Result<()> {
        let server = tiny_http::Server::http(addr).map_err(std::io::Error::other)?;
        let m = Arc::clone(self);
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for req in server.incoming_requests() {
                    let found = req.method() == &tiny_http::Method::Get
                        && req.url().split('?').next() == Some("/metrics");
                    let resp = if found {
                        let header = tiny_http::Header::from_bytes(
                            &b"Content-Type"[..],
                            &b"application/openmetrics-text; version=1.0.0; charset=utf-8"[..],
                        )
                        .ok();
                        let r = tiny_http::Response::from_string(m.render());
                        match header {
                            Some(h) => r.with_header(h),
                            None => r,
                        }
                    } else {
                        tiny_http::Response::from_string("not found: try /metrics\n")
                            .with_status_code(404)
                    };
                    let _ = req.respond(resp);
                }
            })?;
        Ok(())
    }
}

/// Serves metrics on `addr` (if given) kept up to date by `ep`'s status.
pub fn attach(
    ep: &crate::console::Endpoint,
    addr: Option<SocketAddr>,
) -> Result<(), crate::FtError> {
    let Some(addr) = addr else { return Ok(()) };
    let m = Arc::new(Metrics::new());
    m.serve(addr)
        .map_err(crate::io(format!("cannot serve metrics on {addr}")))?;
    ep.on_status(Box::new(move |s| m.update(s)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Role;
    use std::io::{Read, Write};
    use std::time::Duration;

    #[test]
    fn status_figures_become_gauges() {
        let m = Metrics::new();
        let mut s = Status::new("web", Role::Primary, "10.0.0.2:7100".into());
        s.icount = 1234;
        s.lag = Duration::from_millis(250);
        s.sent_bytes = 99;
        m.update(&s);
        let text = m.render();
        assert!(
            text.contains(r#"ftvm_info{vm="web",role="primary",peer="10.0.0.2:7100"} 1"#),
            "{text}"
        );
        assert!(text.contains("ftvm_protected 1"), "{text}");
        assert!(text.contains("ftvm_icount 1234"), "{text}");
        assert!(text.contains("ftvm_lag_seconds 0.25"), "{text}");
        assert!(text.contains("ftvm_log_sent_bytes 99"), "{text}");
        // A backup that went live: one info line, with the new role.
        s.protected = false;
        s.last_failover = Some("primary lost".into());
        s.role = Role::Primary;
        s.peer = "(none)".into();
        m.update(&s);
        let text = m.render();
        assert_eq!(text.matches("ftvm_info{").count(), 1, "{text}");
        assert!(text.contains(r#"peer="(none)""#), "{text}");
        assert!(text.contains("ftvm_protected 0"), "{text}");
        assert!(text.contains("ftvm_failovers 1"), "{text}");
    }

    #[test]
    fn served_over_http() {
        let m = Arc::new(Metrics::new());
        m.update(&Status::new("vm1", Role::Backup, "x".into()));
        // A free port: bind, note it, release (the server binds it next).
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        m.serve(addr).unwrap();
        let get = |path: &str| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let ok = get("/metrics");
        assert!(ok.starts_with("HTTP/1.0 200"), "{ok}");
        assert!(ok.contains(r#"role="backup""#), "{ok}");
        assert!(get("/").starts_with("HTTP/1.0 404"));
    }
}
