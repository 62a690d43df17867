//! The logging channel as a transport: what the primary and the backup need of it — send a
//! message, receive the next one, hang up — whatever carries the bytes.
//!
//! In production the bytes go over TCP ([`Channel::tcp`], after [`crate::wire`]'s
//! handshake). [`mem::pair`] carries the very same frames (each message sealed as Noise
//! records of [`crate::noise`], opened the same way, under a session of its own) through
//! memory, with a [`mem::Faults`] handle that can hold, lose, duplicate, reorder or corrupt a
//! frame or cut the link: the primary, the backup, their
//! go-live and the arbiter between them then run in one test process without sockets, in
//! milliseconds (the tests in `pair_tests.rs`).
//!
//! Why a seam here and not elsewhere: the FT protocol's decisions (hold output until an ack,
//! what a stream break means, who may go live) depend only on which messages arrive, in which
//! order, and when the stream ends. Everything below that — TCP, kernel buffers, the wire's
//! framing — is the transport's business.

use crate::wire::{Msg, MsgReader, MsgWriter, WireError};
use std::sync::Arc;

/// Sends messages, in order, each encrypted and authenticated.
pub trait SendMsg: Send {
    /// Sends one message; an error means the channel is broken.
    fn send(&mut self, m: &Msg) -> Result<(), WireError>;
}

/// Receives the peer's messages, in order.
pub trait RecvMsg: Send {
    /// Waits for the next message. A message that fails its tag (corrupted, forged, replayed,
    /// reordered, one lost before it) is an error ([`WireError::BadTag`], nothing of it
    /// returned), and so is the end of the stream: a break, never a silence.
    fn recv(&mut self) -> Result<Msg, WireError>;
}

/// Ends a channel from any thread, whoever holds its halves.
pub trait Hangup: Send + Sync {
    /// Closes both directions: the peer's and our own pending `recv` see the end.
    fn close(&self);
    /// Closes our sending direction only: the peer reads what was sent, then the end.
    fn close_write(&self);
}

/// One side of a connected channel.
pub struct Channel {
    /// Our sending half.
    pub tx: Box<dyn SendMsg>,
    /// Our receiving half.
    pub rx: Box<dyn RecvMsg>,
    /// Hangs the channel up.
    pub hangup: Arc<dyn Hangup>,
}

impl SendMsg for MsgWriter {
    fn send(&mut self, m: &Msg) -> Result<(), WireError> {
        MsgWriter::send(self, m)
    }
}

impl RecvMsg for MsgReader {
    fn recv(&mut self) -> Result<Msg, WireError> {
        MsgReader::recv(self)
    }
}

/// The TCP stream under a channel.
struct TcpHangup(std::net::TcpStream);

impl Hangup for TcpHangup {
    fn close(&self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
    fn close_write(&self) {
        let _ = self.0.shutdown(std::net::Shutdown::Write);
    }
}

impl Channel {
    /// The channel over an encrypted, authenticated TCP stream ([`crate::wire::connect_handshake`] or
    /// [`crate::wire::accept_handshake`]).
    pub fn tcp(w: MsgWriter, r: MsgReader) -> std::io::Result<Channel> {
        let stream = w.stream_clone()?;
        Ok(Channel {
            tx: Box::new(w),
            rx: Box::new(r),
            hangup: Arc::new(TcpHangup(stream)),
        })
    }
}

/// An in-memory transport: two ends joined by two pipes of frames, for tests.
pub mod mem {
    use super::{Channel, Hangup, RecvMsg, SendMsg};
    use crate::noise::{self, Opener, Sealer};
    use crate::wire::{self, Msg, WireError};
    use std::collections::VecDeque;
    use std::sync::{Arc, Condvar, Mutex, MutexGuard};
    use std::time::Duration;

    /// What happens to the next frame sent in one direction.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Fault {
        /// It vanishes (the receiver then sees the one after it fail its tag).
        Lose,
        /// It arrives twice (the copy fails its tag: a replay).
        Duplicate,
        /// One bit of its ciphertext flips.
        Corrupt,
        /// It arrives after the frame sent next (which then fails its tag).
        Reorder,
    }

    #[derive(Default)]
    struct PipeState {
        frames: VecDeque<Vec<u8>>,
        /// No more frames will come (the sender hung up or the link was cut).
        closed: bool,
        /// Frames wait here, undelivered, while held (a slow network, acks that do not come).
        held: bool,
        parked: VecDeque<Vec<u8>>,
        faults: VecDeque<Fault>,
        /// A frame kept back by [`Fault::Reorder`], to follow the next one.
        late: Option<Vec<u8>>,
        /// Frames put on this pipe so far.
        sent: u64,
    }

    /// One direction of the link.
    #[derive(Default)]
    struct Pipe {
        state: Mutex<PipeState>,
        cv: Condvar,
    }

    impl Pipe {
        fn lock(&self) -> MutexGuard<'_, PipeState> {
            self.state.lock().unwrap_or_else(|p| p.into_inner())
        }

        fn put(&self, frame: Vec<u8>) -> Result<(), WireError> {
            let mut s = self.lock();
            if s.closed {
                return Err(WireError::Closed);
            }
            s.sent += 1;
            let mut frames = vec![frame];
            match s.faults.pop_front() {
                Some(Fault::Lose) => frames.clear(),
                Some(Fault::Duplicate) => frames.push(frames[0].clone()),
                Some(Fault::Corrupt) => {
                    // A bit of the first record's ciphertext (past its length).
                    let f = &mut frames[0];
                    let at = 2 + (f.len().min(noise::MAX_RECORD) - 2) / 2;
                    f[at] ^= 0x10;
                }
                Some(Fault::Reorder) => {
                    s.late = frames.pop();
                }
                None => frames.extend(s.late.take()),
            }
            if s.held {
                s.parked.extend(frames);
            } else {
                s.frames.extend(frames);
            }
            drop(s);
            self.cv.notify_all();
            Ok(())
        }

        fn take(&self) -> Result<Vec<u8>, WireError> {
            let mut s = self.lock();
            loop {
                if let Some(f) = s.frames.pop_front() {
                    return Ok(f);
                }
                if s.closed {
                    return Err(WireError::Closed);
                }
                s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner());
            }
        }

        fn close(&self) {
            self.lock().closed = true;
            self.cv.notify_all();
        }

        /// Closes the pipe and throws away what it still carries (a cable cut: what was in
        /// flight never arrives).
        fn cut(&self) {
            let mut s = self.lock();
            s.closed = true;
            s.frames.clear();
            s.parked.clear();
            drop(s);
            self.cv.notify_all();
        }
    }

    struct Tx {
        pipe: Arc<Pipe>,
        sealer: Sealer,
    }

    impl SendMsg for Tx {
        fn send(&mut self, m: &Msg) -> Result<(), WireError> {
            let f = self.sealer.seal(&m.encode())?;
            self.pipe.put(f)
        }
    }

    struct Rx {
        pipe: Arc<Pipe>,
        opener: Opener,
    }

    impl RecvMsg for Rx {
        fn recv(&mut self) -> Result<Msg, WireError> {
            let f = self.pipe.take()?;
            let mut r = f.as_slice();
            let body = self.opener.recv(&mut r, wire::MAX_MSG)?;
            if !r.is_empty() {
                return Err(WireError::Malformed(wire::BadMessage::Record(
                    crate::noise::BadRecord::Trailing(r.len()),
                )));
            }
            Msg::decode(&body)
        }
    }

    struct Ends {
        out: Arc<Pipe>,
        inc: Arc<Pipe>,
    }

    impl Hangup for Ends {
        fn close(&self) {
            self.out.close();
            self.inc.close();
        }
        fn close_write(&self) {
            self.out.close();
        }
    }

    /// Which way a fault goes.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Dir {
        /// Primary to backup: log, disk chunks, pages.
        ToBackup,
        /// Backup to primary: acknowledgements.
        ToPrimary,
    }

    /// Breaks the link on purpose.
    #[derive(Clone)]
    pub struct Faults {
        to_backup: Arc<Pipe>,
        to_primary: Arc<Pipe>,
    }

    impl Faults {
        fn pipe(&self, d: Dir) -> &Pipe {
            match d {
                Dir::ToBackup => &self.to_backup,
                Dir::ToPrimary => &self.to_primary,
            }
        }

        fn fault(&self, d: Dir, f: Fault) {
            self.pipe(d).lock().faults.push_back(f);
        }

        /// The next frame sent that way is lost.
        pub fn lose_next(&self, d: Dir) {
            self.fault(d, Fault::Lose);
        }

        /// The next frame sent that way arrives twice.
        pub fn duplicate_next(&self, d: Dir) {
            self.fault(d, Fault::Duplicate);
        }

        /// The next frame sent that way has a bit flipped.
        pub fn corrupt_next(&self, d: Dir) {
            self.fault(d, Fault::Corrupt);
        }

        /// The next frame sent that way arrives after the one sent after it.
        pub fn reorder_next(&self, d: Dir) {
            self.fault(d, Fault::Reorder);
        }

        /// Frames sent that way wait, undelivered, until [`Faults::deliver`].
        pub fn hold(&self, d: Dir) {
            self.pipe(d).lock().held = true;
        }

        /// Delivers what [`Faults::hold`] kept back, and stops holding.
        pub fn deliver(&self, d: Dir) {
            let p = self.pipe(d);
            let mut s = p.lock();
            s.held = false;
            let parked = std::mem::take(&mut s.parked);
            s.frames.extend(parked);
            drop(s);
            p.cv.notify_all();
        }

        /// Frames sent that way so far.
        pub fn sent(&self, d: Dir) -> u64 {
            self.pipe(d).lock().sent
        }

        /// Waits until `n` frames have been sent that way (`false` after `timeout`).
        pub fn wait_sent(&self, d: Dir, n: u64, timeout: Duration) -> bool {
            let p = self.pipe(d);
            let s = p.lock();
            let (s, _) =
                p.cv.wait_timeout_while(s, timeout, |s| s.sent < n && !s.closed)
                    .unwrap_or_else(|e| e.into_inner());
            s.sent >= n
        }

        /// Cuts the cable: both directions end, and what was in flight never arrives.
        pub fn cut(&self) {
            self.to_backup.cut();
            self.to_primary.cut();
        }
    }

    /// Two connected ends — the primary's and the backup's — and the link's fault handle.
    /// The frames are sealed under a Noise session of their own, as after a handshake.
    pub fn pair() -> (Channel, Channel, Faults) {
        let ((p_seal, p_open), (b_seal, b_open)) = noise::memory_session();
        let to_backup = Arc::new(Pipe::default());
        let to_primary = Arc::new(Pipe::default());
        let end = |out: &Arc<Pipe>, inc: &Arc<Pipe>, sealer: Sealer, opener: Opener| Channel {
            tx: Box::new(Tx {
                pipe: Arc::clone(out),
                sealer,
            }),
            rx: Box::new(Rx {
                pipe: Arc::clone(inc),
                opener,
            }),
            hangup: Arc::new(Ends {
                out: Arc::clone(out),
                inc: Arc::clone(inc),
            }),
        };
        let primary = end(&to_backup, &to_primary, p_seal, p_open);
        let backup = end(&to_primary, &to_backup, b_seal, b_open);
        (
            primary,
            backup,
            Faults {
                to_backup,
                to_primary,
            },
        )
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn log(h: u64) -> Msg {
            Msg::Log {
                horizon: h,
                released: 0,
                bytes: vec![h as u8; 3],
            }
        }

        #[test]
        fn frames_arrive_in_order_and_the_end_is_seen() {
            let (mut p, mut b, _) = pair();
            for h in 1..=3 {
                p.tx.send(&log(h)).unwrap();
            }
            for h in 1..=3 {
                assert_eq!(b.rx.recv().unwrap(), log(h));
            }
            p.hangup.close_write();
            assert!(matches!(b.rx.recv(), Err(WireError::Closed)));
        }

        #[test]
        fn a_lost_duplicated_reordered_or_corrupted_frame_is_a_break() {
            // (the fault, the messages that still arrive intact)
            for (name, fault, intact) in [
                ("lost", Faults::lose_next as fn(&Faults, Dir), 1),
                ("duplicated", Faults::duplicate_next, 2),
                ("corrupted", Faults::corrupt_next, 1),
                ("reordered", Faults::reorder_next, 1),
            ] {
                let (mut p, mut b, f) = pair();
                p.tx.send(&log(1)).unwrap();
                fault(&f, Dir::ToBackup);
                p.tx.send(&log(2)).unwrap();
                p.tx.send(&log(3)).unwrap();
                for h in 1..=intact {
                    assert_eq!(b.rx.recv().unwrap(), log(h), "{name}");
                }
                let next = b.rx.recv();
                assert!(matches!(next, Err(WireError::BadTag)), "{name}: {next:?}");
            }
        }

        #[test]
        fn held_frames_arrive_on_delivery_and_a_cut_loses_them() {
            let (mut p, mut b, f) = pair();
            f.hold(Dir::ToPrimary);
            b.tx.send(&log(1)).unwrap();
            f.deliver(Dir::ToPrimary);
            assert_eq!(p.rx.recv().unwrap(), log(1));
            f.hold(Dir::ToPrimary);
            b.tx.send(&log(2)).unwrap();
            f.cut();
            assert!(matches!(p.rx.recv(), Err(WireError::Closed)));
            assert!(matches!(b.tx.send(&log(3)), Err(WireError::Closed)));
        }
    }
}
