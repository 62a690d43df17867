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
//! What the keys mean (claims, records) and how compare-and-swap is phrased stays with the
//! callers; this crate only carries the calls.

use std::future::Future;
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
        let opts = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout);
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
