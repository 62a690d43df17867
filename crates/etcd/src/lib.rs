//! The one etcd client of ftvm, shared by the arbiter (`crates/arbiter`) and the cluster store
//! (`crates/cluster`): a blocking API over `etcd-client`, whose calls must never hang a VM's
//! process or an agent.
//!
//! - **Its own runtime.** The client runs on a one-thread runtime this value owns, so callers
//!   need no async runtime; called from inside one, a call is an error
//!   ([`EtcdError::InsideAsyncRuntime`]), not a panic. Dropping it shuts the runtime down
//!   without waiting.
//! - **Bounded.** Connecting and every [`Etcd::block`] call are bounded as a whole by the
//!   timeout; an etcd that does not answer is [`EtcdError::Unreachable`], never a hang.
//! - **Two kinds of failure.** "Could not reach etcd" (transport errors, `Unavailable`,
//!   `DeadlineExceeded`, `Cancelled`, the timeout) is told apart from "etcd said no"
//!   ([`EtcdError::Refused`]), because callers retry the first and report the second.
//!
//! - **Secured when asked.** An endpoint list may carry options after `?`
//!   ([`split_options`]): `ca=FILE` (the CA that signed etcd's certificate; needed with
//!   `https://`), `cert=FILE&key=FILE` (our client certificate, for an etcd started with
//!   `--client-cert-auth`), `user=NAME&password-file=FILE` (etcd's own authentication). TLS is
//!   rustls (through tonic, with ring), so nothing of the store or the arbiter crosses the
//!   network in clear and only holders of a certificate signed by the cluster's CA get in.
//!
//! What the keys mean (claims, records) and how compare-and-swap is phrased stays with the
//! callers; this crate only carries the calls.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

pub use etcd_client;
use etcd_client::{Client, ConnectOptions};
use tokio::runtime::{Handle, Runtime};

/// Why an etcd call did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// etcd could not be reached, or did not answer within the bound.
    #[error(
        "etcd at {endpoints} did not answer within {timeout:?} while {action}{}",
        suffix(detail)
    )]
    Unreachable {
        /// The endpoints, comma-separated.
        endpoints: String,
        /// The bound the call had.
        timeout: Duration,
        /// What was being done.
        action: &'static str,
        /// What the client reported, if it failed before the deadline.
        detail: String,
    },
    /// etcd answered with an error.
    #[error("etcd at {endpoints} refused {action}: {detail}")]
    Refused {
        /// The endpoints, comma-separated.
        endpoints: String,
        /// What was being done.
        action: &'static str,
        /// What etcd or the client reported.
        detail: String,
    },
    /// A blocking call from inside an async runtime (it would deadlock or panic).
    #[error("a blocking etcd call was made from inside an async runtime")]
    InsideAsyncRuntime,
    /// The client's runtime could not be started.
    #[error("cannot start the etcd client's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The TLS or login settings are wrong (a file missing, options that do not go together).
    #[error("etcd settings: {0}")]
    Config(String),
}

/// How to reach etcd securely: TLS with the server checked against a CA and our client
/// certificate, and etcd's own user and password.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    /// The CA certificate (PEM) etcd's server certificate must chain to.
    pub ca: Option<PathBuf>,
    /// Our client certificate (PEM).
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
    /// etcd user name.
    pub user: Option<String>,
    /// A file holding that user's password.
    pub password_file: Option<PathBuf>,
}

/// Splits `URL[,URL...][?ca=FILE&cert=FILE&key=FILE&user=NAME&password-file=FILE]` into the
/// endpoint list and the [`Security`] options, checking that they go together: `https://`
/// endpoints need `ca`, `cert` and `key` come together, `user` and `password-file` too, and
/// TLS options with `http://` endpoints are refused (they would be silently unused).
pub fn split_options(spec: &str) -> Result<(&str, Security), String> {
    let Some((list, opts)) = spec.split_once('?') else {
        if spec.contains("https://") {
            return Err("https:// endpoints need ?ca=FILE (the CA of etcd's certificate)".into());
        }
        return Ok((spec, Security::default()));
    };
    let mut s = Security::default();
    for kv in opts.split('&') {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(format!("option {kv:?} is not NAME=VALUE"));
        };
        if v.is_empty() {
            return Err(format!("option {k} has no value"));
        }
        match k {
            "ca" => s.ca = Some(v.into()),
            "cert" => s.cert = Some(v.into()),
            "key" => s.key = Some(v.into()),
            "user" => s.user = Some(v.into()),
            "password-file" => s.password_file = Some(v.into()),
            _ => {
                return Err(format!(
                    "unknown option {k:?} (ca, cert, key, user, password-file)"
                ))
            }
        }
    }
    let tls = s.ca.is_some() || s.cert.is_some();
    let https = list.split(',').all(|e| e.starts_with("https://"));
    if tls && !https {
        return Err("ca/cert/key need https:// endpoints (every one of them)".into());
    }
    if https && s.ca.is_none() {
        return Err("https:// endpoints need ca=FILE (the CA of etcd's certificate)".into());
    }
    if s.cert.is_some() != s.key.is_some() {
        return Err("cert=FILE and key=FILE go together".into());
    }
    if s.user.is_some() != s.password_file.is_some() {
        return Err("user=NAME and password-file=FILE go together".into());
    }
    Ok((list, s))
}

fn read(what: &str, f: &std::path::Path) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(f)
        .map_err(|e| EtcdError::Config(format!("cannot read the {what} {}: {e}", f.display())))
}

impl Security {
    /// These settings on `opts`.
    fn apply(&self, mut opts: ConnectOptions) -> Result<ConnectOptions, EtcdError> {
        if let Some(ca) = &self.ca {
            let mut tls = etcd_client::TlsOptions::new().ca_certificate(
                etcd_client::Certificate::from_pem(read("CA certificate", ca)?),
            );
            if let (Some(c), Some(k)) = (&self.cert, &self.key) {
                tls = tls.identity(etcd_client::Identity::from_pem(
                    read("client certificate", c)?,
                    read("client key", k)?,
                ));
            }
            opts = opts.with_tls(tls);
        }
        if let (Some(u), Some(p)) = (&self.user, &self.password_file) {
            let pw = String::from_utf8(read("password file", p)?).map_err(|_| {
                EtcdError::Config(format!("the password file {} is not text", p.display()))
            })?;
            opts = opts.with_user(u.clone(), pw.trim_end_matches(['\n', '\r']).to_owned());
        }
        Ok(opts)
    }
}

fn suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

/// A connected etcd client with its runtime and its bound.
pub struct Etcd {
    /// Always `Some` until drop.
    runtime: Option<Runtime>,
    client: Client,
    endpoints: String,
    timeout: Duration,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.endpoints)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Etcd {
    /// Connects to etcd at `endpoints` (such as "http://127.0.0.1:2379") within `timeout`; the
    /// runtime's thread is called `thread` (seen in `top -H`).
    pub fn connect(
        endpoints: &[String],
        timeout: Duration,
        thread: &str,
    ) -> Result<Etcd, EtcdError> {
        Self::connect_with(endpoints, &Security::default(), timeout, thread)
    }

    /// [`Etcd::connect`] with TLS and login settings.
    pub fn connect_with(
        endpoints: &[String],
        security: &Security,
        timeout: Duration,
        thread: &str,
    ) -> Result<Etcd, EtcdError> {
        if Handle::try_current().is_ok() {
            return Err(EtcdError::InsideAsyncRuntime);
        }
        let joined = endpoints.join(",");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(thread)
            .enable_all()
            .build()
            .map_err(EtcdError::Runtime)?;
        let opts = security.apply(
            ConnectOptions::new()
                .with_connect_timeout(timeout)
                .with_timeout(timeout),
        )?;
        let r = runtime.block_on(async {
            tokio::time::timeout(timeout, Client::connect(endpoints, Some(opts))).await
        });
        let unreachable = |detail: String| EtcdError::Unreachable {
            endpoints: joined.clone(),
            timeout,
            action: "connecting",
            detail,
        };
        let client = match r {
            Err(_) => return Err(unreachable(String::new())),
            Ok(Err(e)) => return Err(classify(&joined, timeout, "connecting", e)),
            Ok(Ok(c)) => c,
        };
        Ok(Etcd {
            runtime: Some(runtime),
            client,
            endpoints: joined,
            timeout,
        })
    }

    /// A handle to the client for one call (clones share the connection).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The endpoints, comma-separated.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// The bound of each call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sorts a client error of `action` into unreachable and refused.
    pub fn error(&self, action: &'static str, e: etcd_client::Error) -> EtcdError {
        classify(&self.endpoints, self.timeout, action, e)
    }

    /// The error of an `action` that got no answer.
    pub fn unreachable(&self, action: &'static str, detail: String) -> EtcdError {
        EtcdError::Unreachable {
            endpoints: self.endpoints.clone(),
            timeout: self.timeout,
            action,
            detail,
        }
    }

    /// Runs `work` on the client's runtime, bounded as a whole by the timeout; its own errors
    /// pass through, the timeout and a shut-down or nested runtime become `E` from
    /// [`EtcdError`].
    pub fn block<T, E: From<EtcdError>>(
        &self,
        action: &'static str,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        if Handle::try_current().is_ok() {
            return Err(EtcdError::InsideAsyncRuntime.into());
        }
        let Some(rt) = &self.runtime else {
            return Err(self.unreachable(action, "shut down".into()).into());
        };
        rt.block_on(async { tokio::time::timeout(self.timeout, work).await })
            .map_err(|_| E::from(self.unreachable(action, String::new())))?
    }

    /// Starts `task` on the client's runtime (a lease's keep-alive); it runs until aborted or
    /// until this value drops.
    pub fn spawn<F>(&self, task: F) -> Option<tokio::task::JoinHandle<()>>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.runtime.as_ref().map(|rt| rt.spawn(task))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Whether a client error means etcd could not be reached (as opposed to answering no).
pub fn is_unreachable(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match e {
        E::TransportError(_) | E::IoError(_) | E::EndpointError(_) => true,
        E::GRpcStatus(s) => {
            matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ) || (s.code() == tonic::Code::Unknown && caused_by_the_connection(s))
        }
        _ => false,
    }
}

/// Whether a status with no gRPC meaning (`Unknown`) came from the connection itself: a
/// request on a connection the server reset (etcd killed mid-call) surfaces as `Unknown`,
/// "transport error", with the I/O error somewhere in its sources.
fn caused_by_the_connection(s: &tonic::Status) -> bool {
    let mut cause = std::error::Error::source(s);
    while let Some(c) = cause {
        if c.is::<std::io::Error>() || c.to_string().contains("transport error") {
            return true;
        }
        cause = c.source();
    }
    s.message() == "transport error"
}

fn classify(
    endpoints: &str,
    timeout: Duration,
    action: &'static str,
    e: etcd_client::Error,
) -> EtcdError {
    if is_unreachable(&e) {
        EtcdError::Unreachable {
            endpoints: endpoints.to_owned(),
            timeout,
            action,
            detail: e.to_string(),
        }
    } else {
        EtcdError::Refused {
            endpoints: endpoints.to_owned(),
            action,
            detail: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_sorted_into_unreachable_and_refused() {
        let down = etcd_client::Error::GRpcStatus(tonic::Status::unavailable("down"));
        assert!(is_unreachable(&down));
        let no = etcd_client::Error::GRpcStatus(tonic::Status::permission_denied("no"));
        assert!(!is_unreachable(&no));
        // etcd killed mid-call: `Unknown`, "transport error", a reset connection underneath.
        let mut reset = tonic::Status::unknown("transport error");
        reset.set_source(std::sync::Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert!(is_unreachable(&etcd_client::Error::GRpcStatus(reset)));
        let odd = tonic::Status::unknown("the server said something odd");
        assert!(!is_unreachable(&etcd_client::Error::GRpcStatus(odd)));
        let e = classify("http://x:1", Duration::from_secs(1), "reading", no);
        assert!(matches!(e, EtcdError::Refused { .. }), "{e}");
        assert!(e.to_string().contains("refused reading"), "{e}");
    }

    #[test]
    fn a_closed_port_fails_within_the_bound() {
        let t0 = std::time::Instant::now();
        let r = Etcd::connect(
            &["http://127.0.0.1:9".to_owned()],
            Duration::from_millis(800),
            "etcd-test",
        );
        match r {
            Err(e) => assert!(matches!(e, EtcdError::Unreachable { .. }), "{e}"),
            // The client may connect lazily: then the first call fails, within the bound.
            Ok(c) => {
                let mut k = c.client();
                let e = c
                    .block(
                        "reading",
                        async move { k.get("x", None).await.map_err(c_err) },
                    )
                    .unwrap_err();
                assert!(matches!(e, EtcdError::Unreachable { .. }), "{e}");
            }
        }
        assert!(
            t0.elapsed() < Duration::from_millis(2500),
            "{:?}",
            t0.elapsed()
        );
    }

    fn c_err(e: etcd_client::Error) -> EtcdError {
        classify(
            "http://127.0.0.1:9",
            Duration::from_millis(800),
            "reading",
            e,
        )
    }

    #[test]
    fn calls_from_inside_an_async_runtime_are_errors_not_panics() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let r = rt.block_on(async {
            Etcd::connect(
                &["http://127.0.0.1:9".to_owned()],
                Duration::from_secs(1),
                "t",
            )
        });
        assert!(matches!(r, Err(EtcdError::InsideAsyncRuntime)));
    }
}
