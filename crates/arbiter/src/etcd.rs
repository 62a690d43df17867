//! The etcd arbiter: a claim is a compare-and-swap transaction on one key.
//!
//! Generation `G` of VM `V` is the key `/ftvm/vm/V/gen/G` (G zero-padded to 20 digits, so key
//! order is generation order and [`Arbiter::current`] is one sorted range read). A claim is the
//! transaction "if `create_revision(key) == 0` (the key has never been created) then put the
//! claimant's name, else read the key": etcd applies it atomically, so exactly one claimant's put
//! happens, and everyone else reads that claimant's name.
//!
//! # Claims are permanent; the lease only shows liveness
//!
//! A claim key is written **without** a lease and never deleted. If claims were lease-bound, a
//! winner whose lease expired — because it died, but equally because it was cut off from etcd
//! for `lease_ttl` while its VM went on running — would free its generation for a second winner,
//! and two hosts would run the VM: exactly the split brain the arbiter exists to prevent. A
//! generation must be won once, forever; taking over from a dead winner is done by claiming the
//! *next* generation, which is a new key.
//!
//! What the lease is for: each arbiter holds one lease of `lease_ttl`, kept alive by a background
//! task for as long as the arbiter lives. When a claim returns `Won` (fresh or repeated), the
//! winner also puts `/ftvm/vm/V/owner` = "G who" bound to that lease — unless a higher
//! generation of V has been claimed meanwhile, so the owner key never goes backwards. The owner
//! key therefore says "the holder of V's latest generation, and its arbiter is alive". If the
//! winner dies or loses etcd for longer than `lease_ttl`, the owner key disappears (and nothing
//! else changes: the claim stays). The keep-alive task then takes a new lease; the owner key
//! returns the next time that host repeats its claim, which is how a winner re-asserts
//! liveness. Nothing in this crate makes a decision from the owner key; it is for status
//! displays and cluster agents ([`EtcdArbiter::owner`]).
//!
//! # Bounded calls
//!
//! The client runs on a runtime this arbiter owns (one worker thread), so the API is blocking.
//! Every public call is bounded as a whole by `timeout`; an unreachable etcd is an
//! [`ArbiterError::EtcdUnreachable`], never a hang.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd::etcd_client::{
    Client, Compare, CompareOp, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse,
};
use etcd::{Etcd, EtcdError};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::name::{validate_claimant, validate_vm_name};
use crate::{Arbiter, ArbiterError, Claim};

/// The lease of the owner key when a spec does not say: the owner key vanishes this long after
/// the winner's arbiter was last heard from.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// The bound on each etcd call when a spec does not say.
pub const DEFAULT_ETCD_TIMEOUT: Duration = Duration::from_secs(5);

/// A test-and-set in etcd, for VMs whose hosts are on several machines.
pub struct EtcdArbiter {
    /// The client (crate `etcd`: its own runtime, bounded calls).
    etcd: Etcd,
    lease_ttl_secs: i64,
    /// The lease owner keys are bound to; replaced by the keep-alive task if it expires.
    lease: Arc<AtomicI64>,
    keep_alive: Option<JoinHandle<()>>,
}

impl From<EtcdError> for ArbiterError {
    fn from(e: EtcdError) -> ArbiterError {
        match e {
            EtcdError::Unreachable {
                endpoints,
                timeout,
                action,
                detail,
            } => ArbiterError::EtcdUnreachable {
                endpoints,
                timeout,
                action,
                detail,
            },
            EtcdError::Refused {
                endpoints,
                action,
                detail,
            } => ArbiterError::Etcd {
                endpoints,
                action,
                detail,
            },
            EtcdError::InsideAsyncRuntime => ArbiterError::InsideAsyncRuntime,
            EtcdError::Runtime(e) => ArbiterError::Runtime(e),
            e @ EtcdError::Config(_) => ArbiterError::InvalidConfig(e.to_string()),
        }
    }
}

impl std::fmt::Debug for EtcdArbiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdArbiter")
            .field("endpoints", &self.etcd.endpoints())
            .field("timeout", &self.etcd.timeout())
            .field("lease_ttl_secs", &self.lease_ttl_secs)
            .field("lease", &self.lease.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl EtcdArbiter {
    /// Connects to etcd at `endpoints` (such as "http://127.0.0.1:2379"), takes a lease of
    /// `lease_ttl` (rounded up to whole seconds, at least 1) for the owner key, and starts keeping
    /// it alive. Fails within `timeout` if etcd cannot be reached.
    pub fn connect(
        endpoints: &[String],
        lease_ttl: Duration,
        timeout: Duration,
    ) -> Result<EtcdArbiter, ArbiterError> {
        Self::connect_with(endpoints, &::etcd::Security::default(), lease_ttl, timeout)
    }

    /// [`EtcdArbiter::connect`] with TLS and login settings ([`::etcd::Security`]).
    pub fn connect_with(
        endpoints: &[String],
        security: &::etcd::Security,
        lease_ttl: Duration,
        timeout: Duration,
    ) -> Result<EtcdArbiter, ArbiterError> {
        if endpoints.is_empty() {
            return Err(ArbiterError::InvalidConfig(
                "no etcd endpoints given".to_owned(),
            ));
        }
        if timeout.is_zero() {
            return Err(ArbiterError::InvalidConfig(
                "the etcd timeout is zero, so every call would fail".to_owned(),
            ));
        }
        let lease_ttl_secs = i64::try_from(lease_ttl.as_secs())
            .unwrap_or(i64::MAX)
            .saturating_add(i64::from(lease_ttl.subsec_nanos() > 0))
            .max(1);
        let etcd = Etcd::connect_with(endpoints, security, timeout, "ftvm-arbiter-etcd")?;
        let mut client = etcd.client();
        let lease_id = etcd.block("taking a lease", async {
            client
                .lease_grant(lease_ttl_secs, None)
                .await
                .map(|l| l.id())
                .map_err(|e| ArbiterError::from(etcd.error("taking a lease", e)))
        })?;
        let lease = Arc::new(AtomicI64::new(lease_id));
        let keep_alive = etcd.spawn(keep_alive(
            etcd.client(),
            lease.clone(),
            lease_ttl_secs,
            timeout,
        ));
        Ok(EtcdArbiter {
            etcd,
            lease_ttl_secs,
            lease,
            keep_alive,
        })
    }

    /// The owner key of `vm`: the latest generation's holder whose arbiter is alive, if any
    /// (see the module doc). `None` means no claim yet, or that its holder has not been heard
    /// from for the lease's TTL.
    pub fn owner(&self, vm: &str) -> Result<Option<(u64, String)>, ArbiterError> {
        validate_vm_name(vm)?;
        let key = owner_key(vm);
        self.etcd.block("reading the owner key", async {
            let mut client = self.etcd.client();
            let mut resp = client
                .get(key.as_str(), None)
                .await
                .map_err(|e| self.err("reading the owner key", e))?;
            let Some(kv) = resp.take_kvs().into_iter().next() else {
                return Ok(None);
            };
            let bad = |reason: &str| ArbiterError::BadEtcdValue {
                key: key.clone(),
                reason: reason.to_owned(),
            };
            let value = std::str::from_utf8(kv.value()).map_err(|_| bad("not UTF-8"))?;
            let (generation, who) = value
                .split_once(' ')
                .ok_or_else(|| bad("not \"GENERATION WHO\""))?;
            let generation = generation
                .parse()
                .map_err(|_| bad("the generation is not a number"))?;
            validate_claimant(who).map_err(|_| bad("not a claimant name"))?;
            Ok(Some((generation, who.to_owned())))
        })
    }

    /// A client error of `action`, sorted into unreachable and refused.
    fn err(&self, action: &'static str, e: etcd::etcd_client::Error) -> ArbiterError {
        self.etcd.error(action, e).into()
    }

    /// Puts the owner key for a winner of (vm, generation), unless the claim is not `who`'s or
    /// a higher generation exists. A lease that expired is replaced once.
    async fn assert_owner(&self, vm: &str, generation: u64, who: &str) -> Result<(), ArbiterError> {
        let mut when = vec![Compare::value(
            gen_key(vm, generation),
            CompareOp::Equal,
            who,
        )];
        if let Some(next) = generation.checked_add(1) {
            when.push(
                Compare::create_revision(gen_key(vm, next), CompareOp::Equal, 0)
                    .with_range(gen_range_end(vm)),
            );
        }
        let value = format!("{generation} {who}");
        let mut client = self.etcd.client();
        for attempt in 0..2 {
            let lease = self.lease.load(Ordering::Acquire);
            let txn = Txn::new().when(when.clone()).and_then([TxnOp::put(
                owner_key(vm),
                value.as_str(),
                Some(PutOptions::new().with_lease(lease)),
            )]);
            match client.txn(txn).await {
                Ok(_) => return Ok(()),
                Err(e) if attempt == 0 && is_lease_not_found(&e) => {
                    let fresh = client
                        .lease_grant(self.lease_ttl_secs, None)
                        .await
                        .map_err(|e| self.err("taking a new lease", e))?;
                    // Another caller may have replaced it already; either new lease will do.
                    let _ = self.lease.compare_exchange(
                        lease,
                        fresh.id(),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                }
                Err(e) => return Err(self.err("writing the owner key", e)),
            }
        }
        Ok(())
    }
}

impl Arbiter for EtcdArbiter {
    fn test_and_set(&self, vm: &str, generation: u64, who: &str) -> Result<Claim, ArbiterError> {
        validate_vm_name(vm)?;
        validate_claimant(who)?;
        let key = gen_key(vm, generation);
        self.etcd.block("claiming", async {
            let txn = Txn::new()
                .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.as_str(), who, None)])
                .or_else([TxnOp::get(key.as_str(), None)]);
            let mut client = self.etcd.client();
            let resp = client.txn(txn).await.map_err(|e| self.err("claiming", e))?;
            let claim = if resp.succeeded() {
                Claim::Won
            } else {
                let winner = resp
                    .op_responses()
                    .into_iter()
                    .find_map(|op| match op {
                        TxnOpResponse::Get(mut get) => get.take_kvs().into_iter().next(),
                        _ => None,
                    })
                    .ok_or_else(|| ArbiterError::BadEtcdValue {
                        key: key.clone(),
                        reason: "it was created but is gone: claims must never be deleted"
                            .to_owned(),
                    })?;
                let winner = claimant_value(&key, winner.value())?;
                if winner == who {
                    Claim::Won
                } else {
                    Claim::Lost { winner }
                }
            };
            if claim == Claim::Won {
                self.assert_owner(vm, generation, who).await?;
            }
            Ok(claim)
        })
    }

    fn current(&self, vm: &str) -> Result<Option<(u64, String)>, ArbiterError> {
        validate_vm_name(vm)?;
        let prefix = gen_prefix(vm);
        self.etcd.block("reading the latest claim", async {
            let options = GetOptions::new()
                .with_range(gen_range_end(vm))
                .with_sort(SortTarget::Key, SortOrder::Descend)
                .with_limit(1);
            let mut client = self.etcd.client();
            let mut resp = client
                .get(prefix.as_str(), Some(options))
                .await
                .map_err(|e| self.err("reading the latest claim", e))?;
            let Some(kv) = resp.take_kvs().into_iter().next() else {
                return Ok(None);
            };
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let generation = key
                .strip_prefix(&prefix)
                .filter(|digits| digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|digits| digits.parse().ok())
                .ok_or_else(|| ArbiterError::BadEtcdValue {
                    key: key.clone(),
                    reason: "its name is not a 20-digit generation".to_owned(),
                })?;
            Ok(Some((generation, claimant_value(&key, kv.value())?)))
        })
    }

    fn describe(&self) -> String {
        format!("etcd:{}", self.etcd.endpoints())
    }
}

impl Drop for EtcdArbiter {
    fn drop(&mut self) {
        if let Some(k) = &self.keep_alive {
            k.abort();
        }
        // The lease is left to expire rather than revoked: revoking would need etcd to answer,
        // and the owner key should outlive a clean exit no longer than a crash. The client's
        // runtime shuts down without waiting when `etcd` drops.
    }
}

/// Keeps the arbiter's lease alive every third of its TTL; reconnects after any error, and takes
/// a new lease if etcd reports the old one expired. Runs until the arbiter drops it.
async fn keep_alive(mut client: Client, lease: Arc<AtomicI64>, ttl_secs: i64, bound: Duration) {
    let ttl_ms = u64::try_from(ttl_secs).unwrap_or(1).saturating_mul(1000);
    let interval = Duration::from_millis((ttl_ms / 3).max(100));
    let retry = interval.min(Duration::from_secs(1));
    loop {
        let id = lease.load(Ordering::Acquire);
        if let Ok(Ok((mut keeper, mut stream))) = timeout(bound, client.lease_keep_alive(id)).await
        {
            loop {
                if !matches!(timeout(bound, keeper.keep_alive()).await, Ok(Ok(()))) {
                    break;
                }
                match timeout(bound, stream.message()).await {
                    Ok(Ok(Some(resp))) if resp.ttl() > 0 => {}
                    Ok(Ok(Some(_))) => {
                        // Expired (etcd was out of reach too long): take a fresh lease.
                        if let Ok(Ok(fresh)) =
                            timeout(bound, client.lease_grant(ttl_secs, None)).await
                        {
                            let _ = lease.compare_exchange(
                                id,
                                fresh.id(),
                                Ordering::AcqRel,
                                Ordering::Acquire,
                            );
                        }
                        break;
                    }
                    _ => break,
                }
                tokio::time::sleep(interval).await;
            }
        }
        tokio::time::sleep(retry).await;
    }
}

fn is_lease_not_found(e: &etcd::etcd_client::Error) -> bool {
    matches!(e, etcd::etcd_client::Error::GRpcStatus(s) if s.message().contains("lease not found"))
}

fn gen_prefix(vm: &str) -> String {
    format!("/ftvm/vm/{vm}/gen/")
}

/// The end of the range of `vm`'s generation keys: the prefix with its final '/' bumped to '0'.
fn gen_range_end(vm: &str) -> String {
    format!("/ftvm/vm/{vm}/gen0")
}

fn gen_key(vm: &str, generation: u64) -> String {
    format!("{}{generation:020}", gen_prefix(vm))
}

fn owner_key(vm: &str) -> String {
    format!("/ftvm/vm/{vm}/owner")
}

fn claimant_value(key: &str, value: &[u8]) -> Result<String, ArbiterError> {
    let bad = |reason: &str| ArbiterError::BadEtcdValue {
        key: key.to_owned(),
        reason: reason.to_owned(),
    };
    let who = std::str::from_utf8(value).map_err(|_| bad("not UTF-8"))?;
    validate_claimant(who).map_err(|_| bad("not a claimant name"))?;
    Ok(who.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn keys_sort_by_generation_and_stay_in_their_range() {
        assert_eq!(gen_key("vm1", 42), "/ftvm/vm/vm1/gen/00000000000000000042");
        assert_eq!(
            gen_key("vm1", u64::MAX),
            "/ftvm/vm/vm1/gen/18446744073709551615"
        );
        assert!(gen_key("vm1", 9) < gen_key("vm1", 10));
        assert!(gen_key("vm1", u64::MAX) < gen_range_end("vm1"));
        assert!(gen_prefix("vm1") < gen_key("vm1", 0));
        // Another VM whose name extends this one's is outside the range.
        assert!(
            gen_key("vm1-b", 0) > gen_range_end("vm1") || gen_key("vm1-b", 0) < gen_prefix("vm1")
        );
        assert!(!owner_key("vm1").starts_with(&gen_prefix("vm1")));
    }

    #[test]
    fn claimant_values_are_validated() {
        assert_eq!(claimant_value("k", b"host-a").unwrap(), "host-a");
        assert!(claimant_value("k", b"\xff").is_err());
        assert!(claimant_value("k", b"").is_err());
        assert!(claimant_value("k", b"a\nb").is_err());
    }

    #[test]
    fn bad_settings_are_refused_without_a_network() {
        let e = EtcdArbiter::connect(&[], DEFAULT_LEASE_TTL, DEFAULT_ETCD_TIMEOUT).unwrap_err();
        assert!(matches!(e, ArbiterError::InvalidConfig(_)), "{e}");
        let one = ["http://127.0.0.1:9".to_owned()];
        let e = EtcdArbiter::connect(&one, DEFAULT_LEASE_TTL, Duration::ZERO).unwrap_err();
        assert!(matches!(e, ArbiterError::InvalidConfig(_)), "{e}");
    }

    #[test]
    fn a_closed_port_fails_within_the_timeout() {
        // Port 9 (discard) on loopback has no listener here: connection refused, or a timeout.
        let timeout = Duration::from_millis(800);
        let start = Instant::now();
        let e = EtcdArbiter::connect(
            &["http://127.0.0.1:9".to_owned()],
            DEFAULT_LEASE_TTL,
            timeout,
        )
        .unwrap_err();
        assert!(
            start.elapsed() < timeout + Duration::from_millis(500),
            "{:?}",
            start.elapsed()
        );
        assert!(matches!(e, ArbiterError::EtcdUnreachable { .. }), "{e}");
        assert!(e.to_string().contains("http://127.0.0.1:9"), "{e}");
    }

    #[test]
    fn calls_from_inside_an_async_runtime_are_errors_not_panics() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let e = runtime.block_on(async {
            EtcdArbiter::connect(
                &["http://127.0.0.1:9".to_owned()],
                DEFAULT_LEASE_TTL,
                DEFAULT_ETCD_TIMEOUT,
            )
        });
        assert!(matches!(e, Err(ArbiterError::InsideAsyncRuntime)));
    }
}
