//! Several processes race for the same generations in one directory: exactly one wins each.
//!
//! The test binary spawns itself: with `ARBITER_RACE_CHILD` set, the `race_child` test becomes
//! one racer, which waits for a start file so all racers begin together, then claims every
//! generation in turn and writes what it got to a result file.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arbiter::{Arbiter, Claim, FileArbiter};

const PROCESSES: usize = 4;
const ROUNDS: u64 = 200;
const DEADLINE: Duration = Duration::from_secs(60);
const CHILD_ENV: &str = "ARBITER_RACE_CHILD";

/// Kills and reaps racers still running, and removes the work directory, even on failure.
struct Cleanup {
    dir: PathBuf,
    children: Vec<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn wait_for(path: &Path, deadline: Instant) -> bool {
    while !path.exists() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

/// One racer (does nothing unless spawned by `processes_race_for_each_generation`).
#[test]
fn race_child() {
    let Some(work) = std::env::var_os(CHILD_ENV).map(PathBuf::from) else {
        return;
    };
    let who = std::env::var("ARBITER_RACE_WHO").unwrap();
    let arbiter = FileArbiter::new(work.join("claims")).unwrap();
    fs::write(work.join(format!("ready-{who}")), "").unwrap();
    assert!(
        wait_for(&work.join("go"), Instant::now() + DEADLINE),
        "no start signal"
    );
    let mut out = String::new();
    for generation in 0..ROUNDS {
        let line = match arbiter.test_and_set("race", generation, &who).unwrap() {
            Claim::Won => "won".to_owned(),
            Claim::Lost { winner } => format!("lost {winner}"),
        };
        out.push_str(&format!("{generation} {line}\n"));
    }
    let result = work.join(format!("result-{who}"));
    fs::write(result.with_extension("tmp"), out).unwrap();
    fs::rename(result.with_extension("tmp"), result).unwrap();
}

#[test]
fn processes_race_for_each_generation() {
    let started = Instant::now();
    let deadline = started + DEADLINE;
    let dir = std::env::temp_dir().join(format!("arbiter-processes-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let mut cleanup = Cleanup {
        dir: dir.clone(),
        children: Vec::new(),
    };
    let exe = std::env::current_exe().unwrap();
    let names: Vec<String> = (0..PROCESSES).map(|i| format!("proc-{i}")).collect();
    for who in &names {
        let child = Command::new(&exe)
            .args(["--exact", "race_child", "--test-threads=1", "--nocapture"])
            .env(CHILD_ENV, &dir)
            .env("ARBITER_RACE_WHO", who)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        cleanup.children.push(child);
    }
    for who in &names {
        assert!(
            wait_for(&dir.join(format!("ready-{who}")), deadline),
            "{who} never started"
        );
    }
    fs::write(dir.join("go"), "").unwrap();
    for (who, child) in names.iter().zip(&mut cleanup.children) {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "{who} failed: {status}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{who} did not finish in {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    let results: Vec<Vec<String>> = names
        .iter()
        .map(|who| {
            let text = fs::read_to_string(dir.join(format!("result-{who}"))).unwrap();
            text.lines().map(str::to_owned).collect()
        })
        .collect();
    let mut wins = vec![0usize; PROCESSES];
    for generation in 0..ROUNDS as usize {
        let lines: Vec<&str> = results
            .iter()
            .map(|r| r[generation].split_once(' ').unwrap().1)
            .collect();
        let winners: Vec<usize> = (0..PROCESSES).filter(|&p| lines[p] == "won").collect();
        assert_eq!(winners.len(), 1, "generation {generation}: {lines:?}");
        wins[winners[0]] += 1;
        let lost = format!("lost {}", names[winners[0]]);
        for (p, line) in lines.iter().enumerate() {
            assert!(
                p == winners[0] || *line == lost,
                "generation {generation}: {lines:?}"
            );
        }
    }
    let arbiter = FileArbiter::new(dir.join("claims")).unwrap();
    assert_eq!(arbiter.current("race").unwrap().unwrap().0, ROUNDS - 1);
    eprintln!(
        "{PROCESSES} processes x {ROUNDS} generations: one winner each; wins per process \
         {wins:?}; {:?}",
        started.elapsed()
    );
}
