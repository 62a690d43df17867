//! The file arbiter: a claim is a file created atomically in a directory both hosts share.
//!
//! Generation `G` of VM `V` is claimed by creating `DIR/V.gen-G`. The claimant writes its record
//! (its name, the VM, the generation and a checksum) into a temporary file of its own, fsyncs it,
//! and then `link(2)`s it to the claim name. `link` fails with `EEXIST` if the name exists, and
//! is atomic on local file systems and on NFS alike (unlike `O_EXCL` on old NFS clients), so
//! exactly one claimant creates the name; and since the record is complete before it gets the
//! name, a crash never leaves a half-written claim. After a successful link the directory is
//! fsynced so the claim survives a power cut.
//!
//! On `EEXIST` the claim file is read: if it names the caller, the call is a repeat by the winner
//! and returns `Won`. This also covers NFS's lost-reply case, where a retransmitted `link` that
//! had in fact succeeded reports `EEXIST`: the file then holds the caller's own record.
//!
//! Claim files are never removed or rewritten by this crate. A crash between writing the
//! temporary file and linking it leaves a `V.gen-G.tmp-*` file behind, which is ignored (and may
//! be deleted by hand). The directory must support hard links, as every local Linux file system
//! and NFS do.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::name::{validate_claimant, validate_vm_name};
use crate::{Arbiter, ArbiterError, Claim};

/// The first line of every record: names the format and its one version.
const MAGIC: &str = "ftvm-arbiter claim v1";

/// A record is a few short lines; anything longer was not written by this crate.
const MAX_RECORD_LEN: u64 = 1024;

/// Makes temporary names unique among the threads of one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A test-and-set on a directory both hosts share (one machine, or NFS).
#[derive(Debug)]
pub struct FileArbiter {
    dir: PathBuf,
}

impl FileArbiter {
    /// Opens the arbiter directory `dir`, creating it if missing, and checks that this process
    /// can create files in it (so a read-only or foreign directory fails now, not at failover).
    pub fn new(dir: impl Into<PathBuf>) -> Result<FileArbiter, ArbiterError> {
        let dir = dir.into();
        let dir_error = |action, source| ArbiterError::Dir {
            path: dir.clone(),
            action,
            source,
        };
        fs::create_dir_all(&dir).map_err(|e| dir_error("creating it", e))?;
        let probe = dir.join(format!(".probe{}", unique_suffix("")));
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
            .map_err(|e| dir_error("creating a file in it", e))?;
        fs::remove_file(&probe).map_err(|e| dir_error("removing a file from it", e))?;
        Ok(FileArbiter { dir })
    }

    /// The directory claims are kept in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn claim_path(&self, vm: &str, generation: u64) -> PathBuf {
        self.dir.join(format!("{vm}.gen-{generation}"))
    }

    /// Writes `who`'s record for (vm, generation) to a new temporary file and syncs it.
    fn write_temp(&self, vm: &str, generation: u64, who: &str) -> Result<PathBuf, ArbiterError> {
        let temp = self
            .dir
            .join(format!("{vm}.gen-{generation}.tmp{}", unique_suffix(who)));
        let file_error = |action, source| ArbiterError::File {
            path: temp.clone(),
            action,
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| file_error("creating the temporary record", e))?;
        let written = file
            .write_all(encode_record(vm, generation, who).as_bytes())
            .and_then(|()| file.sync_all());
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(file_error("writing the temporary record", e));
        }
        Ok(temp)
    }

    fn sync_dir(&self) -> Result<(), ArbiterError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| ArbiterError::Dir {
                path: self.dir.clone(),
                action: "syncing it",
                source,
            })
    }

    /// Reads the winner from an existing claim file, checking it is the record for its name.
    fn read_winner(&self, vm: &str, generation: u64) -> Result<String, ArbiterError> {
        let path = self.claim_path(vm, generation);
        let file_error = |source| ArbiterError::File {
            path: path.clone(),
            action: "reading it",
            source,
        };
        let file = File::open(&path).map_err(file_error)?;
        let mut bytes = Vec::new();
        file.take(MAX_RECORD_LEN + 1)
            .read_to_end(&mut bytes)
            .map_err(file_error)?;
        decode_record(&bytes, vm, generation).map_err(|reason| ArbiterError::BadRecord {
            path: path.clone(),
            reason,
        })
    }
}

impl Arbiter for FileArbiter {
    fn test_and_set(&self, vm: &str, generation: u64, who: &str) -> Result<Claim, ArbiterError> {
        validate_vm_name(vm)?;
        validate_claimant(who)?;
        let path = self.claim_path(vm, generation);
        let temp = self.write_temp(vm, generation, who)?;
        let linked = fs::hard_link(&temp, &path);
        // The claim file, if ours, is another name for the same inode: the temporary name can go.
        let _ = fs::remove_file(&temp);
        match linked {
            Ok(()) => {
                self.sync_dir()?;
                Ok(Claim::Won)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let winner = self.read_winner(vm, generation)?;
                Ok(if winner == who {
                    Claim::Won
                } else {
                    Claim::Lost { winner }
                })
            }
            Err(source) => Err(ArbiterError::File {
                path,
                action: "linking the record to the claim name",
                source,
            }),
        }
    }

    fn current(&self, vm: &str) -> Result<Option<(u64, String)>, ArbiterError> {
        validate_vm_name(vm)?;
        let dir_error = |source| ArbiterError::Dir {
            path: self.dir.clone(),
            action: "listing it",
            source,
        };
        let prefix = format!("{vm}.gen-");
        let mut highest = None;
        for entry in fs::read_dir(&self.dir).map_err(dir_error)? {
            let name = entry.map_err(dir_error)?.file_name();
            let generation = name
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .and_then(parse_generation);
            if generation > highest {
                highest = generation;
            }
        }
        match highest {
            None => Ok(None),
            Some(generation) => Ok(Some((generation, self.read_winner(vm, generation)?))),
        }
    }

    fn describe(&self) -> String {
        format!("file:{}", self.dir.display())
    }
}

/// A generation as written in a claim name: decimal without leading zeros. Anything else (a
/// temporary file, a hand-made copy) is not a claim.
fn parse_generation(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// A suffix no other temporary file has: this process, a counter, the time, and the claimant
/// (so two hosts on NFS with equal process ids still differ).
fn unique_suffix(who: &str) -> String {
    let count = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "-{}-{count}-{nanos:08x}-{:016x}",
        std::process::id(),
        fnv1a64(who.as_bytes())
    )
}

fn record_body(vm: &str, generation: u64, who: &str) -> String {
    format!("{MAGIC}\nvm {vm}\ngeneration {generation}\nwinner {who}\n")
}

/// The record: human-readable lines, then a checksum of them.
fn encode_record(vm: &str, generation: u64, who: &str) -> String {
    let body = record_body(vm, generation, who);
    let sum = fnv1a64(body.as_bytes());
    format!("{body}fnv1a64 {sum:016x}\n")
}

/// Checks a record is the one for (vm, generation) and returns its winner.
fn decode_record(bytes: &[u8], vm: &str, generation: u64) -> Result<String, String> {
    if bytes.len() as u64 > MAX_RECORD_LEN {
        return Err(format!("longer than {MAX_RECORD_LEN} bytes"));
    }
    if bytes.is_empty() {
        return Err("empty".to_owned());
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    if !text.ends_with('\n') || lines.len() != 5 {
        return Err("not the five lines of a claim record".to_owned());
    }
    if lines[0] != MAGIC {
        return Err(format!("first line is not {MAGIC:?}"));
    }
    let field = |line: &'static str, index: usize| {
        lines[index]
            .strip_prefix(line)
            .and_then(|rest| rest.strip_prefix(' '))
            .ok_or(format!("line {} is not the {line:?} field", index + 1))
    };
    let (record_vm, record_generation, winner, sum) = (
        field("vm", 1)?,
        field("generation", 2)?,
        field("winner", 3)?,
        field("fnv1a64", 4)?,
    );
    let body_len = text.len() - lines[4].len() - 1;
    let expected = format!("{:016x}", fnv1a64(&bytes[..body_len]));
    if sum != expected {
        return Err(format!("checksum {sum} should be {expected}"));
    }
    if record_vm != vm || record_generation != generation.to_string() {
        return Err(format!(
            "it records VM {record_vm:?} generation {record_generation}, not {vm:?} generation \
             {generation}"
        ));
    }
    validate_claimant(winner).map_err(|_| format!("winner {winner:?} is not a valid name"))?;
    Ok(winner.to_owned())
}

/// FNV-1a, 64-bit: enough to catch a damaged or hand-edited record (not an attacker, who could
/// as well write a valid record).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!("arbiter-{tag}{}", unique_suffix(tag)));
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn first_claim_wins_and_repeats_are_idempotent() {
        let dir = TempDir::new("basic");
        let arbiter = FileArbiter::new(&dir.0).unwrap();
        assert_eq!(arbiter.current("vm1").unwrap(), None);
        assert_eq!(
            arbiter.test_and_set("vm1", 7, "host-a").unwrap(),
            Claim::Won
        );
        assert_eq!(
            arbiter.test_and_set("vm1", 7, "host-a").unwrap(),
            Claim::Won
        );
        let lost = Claim::Lost {
            winner: "host-a".to_owned(),
        };
        assert_eq!(arbiter.test_and_set("vm1", 7, "host-b").unwrap(), lost);
        // Another generation and another VM are separate claims.
        assert_eq!(
            arbiter.test_and_set("vm1", 8, "host-b").unwrap(),
            Claim::Won
        );
        assert_eq!(
            arbiter.test_and_set("vm1.gen-7", 3, "host-c").unwrap(),
            Claim::Won
        );
        assert_eq!(
            arbiter.test_and_set("vm1", 2, "host-c").unwrap(),
            Claim::Won
        );
        assert_eq!(
            arbiter.current("vm1").unwrap(),
            Some((8, "host-b".to_owned()))
        );
        assert_eq!(
            arbiter.current("vm1.gen-7").unwrap(),
            Some((3, "host-c".to_owned()))
        );
        // A second arbiter on the same directory (the other host) sees the same claims.
        let other = FileArbiter::new(&dir.0).unwrap();
        assert_eq!(other.test_and_set("vm1", 7, "host-b").unwrap(), lost);
        // No temporary file is left behind.
        let mut names: Vec<String> = fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["vm1.gen-2", "vm1.gen-7", "vm1.gen-7.gen-3", "vm1.gen-8"]
        );
    }

    #[test]
    fn extreme_generations() {
        let dir = TempDir::new("extreme");
        let arbiter = FileArbiter::new(&dir.0).unwrap();
        assert_eq!(arbiter.test_and_set("v", 0, "a").unwrap(), Claim::Won);
        assert_eq!(arbiter.current("v").unwrap(), Some((0, "a".to_owned())));
        assert_eq!(
            arbiter.test_and_set("v", u64::MAX, "b").unwrap(),
            Claim::Won
        );
        assert_eq!(
            arbiter.current("v").unwrap(),
            Some((u64::MAX, "b".to_owned()))
        );
    }

    #[test]
    fn rejects_bad_names_before_touching_the_directory() {
        let dir = TempDir::new("names");
        let arbiter = FileArbiter::new(&dir.0).unwrap();
        for vm in ["", "../x", "a/b", ".."] {
            assert!(matches!(
                arbiter.test_and_set(vm, 1, "a"),
                Err(ArbiterError::InvalidVmName { .. })
            ));
            assert!(matches!(
                arbiter.current(vm),
                Err(ArbiterError::InvalidVmName { .. })
            ));
        }
        assert!(matches!(
            arbiter.test_and_set("vm", 1, "a\nwinner b"),
            Err(ArbiterError::InvalidClaimant { .. })
        ));
        assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 0);
    }

    #[test]
    fn ignores_files_that_are_not_claims() {
        let dir = TempDir::new("ignore");
        let arbiter = FileArbiter::new(&dir.0).unwrap();
        assert_eq!(arbiter.test_and_set("vm", 5, "a").unwrap(), Claim::Won);
        for junk in [
            "vm.gen-09",
            "vm.gen-",
            "vm.gen-9.tmp-1-2-3",
            "vm.gen-99999999999999999999",
        ] {
            fs::write(dir.0.join(junk), "junk").unwrap();
        }
        assert_eq!(arbiter.current("vm").unwrap(), Some((5, "a".to_owned())));
    }

    #[test]
    fn damaged_or_renamed_records_are_errors_not_answers() {
        let dir = TempDir::new("damaged");
        let arbiter = FileArbiter::new(&dir.0).unwrap();
        assert_eq!(arbiter.test_and_set("vm", 1, "host-a").unwrap(), Claim::Won);
        let good = fs::read_to_string(dir.0.join("vm.gen-1")).unwrap();

        // Renamed to another generation: the record says 1, the name says 2.
        fs::write(dir.0.join("vm.gen-2"), &good).unwrap();
        let e = arbiter.test_and_set("vm", 2, "host-b").unwrap_err();
        assert!(matches!(e, ArbiterError::BadRecord { .. }), "{e}");
        assert!(e.to_string().contains("generation 1"), "{e}");
        assert!(arbiter.current("vm").is_err());
        fs::remove_file(dir.0.join("vm.gen-2")).unwrap();

        let edited = good.replace("winner host-a", "winner host-b");
        let cases: [(&str, &[u8]); 5] = [
            ("checksum", edited.as_bytes()),
            ("empty", b""),
            ("UTF-8", b"\xff\xfe\n"),
            ("five lines", b"ftvm-arbiter claim v1\n"),
            ("longer", &[b'x'; 2000]),
        ];
        for (expect, bytes) in cases {
            fs::write(dir.0.join("vm.gen-1"), bytes).unwrap();
            let e = arbiter.test_and_set("vm", 1, "host-b").unwrap_err();
            assert!(matches!(e, ArbiterError::BadRecord { .. }), "{e}");
            assert!(e.to_string().contains(expect), "{expect}: {e}");
        }
    }

    #[test]
    fn records_round_trip_and_detect_every_edit() {
        let record = encode_record("vm", 42, "host a");
        assert_eq!(
            decode_record(record.as_bytes(), "vm", 42).unwrap(),
            "host a"
        );
        assert!(decode_record(record.as_bytes(), "vm", 43).is_err());
        assert!(decode_record(record.as_bytes(), "vm2", 42).is_err());
        // Flipping any one byte is caught.
        for i in 0..record.len() {
            let mut bytes = record.clone().into_bytes();
            bytes[i] ^= 0x01;
            assert!(decode_record(&bytes, "vm", 42).is_err(), "byte {i}");
        }
    }

    #[test]
    fn unusable_directories_are_reported_with_the_path() {
        let dir = TempDir::new("unusable");
        fs::write(&dir.0, "a file, not a directory").unwrap();
        let e = FileArbiter::new(dir.0.join("sub")).unwrap_err();
        assert!(matches!(e, ArbiterError::Dir { .. }), "{e}");
        assert!(e.to_string().contains(&*dir.0.to_string_lossy()), "{e}");
        let _ = fs::remove_file(&dir.0);
    }

    #[test]
    fn many_threads_one_winner_per_generation() {
        const THREADS: usize = 8;
        const ROUNDS: u64 = 200;
        let dir = TempDir::new("threads");
        let arbiter = Arc::new(FileArbiter::new(&dir.0).unwrap());
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (arbiter, barrier) = (arbiter.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let who = format!("thread-{t}");
                    (0..ROUNDS)
                        .map(|generation| {
                            barrier.wait();
                            arbiter.test_and_set("race", generation, &who).unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let results: Vec<Vec<Claim>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for generation in 0..ROUNDS as usize {
            let winners: Vec<usize> = (0..THREADS)
                .filter(|&t| results[t][generation] == Claim::Won)
                .collect();
            assert_eq!(winners.len(), 1, "generation {generation}: {winners:?}");
            let winner = format!("thread-{}", winners[0]);
            for row in &results {
                assert!(
                    row[generation] == Claim::Won
                        || row[generation]
                            == Claim::Lost {
                                winner: winner.clone()
                            }
                );
            }
        }
        assert_eq!(arbiter.current("race").unwrap().unwrap().0, ROUNDS - 1);
    }
}
