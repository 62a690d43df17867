//! The etcd arbiter against a real etcd (Debian's `etcd-server`), started on loopback ports
//! with a temporary data directory and removed at the end, whatever happens.
//!
//! Without /usr/bin/etcd the etcd tests are skipped, or fail under `FTVM_REQUIRE_GUEST`.

use guestctl::etcd::Etcd;
use guestctl::free_port;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use arbiter::{from_spec, Arbiter, ArbiterError, Claim, EtcdArbiter};

const TIMEOUT: Duration = Duration::from_secs(5);

/// A real etcd that grants leases (the arbiter connects with one).
fn start_etcd(tag: &str) -> Option<Etcd> {
    Etcd::start(&format!("arbiter-{tag}"), |url| {
        EtcdArbiter::connect(
            &[url.to_owned()],
            Duration::from_secs(2),
            Duration::from_secs(1),
        )
        .is_ok()
    })
}

fn arbiter(etcd: &Etcd, lease_ttl: Duration) -> EtcdArbiter {
    EtcdArbiter::connect(std::slice::from_ref(&etcd.url), lease_ttl, TIMEOUT).unwrap()
}

#[test]
fn one_winner_among_concurrent_claimers() {
    const CLAIMERS: usize = 8;
    const GENERATIONS: u64 = 50;
    let Some(etcd) = start_etcd("race") else {
        return;
    };
    let started = Instant::now();
    // Each claimer is its own arbiter, with its own connection and lease, like separate hosts.
    let barrier = Arc::new(Barrier::new(CLAIMERS));
    let threads: Vec<_> = (0..CLAIMERS)
        .map(|c| {
            let arbiter = arbiter(&etcd, Duration::from_secs(10));
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let who = format!("host-{c}");
                (1..=GENERATIONS)
                    .map(|generation| {
                        barrier.wait();
                        arbiter.test_and_set("race-vm", generation, &who).unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<Vec<Claim>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut wins = [0usize; CLAIMERS];
    for g in 0..GENERATIONS as usize {
        let winners: Vec<usize> = (0..CLAIMERS)
            .filter(|&c| results[c][g] == Claim::Won)
            .collect();
        assert_eq!(winners.len(), 1, "generation {}: {winners:?}", g + 1);
        wins[winners[0]] += 1;
        let lost = Claim::Lost {
            winner: format!("host-{}", winners[0]),
        };
        for (c, row) in results.iter().enumerate() {
            assert!(
                c == winners[0] || row[g] == lost,
                "generation {}: {row:?}",
                g + 1
            );
        }
    }
    let arbiter = arbiter(&etcd, Duration::from_secs(10));
    let (generation, winner) = arbiter.current("race-vm").unwrap().unwrap();
    assert_eq!(generation, GENERATIONS);
    let last = (0..CLAIMERS)
        .find(|&c| results[c][GENERATIONS as usize - 1] == Claim::Won)
        .unwrap();
    assert_eq!(winner, format!("host-{last}"));
    eprintln!(
        "{CLAIMERS} claimers x {GENERATIONS} generations: one winner each; wins per claimer \
         {wins:?}; {:?}",
        started.elapsed()
    );
}

#[test]
fn claims_are_idempotent_permanent_and_current_is_the_highest() {
    let Some(mut etcd) = start_etcd("claims") else {
        return;
    };
    let ttl = Duration::from_secs(1);
    let a = arbiter(&etcd, ttl);
    let b = arbiter(&etcd, ttl);
    assert_eq!(a.describe(), format!("etcd:{}", etcd.url));
    assert_eq!(a.current("vm1").unwrap(), None);
    assert_eq!(a.owner("vm1").unwrap(), None);

    assert_eq!(a.test_and_set("vm1", 3, "host-a").unwrap(), Claim::Won);
    assert_eq!(a.test_and_set("vm1", 3, "host-a").unwrap(), Claim::Won);
    // The same name through another connection is the same claimant.
    assert_eq!(b.test_and_set("vm1", 3, "host-a").unwrap(), Claim::Won);
    let lost_to_a = Claim::Lost {
        winner: "host-a".to_owned(),
    };
    assert_eq!(b.test_and_set("vm1", 3, "host-b").unwrap(), lost_to_a);
    assert_eq!(a.owner("vm1").unwrap(), Some((3, "host-a".to_owned())));

    // Generation order is numeric (10 after 9), and a late claim of a lower generation moves
    // neither `current` nor the owner key back.
    assert_eq!(b.test_and_set("vm1", 9, "host-b").unwrap(), Claim::Won);
    assert_eq!(b.test_and_set("vm1", 10, "host-b").unwrap(), Claim::Won);
    assert_eq!(a.test_and_set("vm1", 5, "host-a").unwrap(), Claim::Won);
    assert_eq!(a.current("vm1").unwrap(), Some((10, "host-b".to_owned())));
    assert_eq!(a.owner("vm1").unwrap(), Some((10, "host-b".to_owned())));
    // Other VMs, including one whose name extends this one's, are separate.
    assert_eq!(a.test_and_set("vm1-b", 1, "host-a").unwrap(), Claim::Won);
    assert_eq!(a.current("vm1").unwrap(), Some((10, "host-b".to_owned())));
    assert_eq!(a.current("vm1-b").unwrap(), Some((1, "host-a".to_owned())));
    assert_eq!(a.test_and_set("v", u64::MAX, "host-a").unwrap(), Claim::Won);
    assert_eq!(
        a.current("v").unwrap(),
        Some((u64::MAX, "host-a".to_owned()))
    );

    // Bad names never reach etcd.
    assert!(matches!(
        a.test_and_set("../x", 1, "host-a"),
        Err(ArbiterError::InvalidVmName { .. })
    ));
    assert!(matches!(
        a.test_and_set("vm1", 1, "host-a\nx"),
        Err(ArbiterError::InvalidClaimant { .. })
    ));

    // host-b's arbiter goes away: its owner key expires with its lease, but its claims stay.
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.owner("vm1").unwrap().is_some() {
        assert!(Instant::now() < deadline, "owner key outlived its lease");
        std::thread::sleep(Duration::from_millis(200));
    }
    let c = arbiter(&etcd, ttl);
    let lost_to_b = Claim::Lost {
        winner: "host-b".to_owned(),
    };
    assert_eq!(c.test_and_set("vm1", 10, "host-c").unwrap(), lost_to_b);
    assert_eq!(a.current("vm1").unwrap(), Some((10, "host-b".to_owned())));
    // A live winner keeps its owner key past the TTL, and re-asserts it by repeating a claim.
    assert_eq!(c.test_and_set("vm1", 11, "host-c").unwrap(), Claim::Won);
    std::thread::sleep(ttl * 3);
    assert_eq!(a.owner("vm1").unwrap(), Some((11, "host-c".to_owned())));

    // etcd goes away: every call fails within the timeout, naming the endpoint.
    etcd.kill();
    for call in 0..2 {
        let start = Instant::now();
        let e = match call {
            0 => a.test_and_set("vm1", 12, "host-a").unwrap_err(),
            _ => a.current("vm1").unwrap_err(),
        };
        assert!(
            start.elapsed() < TIMEOUT + Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        assert!(
            matches!(e, ArbiterError::EtcdUnreachable { .. }),
            "call {call}: {e}"
        );
        assert!(e.to_string().contains(&etcd.url), "{e}");
    }
}

#[test]
fn an_unreachable_endpoint_fails_within_the_timeout() {
    // A port that was free a moment ago: nothing listens there.
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let timeout = Duration::from_secs(1);
    let start = Instant::now();
    let e = EtcdArbiter::connect(
        std::slice::from_ref(&endpoint),
        Duration::from_secs(5),
        timeout,
    )
    .unwrap_err();
    let took = start.elapsed();
    assert!(took < timeout + Duration::from_millis(500), "took {took:?}");
    assert!(matches!(e, ArbiterError::EtcdUnreachable { .. }), "{e}");
    let message = e.to_string();
    assert!(
        message.contains(&endpoint) && message.contains("etcd is running"),
        "{message}"
    );
    // The same through a spec.
    let start = Instant::now();
    assert!(from_spec(&format!("etcd:{endpoint}")).is_err());
    assert!(start.elapsed() < arbiter::DEFAULT_ETCD_TIMEOUT + Duration::from_millis(500));
}
