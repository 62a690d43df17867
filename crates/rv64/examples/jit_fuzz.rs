//! The long run of the lock-step differential fuzzer (interpreter vs translating engine):
//! `cargo run --release -p rv64 --example jit_fuzz -- --seconds N --seed S [--steps K]`.
//! Runs random programs (see `rv64::lockstep`) until the time is up or a difference is found,
//! which it prints with the seed and episode that reproduce it (exit status 1).

use std::time::{Duration, Instant};

fn main() {
    let mut seconds = 10u64;
    let mut seed = 1u64;
    let mut steps = 50_000u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().and_then(|v| v.parse::<u64>().ok());
        match (a.as_str(), v) {
            ("--seconds", Some(v)) => seconds = v,
            ("--seed", Some(v)) => seed = v,
            ("--steps", Some(v)) => steps = v,
            _ => {
                eprintln!("usage: jit_fuzz [--seconds N] [--seed S] [--steps K]");
                std::process::exit(2);
            }
        }
    }
    let t0 = Instant::now();
    let mut episodes = 0u64;
    let mut total = 0u64;
    let (mut runs, mut inline) = (0u64, 0u64);
    let mut last = Instant::now();
    while t0.elapsed() < Duration::from_secs(seconds) {
        // One episode per call, so the report names it exactly.
        let s = seed.wrapping_add(episodes.wrapping_mul(0x1000_0001));
        match rv64::lockstep::fuzz(s, 1, steps) {
            Ok(st) => {
                total += st.steps;
                runs += st.jit_runs;
                inline += st.jit_inline;
            }
            Err(e) => {
                println!(
                    "DIFFERENCE after {episodes} episodes, {total} steps, {:.0} s: {e}",
                    t0.elapsed().as_secs_f64()
                );
                std::process::exit(1);
            }
        }
        episodes += 1;
        if last.elapsed() > Duration::from_secs(60) {
            last = Instant::now();
            println!(
                "{:.0} s: {episodes} episodes, {total} steps, no difference ({runs} blocks \
                 entered by the dispatcher, {inline} from other blocks)",
                t0.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "no difference: {episodes} episodes, {total} steps per engine, {:.0} s (seed {seed}; \
         {runs} blocks entered by the dispatcher, {inline} from other blocks)",
        t0.elapsed().as_secs_f64()
    );
}
