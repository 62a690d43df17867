//! The cluster store and the arbiter over etcd with TLS and client certificates (issue 15): a
//! real etcd started with `--client-cert-auth`, certificates made by the test (rcgen). A
//! client with a certificate signed by the cluster's CA reads and writes; one without a
//! certificate, with one from another CA, speaking plain HTTP, or not trusting etcd's
//! certificate gets nothing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

const ETCD: &str = "/usr/bin/etcd";

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} CA"));
    let cert = p.self_signed(&key).unwrap();
    Ca { cert, key }
}

/// A certificate for `names` signed by `ca`, written as `dir/stem.pem` and `dir/stem-key.pem`.
fn issue(ca: &Ca, names: &[&str], dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, stem);
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let (c, k) = (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}-key.pem")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

struct TlsEtcd {
    child: Child,
    dir: PathBuf,
    port: u16,
    ca: PathBuf,
    client: (PathBuf, PathBuf),
    rogue_client: (PathBuf, PathBuf),
    rogue_ca: PathBuf,
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl TlsEtcd {
    fn spec(&self, opts: &str) -> String {
        format!("etcd:https://127.0.0.1:{}?{opts}", self.port)
    }

    fn good(&self) -> String {
        self.spec(&format!(
            "ca={}&cert={}&key={}",
            self.ca.display(),
            self.client.0.display(),
            self.client.1.display()
        ))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }
}

fn start() -> Option<TlsEtcd> {
    if !Path::new(ETCD).exists() {
        guestctl::skip(&format!(
            "{ETCD} is missing: install Debian's etcd-server (apt-get install etcd-server)"
        ));
        return None;
    }
    let (port, peer) = (guestctl::free_port(), guestctl::free_port());
    let dir = std::env::temp_dir().join(format!("ftvm-etcd-tls-{}-{port}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cluster_ca = ca("cluster");
    let rogue = ca("rogue");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, cluster_ca.cert.pem()).unwrap();
    let rogue_ca = dir.join("rogue-ca.pem");
    std::fs::write(&rogue_ca, rogue.cert.pem()).unwrap();
    let server = issue(&cluster_ca, &["localhost", "127.0.0.1"], &dir, "server");
    let client = issue(&cluster_ca, &["agent-h1"], &dir, "client");
    let rogue_client = issue(&rogue, &["agent-h1"], &dir, "rogue-client");
    let url = format!("https://127.0.0.1:{port}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
    let child = Command::new(ETCD)
        .arg("--name=tls")
        .arg(format!("--data-dir={}", dir.join("data").display()))
        .arg(format!("--listen-client-urls={url}"))
        .arg(format!("--advertise-client-urls={url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=tls={peer_url}"))
        .arg(format!("--cert-file={}", server.0.display()))
        .arg(format!("--key-file={}", server.1.display()))
        .arg("--client-cert-auth")
        .arg(format!("--trusted-ca-file={}", ca_file.display()))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut e = TlsEtcd {
        child,
        dir,
        port,
        ca: ca_file,
        client,
        rogue_client,
        rogue_ca,
    };
    let t0 = Instant::now();
    loop {
        if let Ok(s) = cluster::from_spec(&e.good()) {
            if s.get("probe").is_ok() {
                return Some(e);
            }
        }
        if let Ok(Some(st)) = e.child.try_wait() {
            panic!("etcd exited ({st}):\n{}", e.log());
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "etcd over TLS did not answer:\n{}",
            e.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether a store opened from `spec` can read: an error either when opening or at the first
/// call.
fn can_read(spec: &str) -> Result<(), String> {
    let s = cluster::from_spec(spec).map_err(|e| e.to_string())?;
    s.get("vms/web").map(|_| ()).map_err(|e| e.to_string())
}

#[test]
fn store_and_arbiter_over_tls_with_client_certificates() {
    let Some(e) = start() else { return };
    // The holder of a certificate of the cluster's CA writes and reads.
    let s = cluster::from_spec(&e.good()).unwrap();
    let v = s.cas("vms/web", 0, b"{\"secret\":false}").unwrap();
    let got = s.get("vms/web").unwrap().unwrap();
    assert_eq!(
        (got.value.as_slice(), got.version),
        (&b"{\"secret\":false}"[..], v)
    );
    // The arbiter takes the same spec.
    let a = arbiter::from_spec(&e.good()).unwrap();
    assert!(matches!(
        a.test_and_set("web", 1, "h1").unwrap(),
        arbiter::Claim::Won
    ));
    assert_eq!(a.current("web").unwrap().map(|(g, _)| g), Some(1));

    // No client certificate, one from another CA, a CA that did not sign etcd's certificate,
    // plain HTTP to the TLS port: nothing.
    let ca = e.ca.display().to_string();
    let (rc, rk) = (
        e.rogue_client.0.display().to_string(),
        e.rogue_client.1.display().to_string(),
    );
    let (cc, ck) = (
        e.client.0.display().to_string(),
        e.client.1.display().to_string(),
    );
    let refused = [
        ("no client certificate", e.spec(&format!("ca={ca}"))),
        (
            "a client certificate of another CA",
            e.spec(&format!("ca={ca}&cert={rc}&key={rk}")),
        ),
        (
            "not trusting etcd's certificate",
            e.spec(&format!("ca={}&cert={cc}&key={ck}", e.rogue_ca.display())),
        ),
        ("plain HTTP", format!("etcd:http://127.0.0.1:{}", e.port)),
    ];
    for (what, spec) in refused {
        let r = can_read(&spec);
        assert!(r.is_err(), "{what}: read the store");
        eprintln!("{what}: {}", r.unwrap_err());
        let a = arbiter::from_spec(&spec).and_then(|a| a.current("web"));
        assert!(a.is_err(), "{what}: read the arbiter");
    }
}

/// etcd's own authentication on top of TLS: once auth is on, a client certificate alone (its
/// CN names no etcd user) reads nothing; `user=root&password-file=F` does.
#[test]
fn etcd_login_over_tls() {
    let Some(e) = start() else { return };
    let (endpoints, security) = {
        let spec = e.good();
        let (list, sec) = etcd::split_options(spec.strip_prefix("etcd:").unwrap()).unwrap();
        (vec![list.to_string()], sec)
    };
    let admin =
        etcd::Etcd::connect_with(&endpoints, &security, Duration::from_secs(5), "t").unwrap();
    let mut c = admin.client();
    admin
        .block::<_, etcd::EtcdError>("enabling auth", async {
            let err = |e: etcd::etcd_client::Error| etcd::EtcdError::Config(e.to_string());
            c.user_add("root", "s3cret-pw", None).await.map_err(err)?;
            c.user_grant_role("root", "root").await.map_err(err)?;
            c.auth_enable().await.map_err(err)?;
            Ok(())
        })
        .unwrap();
    let pw = e.dir.join("password");
    std::fs::write(&pw, "s3cret-pw\n").unwrap();
    let wrong = e.dir.join("wrong-password");
    std::fs::write(&wrong, "guess\n").unwrap();
    let r = can_read(&e.good());
    assert!(
        r.is_err(),
        "a certificate without an etcd user read the store"
    );
    eprintln!("certificate only: {}", r.unwrap_err());
    let r = can_read(&format!(
        "{}&user=root&password-file={}",
        e.good(),
        wrong.display()
    ));
    assert!(r.is_err(), "a wrong password read the store");
    eprintln!("wrong password: {}", r.unwrap_err());
    let with_login = format!("{}&user=root&password-file={}", e.good(), pw.display());
    let s = cluster::from_spec(&with_login).unwrap();
    s.cas("vms/db", 0, b"{}").unwrap();
    assert!(s.get("vms/db").unwrap().is_some());
    let a = arbiter::from_spec(&with_login).unwrap();
    assert!(matches!(
        a.test_and_set("db", 1, "h1").unwrap(),
        arbiter::Claim::Won
    ));
}

#[test]
fn tls_options_that_do_not_go_together_are_refused_with_the_reason() {
    for (spec, why) in [
        ("etcd:https://127.0.0.1:1", "need ?ca=FILE"),
        ("etcd:https://127.0.0.1:1?cert=/c", "need ca=FILE"),
        ("etcd:https://127.0.0.1:1?ca=/a&cert=/c", "go together"),
        ("etcd:http://127.0.0.1:1?ca=/a", "need https://"),
        ("etcd:https://127.0.0.1:1?ca=/a&user=root", "go together"),
        (
            "etcd:https://127.0.0.1:1?ca=/a&colour=blue",
            "unknown option",
        ),
        (
            "etcd:https://127.0.0.1:1?ca=/nonexistent/ca.pem",
            "cannot read the CA",
        ),
    ] {
        let e = cluster::from_spec(spec).err().map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| e.contains(why)),
            "{spec}: {e:?}"
        );
    }
}
