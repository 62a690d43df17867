//! Validation of the names that go into claim file names, record files and etcd keys.
//!
//! VM names become part of a path and of a key, so they are restricted to characters that are
//! safe in both; claimant names are stored as one line of a record, so they may not contain
//! control characters (a newline would forge a record field).

use crate::ArbiterError;

/// The longest VM name accepted.
pub const MAX_VM_NAME_LEN: usize = 64;

/// The longest claimant (`who`) name accepted, in bytes.
pub const MAX_CLAIMANT_LEN: usize = 255;

/// Checks that `vm` is 1 to 64 characters from `[A-Za-z0-9._-]`, and not `.` or `..`.
pub fn validate_vm_name(vm: &str) -> Result<(), ArbiterError> {
    let ok = (1..=MAX_VM_NAME_LEN).contains(&vm.len())
        && vm
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && vm != "."
        && vm != "..";
    if ok {
        Ok(())
    } else {
        Err(ArbiterError::InvalidVmName {
            name: vm.to_owned(),
        })
    }
}

/// Checks that `who` is 1 to 255 bytes of UTF-8 with no control characters and no leading or
/// trailing whitespace (which a reader of a status line could not see).
pub fn validate_claimant(who: &str) -> Result<(), ArbiterError> {
    let ok = (1..=MAX_CLAIMANT_LEN).contains(&who.len())
        && !who.chars().any(char::is_control)
        && who.trim() == who;
    if ok {
        Ok(())
    } else {
        Err(ArbiterError::InvalidClaimant {
            name: who.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_names() {
        for good in ["vm1", "a", "web-01.prod_x", &"x".repeat(64), "..a", "a.."] {
            assert!(validate_vm_name(good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../etc",
            "a b",
            "é",
            "a\n",
            "a:b",
            &"x".repeat(65),
        ] {
            let e = validate_vm_name(bad).unwrap_err().to_string();
            assert!(e.contains("A-Z a-z 0-9"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn claimant_names() {
        for good in ["host-a", "host a (pid 12)", "ü", &"x".repeat(255)] {
            assert!(validate_claimant(good).is_ok(), "{good:?}");
        }
        for bad in ["", " a", "a ", "a\nwinner b", "a\0", &"x".repeat(256)] {
            assert!(validate_claimant(bad).is_err(), "{bad:?}");
        }
    }
}
