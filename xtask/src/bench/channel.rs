//! `cargo xtask bench --channel`: what encrypting the logging channel costs. A clone-sized
//! transfer (RAM-page batches, [`ft::wire::Msg::Pages`] of 1 MiB, as a live clone sends them)
//! crosses 127.0.0.1 once through the real channel (`ft::wire`'s handshake, then Noise
//! records: ChaCha20-Poly1305) and once as the same messages length-prefixed on a bare TCP
//! stream (no encryption, no authentication): throughput in MB/s and the CPU both ends spent per
//! MB (user + system time of this process, sender and receiver threads together). Best of N
//! repetitions, interleaved. In-process, so no guest and no ftvm binary are needed; the numbers
//! bound what the channel can carry, the guest's own work not included.

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ft::wire::Msg;

use super::doc;

/// One batch of the transfer.
const BATCH: usize = 1 << 20;

/// CPU time (user + system) of this process so far.
fn cpu() -> Duration {
    // SAFETY: getrusage fills the struct we own; RUSAGE_SELF is always valid.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// A batch that does not compress away or repeat (xorshift).
fn batch(seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..BATCH)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn msg(i: u64, data: &[u8]) -> Msg {
    Msg::Pages {
        clone: 1,
        mem_size: 1 << 30,
        round: i as u32,
        data: data.to_vec(),
    }
}

/// (seconds, CPU seconds) of `n` batches over the encrypted channel.
fn encrypted(n: usize, data: &[u8]) -> Result<(f64, f64)> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let a = l.local_addr()?;
    let key = ft::Key::random();
    let kb = key.clone();
    let backup = std::thread::spawn(move || ft::wire::accept_handshake(l.accept()?.0, &kb));
    let hello = ft::wire::Hello {
        vm: "bench".into(),
        generation: 1,
        non_shared: false,
        disk_reads_own: false,
    };
    let (mut w, _r) = ft::wire::connect_handshake(TcpStream::connect(a)?, &key, &hello)?;
    let (_, _bw, mut br) = backup
        .join()
        .map_err(|_| anyhow::anyhow!("the receiver panicked"))??;
    let msgs: Vec<Msg> = (0..n as u64).map(|i| msg(i, data)).collect();
    let (t0, c0) = (Instant::now(), cpu());
    let rx = std::thread::spawn(move || -> Result<usize> {
        let mut bytes = 0;
        for _ in 0..n {
            if let Msg::Pages { data, .. } = br.recv()? {
                bytes += data.len();
            }
        }
        Ok(bytes)
    });
    for m in &msgs {
        w.send(m)?;
    }
    let got = rx
        .join()
        .map_err(|_| anyhow::anyhow!("the receiver panicked"))??;
    anyhow::ensure!(got == n * data.len(), "received {got} bytes");
    Ok((t0.elapsed().as_secs_f64(), (cpu() - c0).as_secs_f64()))
}

/// (seconds, CPU seconds) of the same messages, length-prefixed, on a bare TCP stream.
fn plain(n: usize, data: &[u8]) -> Result<(f64, f64)> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let a = l.local_addr()?;
    let mut w = TcpStream::connect(a)?;
    w.set_nodelay(true)?;
    let r = l.accept()?.0;
    let msgs: Vec<Vec<u8>> = (0..n as u64)
        .map(|i| {
            let Msg::Pages { data, .. } = msg(i, data) else {
                unreachable!()
            };
            let mut v = (data.len() as u32 + 21).to_be_bytes().to_vec();
            v.extend_from_slice(&[5; 21]);
            v.extend_from_slice(&data);
            v
        })
        .collect();
    let (t0, c0) = (Instant::now(), cpu());
    let rx = std::thread::spawn(move || -> Result<usize> {
        let mut r = BufReader::with_capacity(1 << 17, r);
        let mut bytes = 0;
        for _ in 0..n {
            let mut len = [0u8; 4];
            r.read_exact(&mut len)?;
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            r.read_exact(&mut body)?;
            bytes += body.len() - 21;
        }
        Ok(bytes)
    });
    for m in &msgs {
        w.write_all(m)?;
    }
    let got = rx
        .join()
        .map_err(|_| anyhow::anyhow!("the receiver panicked"))??;
    anyhow::ensure!(got == n * data.len(), "received {got} bytes");
    Ok((t0.elapsed().as_secs_f64(), (cpu() - c0).as_secs_f64()))
}

/// (seconds, CPU seconds) of sealing and opening `n` batches in memory, one thread, no TCP:
/// the cipher's and the records' own cost.
fn in_memory(n: usize, data: &[u8]) -> Result<(f64, f64)> {
    let ((mut s, _), (_, mut o)) = ft::noise::memory_session();
    let (t0, c0) = (Instant::now(), cpu());
    for _ in 0..n {
        let sealed = s.seal(data)?;
        let got = o.recv(&mut sealed.as_slice(), BATCH)?;
        anyhow::ensure!(got.len() == data.len(), "opened {} bytes", got.len());
    }
    Ok((t0.elapsed().as_secs_f64(), (cpu() - c0).as_secs_f64()))
}

/// Runs the benchmark; writes the `channel` section of docs/benchmarks.md unless `no_doc`.
pub fn main(root: &std::path::Path, reps: usize, quick: bool, no_doc: bool) -> Result<()> {
    let n = if quick { 64 } else { 256 };
    let data = batch(0x5eed);
    let mb = (n * BATCH) as f64 / 1e6;
    let mut best: [Option<(f64, f64)>; 3] = [None, None, None];
    for rep in 0..reps {
        for (k, f) in [
            plain as fn(usize, &[u8]) -> Result<(f64, f64)>,
            encrypted,
            in_memory,
        ]
        .into_iter()
        .enumerate()
        {
            let (t, c) = f(n, &data).with_context(|| format!("repetition {rep}"))?;
            eprintln!(
                "xtask bench --channel: {} {mb:.0} MB in {t:.3} s, CPU {c:.3} s",
                ["plain", "encrypted", "in memory"][k]
            );
            if best[k].is_none_or(|(bt, _)| t < bt) {
                best[k] = Some((t, c));
            }
        }
    }
    let [Some(p), Some(e), Some(m)] = best else {
        anyhow::bail!("no repetition ran");
    };
    let row = |name: &str, (t, c): (f64, f64)| {
        format!("| {name} | {:.0} | {:.2} |\n", mb / t, c * 1e3 / mb)
    };
    let mut s = String::new();
    s.push_str(&format!(
        "### The logging channel: encryption's cost\n\n`cargo xtask bench --channel`: {mb:.0} MB \
         of clone page batches (1 MiB `Msg::Pages` each, incompressible) over 127.0.0.1, \
         in-process, best of {reps}. CPU: user + system of sender and receiver together.\n\n\
         | channel | MB/s | CPU ms per MB |\n|---|---|---|\n"
    ));
    s.push_str(&row("bare TCP, no encryption or authentication", p));
    s.push_str(&row("Noise (ChaCha20-Poly1305 records, `ft::wire`)", e));
    s.push_str(&row("sealing and opening alone (in memory, one thread)", m));
    s.push_str(&format!(
        "\nencrypted / bare: throughput {:.2}x, CPU per MB {:.2}x.\n\n{}\n",
        (mb / e.0) / (mb / p.0),
        e.1 / p.1.max(1e-9),
        doc::machine_facts()
    ));
    print!("{s}");
    if !no_doc {
        doc::replace_section(root, "channel", &s)?;
    }
    Ok(())
}
