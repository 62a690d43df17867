//! A Prometheus endpoint on each pair member (`--metrics HOST:PORT`, `GET /metrics`): the
//! figures of `ftvm status` as gauges, so that the health of a protected VM can be scraped,
//! graphed and alerted on (is it protected, how far behind is the backup, how much log flows,
//! how long since the peer was heard). `prometheus-client` (the Prometheus project's Rust
//! client) encodes them.
//!
//! **Who may read them**: the endpoint is plain HTTP (what Prometheus scrapes), and every
//! request must carry `Authorization: Bearer TOKEN`, the token derived from the VM's status
//! key, or its console key ([`token`]; `ftvm metrics-token` prints it; Prometheus reads it with
//! `authorization: credentials_file: FILE`); without it: 401 and no data, logged with the
//! peer's address (rate-limited, [`crate::refusals`]). We chose a token that is always
//! required over "127.0.0.1 only by default": the scraper is usually on another host, and a
//! loopback default would only push users to widen the bind and forget the token; a token
//! that is always needed cannot be forgotten. It is derived from the key (with a label of its
//! own), not the key, because it crosses the network in clear: whoever sees it can read these
//! gauges — which cross in clear next to it anyway — and nothing else.
//!
//! **Robustness**: a small server of our own rather than a general one (`tiny_http` started a
//! thread per idle client): at most [`MAX_CLIENTS`] clients at once (more are closed at once),
//! each has [`DEADLINE`] to send a request head of at most [`MAX_HEAD`] bytes and to take the
//! answer, which is written with the same deadline, so a client that says nothing, sends
//! garbage or endless headers, or reads slowly costs a bounded thread for a bounded time and
//! never touches the VM (the gauges are set from the status callback, never blocked by a
//! client).

use crate::auth::{self, Key};
use crate::refusals::{self, Refusals};
use crate::status::Status;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    heartbeats_refused: Gauge,
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
            heartbeats_refused: Gauge::default(),
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
            "How far the backup's execution is behind the primary's (primary: host seconds since it was where the backup is; backup: unreplayed log in guest seconds)",
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
            "heartbeats_refused",
            "Heartbeat datagrams refused: forged, of another session, replayed, reordered or held back",
            m.heartbeats_refused.clone(),
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
        int(&self.heartbeats_refused, s.heartbeats_refused);
        self.failovers.set(i64::from(s.last_failover.is_some()));
    }

    /// The Prometheus text exposition of every gauge.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Serves `GET /metrics` on `addr` from a thread of its own (anything else: 404) to
    /// clients that present one of `tokens` (anything else: 401, no data).
    pub fn serve(self: &Arc<Self>, addr: SocketAddr, tokens: Tokens) -> std::io::Result<()> {
        let listener = TcpListener::bind(addr)?;
        let m = Arc::clone(self);
        let tokens = Arc::new(tokens);
        let log = Arc::new(Refusals::new("metrics", refusals::DEFAULT_INTERVAL));
        let active = Arc::new(AtomicUsize::new(0));
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || loop {
                let (s, peer) = match listener.accept() {
                    Ok(c) => c,
                    Err(_) => {
                        // Out of descriptors, most likely: wait for some to close.
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                if active.load(Ordering::Relaxed) >= MAX_CLIENTS {
                    log.refused(
                        peer,
                        peer.ip(),
                        &format!("{MAX_CLIENTS} clients are being served already"),
                    );
                    continue;
                }
                active.fetch_add(1, Ordering::Relaxed);
                let (m, tokens, log, done) = (
                    Arc::clone(&m),
                    Arc::clone(&tokens),
                    Arc::clone(&log),
                    Arc::clone(&active),
                );
                let spawned = std::thread::Builder::new()
                    .name("metrics-client".into())
                    .spawn(move || {
                        if let Err(why) = m.answer(s, &tokens) {
                            log.refused(peer, peer.ip(), &why);
                        }
                        done.fetch_sub(1, Ordering::Relaxed);
                    });
                if spawned.is_err() {
                    active.fetch_sub(1, Ordering::Relaxed);
                }
            })?;
        Ok(())
    }

    /// Answers one client: reads its request head (at most [`MAX_HEAD`] bytes within
    /// [`DEADLINE`]), then 200 with the gauges, 401 or 404; `Err`: why it was refused.
    fn answer(&self, mut s: TcpStream, tokens: &Tokens) -> Result<(), String> {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .and_then(|()| s.set_write_timeout(Some(DEADLINE)))
            .map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            if head.len() > MAX_HEAD {
                let _ = respond(&mut s, "431 Request Header Fields Too Large", "");
                return Err(format!("a request head over {MAX_HEAD} bytes"));
            }
            if t0.elapsed() > DEADLINE {
                return Err(format!("no complete request within {DEADLINE:?}"));
            }
            match s.read(&mut buf) {
                Ok(0) => return Err("hung up before a complete request".into()),
                Ok(n) => head.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        let head = String::from_utf8_lossy(&head);
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
        let authorized = lines.any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("authorization") && tokens.admits(v)
            })
        });
        if !authorized {
            let _ = respond(&mut s, "401 Unauthorized", "");
            return Err(
                "no valid bearer token (`ftvm metrics-token` gives it from the VM's status or \
                 console key)"
                    .into(),
            );
        }
        if method != "GET" || path.split('?').next() != Some("/metrics") {
            let _ = respond(&mut s, "404 Not Found", "not found: try /metrics\n");
            return Ok(());
        }
        respond(&mut s, "200 OK", &self.render()).map_err(|e| e.to_string())
    }
}

/// Clients served at once; more are closed at once (and logged).
pub const MAX_CLIENTS: usize = 16;
/// Longest request head read.
pub const MAX_HEAD: usize = 8192;
/// Time a client has to send its request (and to read the answer).
pub const DEADLINE: Duration = Duration::from_secs(2);

fn respond(s: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let extra = if status.starts_with("401") {
        "WWW-Authenticate: Bearer realm=\"ftvm\"\r\n"
    } else if status.starts_with("200") {
        "Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n"
    } else {
        ""
    };
    write!(
        s,
        "HTTP/1.0 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()
}

/// The bearer token that opens the metrics endpoint of a VM holding `key` (its status or its
/// console key): `hex(HMAC-SHA256(key, "ftvm-metrics-token"))`. Derived, not the key itself:
/// it travels in clear (Prometheus speaks plain HTTP here), and what it opens — the same gauges
/// that travel in clear next to it — is all it gives; no console, status or channel session.
pub fn token(key: &Key) -> String {
    key.mac(&[b"ftvm-metrics-token"])
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The tokens a metrics endpoint admits (one per key it was given).
#[derive(Clone)]
pub struct Tokens(Vec<String>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} tokens)", self.0.len())
    }
}

impl Tokens {
    /// The tokens of the console endpoint's keys: the operators' and the read-only one.
    pub fn of(keys: &crate::console::Keys) -> Tokens {
        let mut t = vec![token(&keys.operator)];
        t.extend(keys.status.as_ref().map(token));
        Tokens(t)
    }

    /// Whether an `Authorization` header's value carries one of the tokens.
    fn admits(&self, value: &str) -> bool {
        let v = value.trim();
        let Some((scheme, cred)) = v.split_once(' ') else {
            return false;
        };
        scheme.eq_ignore_ascii_case("bearer")
            && self
                .0
                .iter()
                .any(|t| auth::equal(cred.trim().as_bytes(), t.as_bytes()))
    }
}

/// Serves metrics on `addr` (if given) kept up to date by `ep`'s status, to holders of a
/// token of `keys` ([`token`]).
pub fn attach(
    ep: &crate::console::Endpoint,
    addr: Option<SocketAddr>,
    keys: &crate::console::Keys,
) -> Result<(), crate::FtError> {
    let Some(addr) = addr else { return Ok(()) };
    let m = Arc::new(Metrics::new());
    m.serve(addr, Tokens::of(keys))
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

    fn get_with(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(request);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    fn served() -> (SocketAddr, crate::console::Keys) {
        let m = Arc::new(Metrics::new());
        m.update(&Status::new("vm1", Role::Backup, "x".into()));
        let keys = crate::console::Keys {
            operator: Key::random(),
            status: Some(Key::random()),
        };
        // A free port: bind, note it, release (the server binds it next).
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        m.serve(addr, Tokens::of(&keys)).unwrap();
        (addr, keys)
    }

    fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> String {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        get_with(
            addr,
            format!("GET {path} HTTP/1.0\r\nHost: x\r\n{auth}\r\n").as_bytes(),
        )
    }

    #[test]
    fn served_over_http_to_holders_of_a_token_only() {
        let (addr, keys) = served();
        let status = token(keys.status.as_ref().unwrap());
        let operator = token(&keys.operator);
        for t in [&status, &operator] {
            let ok = get(addr, "/metrics", Some(t));
            assert!(ok.starts_with("HTTP/1.0 200"), "{ok}");
            assert!(ok.contains(r#"role="backup""#), "{ok}");
        }
        assert!(get(addr, "/", Some(&status)).starts_with("HTTP/1.0 404"));
        // No token, a wrong one, the key's own bytes, another scheme: 401 and no gauge.
        let wrong = token(&Key::random());
        let raw_key = String::from_utf8_lossy(keys.operator.bytes()).into_owned();
        let basic = format!("Basic {status}");
        for refused in [
            get(addr, "/metrics", None),
            get(addr, "/metrics", Some(&wrong)),
            get(addr, "/metrics", Some(&raw_key)),
            get(addr, "/metrics", Some(&status[..32])),
            get_with(
                addr,
                format!("GET /metrics HTTP/1.0\r\nAuthorization: {basic}\r\n\r\n").as_bytes(),
            ),
        ] {
            assert!(refused.starts_with("HTTP/1.0 401"), "{refused}");
            assert!(!refused.contains("ftvm_"), "{refused}");
        }
    }

    #[test]
    fn garbage_endless_heads_and_idle_clients_cost_a_bounded_time() {
        let (addr, keys) = served();
        let t = token(&keys.operator);
        // Garbage, then a head longer than MAX_HEAD: refused, nothing served.
        let g = get_with(addr, b"\x00\xff garbage\r\n\r\n");
        assert!(g.starts_with("HTTP/1.0 401"), "{g}");
        let long = format!(
            "GET /metrics HTTP/1.0\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD * 4)
        );
        let l = get_with(addr, long.as_bytes());
        assert!(l.is_empty() || l.starts_with("HTTP/1.0 431"), "{l}");
        // More idle clients than it serves at once: the extra ones are closed at once, the
        // others after DEADLINE; then a scraper is served again.
        let idle: Vec<_> = (0..MAX_CLIENTS * 4)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let t0 = Instant::now();
        loop {
            let r = get(addr, "/metrics", Some(&t));
            if r.starts_with("HTTP/1.0 200") {
                break;
            }
            assert!(
                t0.elapsed() < DEADLINE * 3,
                "not served again after the idle clients' deadline: {r:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The idle clients were dropped by the server, not kept.
        for mut s in idle {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut b = [0u8; 1];
            assert!(matches!(s.read(&mut b), Ok(0) | Err(_)));
        }
    }
}
