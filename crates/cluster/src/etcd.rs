//! The etcd store: a record is the key `/ftvm/cluster/KEY`; its version is etcd's
//! `mod_revision`, and compare-and-swap is a transaction comparing it (a new key: its
//! `create_revision` is 0). The client is crate `etcd`'s (shared with the arbiter): a
//! one-thread runtime of its own, so the API is blocking; every call is bounded by the timeout,
//! and an unreachable etcd is [`Error::Unreachable`], never a hang.

use crate::{validate_key, Error, Raw, Result, Store};
use etcd::etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use etcd::{Etcd, EtcdError};
use std::time::Duration;

/// The bound on each etcd call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

const PREFIX: &str = "/ftvm/cluster/";

/// A store in etcd.
#[derive(Debug)]
pub struct EtcdStore {
    /// The client (crate `etcd`: its own runtime, bounded calls).
    etcd: Etcd,
}

impl From<EtcdError> for Error {
    fn from(e: EtcdError) -> Error {
        match e {
            EtcdError::Unreachable {
                endpoints,
                action,
                detail,
                timeout,
            } => Error::Unreachable {
                endpoints,
                action,
                detail: if detail.is_empty() {
                    format!("no answer within {timeout:?}")
                } else {
                    detail
                },
            },
            EtcdError::Refused {
                endpoints,
                action,
                detail,
            } => Error::Etcd {
                endpoints,
                action,
                detail,
            },
            EtcdError::Config(detail) => Error::Etcd {
                endpoints: String::new(),
                action: "connecting",
                detail,
            },
            e @ (EtcdError::InsideAsyncRuntime | EtcdError::Runtime(_)) => Error::Unreachable {
                endpoints: String::new(),
                action: "calling etcd",
                detail: e.to_string(),
            },
        }
    }
}

impl EtcdStore {
    /// Connects to etcd at `endpoints` within `timeout`.
    pub fn connect(endpoints: &[String], timeout: Duration) -> Result<EtcdStore> {
        Self::connect_with(endpoints, &::etcd::Security::default(), timeout)
    }

    /// [`EtcdStore::connect`] with TLS and login settings ([`::etcd::Security`]).
    pub fn connect_with(
        endpoints: &[String],
        security: &::etcd::Security,
        timeout: Duration,
    ) -> Result<EtcdStore> {
        Ok(EtcdStore {
            etcd: Etcd::connect_with(endpoints, security, timeout, "ftvm-cluster-etcd")?,
        })
    }

    /// Runs one client call of `action`, bounded.
    fn block<T>(
        &self,
        action: &'static str,
        work: impl std::future::Future<Output = std::result::Result<T, etcd::etcd_client::Error>>,
    ) -> Result<T> {
        self.etcd.block(action, async {
            work.await
                .map_err(|e| Error::from(self.etcd.error(action, e)))
        })
    }

    fn version(key: &str, rev: i64) -> Result<u64> {
        u64::try_from(rev)
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| Error::Corrupt {
                key: key.to_owned(),
                reason: format!("etcd revision {rev}"),
            })
    }
}

impl Store for EtcdStore {
    fn get(&self, key: &str) -> Result<Option<Raw>> {
        validate_key(key)?;
        let k = format!("{PREFIX}{key}");
        let mut c = self.etcd.client();
        let mut resp = self.block("reading a record", async move { c.get(k, None).await })?;
        match resp.take_kvs().into_iter().next() {
            None => Ok(None),
            Some(kv) => Ok(Some(Raw {
                version: Self::version(key, kv.mod_revision())?,
                value: kv.value().to_vec(),
            })),
        }
    }

    fn cas(&self, key: &str, expect: u64, value: &[u8]) -> Result<u64> {
        validate_key(key)?;
        let k = format!("{PREFIX}{key}");
        let cmp = if expect == 0 {
            Compare::create_revision(k.as_str(), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(
                k.as_str(),
                CompareOp::Equal,
                i64::try_from(expect).unwrap_or(i64::MAX),
            )
        };
        let txn = Txn::new()
            .when([cmp])
            .and_then([TxnOp::put(k.as_str(), value.to_vec(), None)]);
        let mut c = self.etcd.client();
        let resp = self.block("writing a record", async move { c.txn(txn).await })?;
        if !resp.succeeded() {
            return Err(Error::Conflict(key.to_owned()));
        }
        // The put's revision is the transaction's header revision.
        let rev = resp.header().map_or(0, |h| h.revision());
        Self::version(key, rev)
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Raw)>> {
        let k = format!("{PREFIX}{prefix}");
        let mut c = self.etcd.client();
        let mut resp = self.block("listing records", async move {
            c.get(k, Some(GetOptions::new().with_prefix())).await
        })?;
        let mut out = Vec::new();
        for kv in resp.take_kvs() {
            let full = String::from_utf8_lossy(kv.key()).into_owned();
            let key = full.strip_prefix(PREFIX).unwrap_or(&full).to_owned();
            let version = Self::version(&key, kv.mod_revision())?;
            out.push((
                key,
                Raw {
                    value: kv.value().to_vec(),
                    version,
                },
            ));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn delete(&self, key: &str, expect: u64) -> Result<()> {
        validate_key(key)?;
        let k = format!("{PREFIX}{key}");
        let txn = Txn::new()
            .when([Compare::mod_revision(
                k.as_str(),
                CompareOp::Equal,
                i64::try_from(expect).unwrap_or(i64::MAX),
            )])
            .and_then([TxnOp::delete(k.as_str(), None)]);
        let mut c = self.etcd.client();
        let resp = self.block("removing a record", async move { c.txn(txn).await })?;
        if !resp.succeeded() {
            return Err(Error::Conflict(key.to_owned()));
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("etcd:{}", self.etcd.endpoints())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests_common::{exercise, signal, start_etcd};

    #[test]
    fn cas_list_corruption_and_outage() {
        let Some(etcd) = start_etcd() else { return };
        let s =
            EtcdStore::connect(std::slice::from_ref(&etcd.url), Duration::from_secs(2)).unwrap();
        exercise(&s);
        // A value that is not a record: a clear error.
        s.cas("vms/bad", 0, b"{not json").unwrap();
        let e = crate::get::<crate::VmRecord>(&s, "vms/bad").unwrap_err();
        assert!(e.to_string().contains("corrupt record vms/bad"), "{e}");
        // etcd frozen: calls fail within the bound, as unreachable; they work again after.
        signal(&etcd, libc::SIGSTOP);
        // The stop of every thread of etcd is not instantaneous.
        std::thread::sleep(Duration::from_millis(300));
        let t0 = std::time::Instant::now();
        let e = s.get("vms/x").unwrap_err();
        assert!(e.is_unreachable(), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
        signal(&etcd, libc::SIGCONT);
        let t0 = std::time::Instant::now();
        while s.get("vms/x").is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(15),
                "etcd did not come back"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    #[test]
    fn unreachable_etcd_is_an_error_within_the_bound() {
        let port = guestctl::free_port();
        let t0 = std::time::Instant::now();
        let r = EtcdStore::connect(
            &[format!("http://127.0.0.1:{port}")],
            Duration::from_millis(800),
        );
        match r {
            // The client may connect lazily: then the first call fails.
            Ok(s) => assert!(s.get("vms/x").unwrap_err().is_unreachable()),
            Err(e) => assert!(e.is_unreachable(), "{e}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    }
}
