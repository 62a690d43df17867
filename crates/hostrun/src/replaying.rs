//! The host loop of a machine replayed from a log that is still arriving: an FT backup.
//!
//! A replaying machine takes no input from the host: everything it takes is in the log, at the
//! icount it took effect. What the host decides is only *when* the replay moves on: never past
//! the horizon the log's sender has announced (the icount up to which every entry has been
//! given), and a slice at a time so that newly arrived log is taken in between. One turn of the
//! loop ([`replay`]):
//!
//! 1. **inputs** — the role waits up to [`REPLAY_TURN`] for log (or anything else that
//!    arrives, such as the news that the sender is gone) and applies what came;
//! 2. **a slice** — the replayer runs on as far as the horizon, at most [`rr::SLICE`] steps;
//! 3. **after the slice** — the role passes on the output and says how far it has replayed,
//!    and looks at its peer (silence, status).
//!
//! Either the inputs or the after-slice step can end the loop ([`Turn::End`]); the role
//! then does what follows (stopping, or going live — from then on the machine runs on the
//! [`crate::Runner`] like any live one).

use rr::Replayer;
use std::time::Duration;

/// How long a turn waits for log when none has arrived: the replay moves on at least this
/// often, and the role looks at its peer this often.
pub const REPLAY_TURN: Duration = Duration::from_millis(5);

/// What a step of a replaying role says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn<E> {
    /// Go on.
    Go,
    /// The loop ends with this.
    End(E),
}

/// The role of a replaying machine: where its log comes from and what it tells its peer.
pub trait Replaying {
    /// How the loop ends (e.g. the sender stopped, or was lost and why).
    type End;
    /// The role's errors; a failed replay is one of them.
    type Error: From<rr::ReplayError>;

    /// Waits up to `timeout` for input (log, the sender's end) and applies what came.
    fn take_input(&mut self, timeout: Duration) -> Result<Turn<Self::End>, Self::Error>;

    /// The replayer, once the log has brought one, and the horizon it may run to.
    fn replayer(&mut self) -> Option<(&mut Replayer, u64)>;

    /// After a slice was replayed (or there was nothing to replay): output, progress reports,
    /// the peer's liveness.
    fn after_slice(&mut self) -> Result<Turn<Self::End>, Self::Error>;
}

/// Runs `role`'s replay until one of its steps ends it (module docs).
pub fn replay<R: Replaying + ?Sized>(role: &mut R) -> Result<R::End, R::Error> {
    loop {
        if let Turn::End(e) = role.take_input(REPLAY_TURN)? {
            return Ok(e);
        }
        if let Some((rp, horizon)) = role.replayer() {
            let target = horizon.min(rp.icount().saturating_add(rr::SLICE));
            rp.run_to(target)?;
        }
        if let Turn::End(e) = role.after_slice()? {
            return Ok(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A role without a replayer that ends after `turns` turns, counting its calls.
    struct Counting {
        turns: u32,
        taken: u32,
        after: u32,
        end_in_input: bool,
    }

    impl Replaying for Counting {
        type End = &'static str;
        type Error = rr::ReplayError;
        fn take_input(&mut self, timeout: Duration) -> Result<Turn<&'static str>, Self::Error> {
            assert_eq!(timeout, REPLAY_TURN);
            self.taken += 1;
            Ok(if self.end_in_input && self.taken == self.turns {
                Turn::End("input")
            } else {
                Turn::Go
            })
        }
        fn replayer(&mut self) -> Option<(&mut Replayer, u64)> {
            None
        }
        fn after_slice(&mut self) -> Result<Turn<&'static str>, Self::Error> {
            self.after += 1;
            Ok(if !self.end_in_input && self.after == self.turns {
                Turn::End("after")
            } else {
                Turn::Go
            })
        }
    }

    #[test]
    fn either_step_ends_the_loop_and_each_turn_takes_input_first() {
        let mut r = Counting {
            turns: 3,
            taken: 0,
            after: 0,
            end_in_input: false,
        };
        assert_eq!(replay(&mut r).unwrap(), "after");
        assert_eq!((r.taken, r.after), (3, 3));
        let mut r = Counting {
            turns: 3,
            taken: 0,
            after: 0,
            end_in_input: true,
        };
        assert_eq!(replay(&mut r).unwrap(), "input");
        assert_eq!((r.taken, r.after), (3, 2), "nothing after the end");
    }
}
