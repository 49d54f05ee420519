//! What a rank remembers about collectives, whatever the transport carries them.
//!
//! Contract: `start` is called when a collective begins, `settle` once the transport has read what
//! is waiting; messages of finished collectives that nobody consumed are checked against this rank's
//! call and dropped; an abort or a mismatch another rank raised for a collective this rank already
//! finished is handed out once, by `deferred`, and never for a collective this rank failed itself.
//! Whatever a peer said it failed is kept per peer too (its latest failure), so that a peer seen
//! gone later is described by what made it leave ([`Ledger::explain`]) even when another rank's
//! abort of the same collective arrived first.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use crate::error::{CollectiveError, Error, Result};
use crate::transport::Ctx;
use crate::types::{Coll, Signature};

/// How many past collectives' calls a rank remembers (to answer peers, to judge late messages).
pub(crate) const SIG_LOG: usize = 256;

/// Complete messages by (sender, collective, tag): the sender's call and the bytes.
pub(crate) type Inbox = HashMap<(usize, u32, u32), (Signature, Vec<u8>)>;

/// Per-rank memory of collectives: calls, received messages, and failures (see the module docs).
#[derive(Default)]
pub(crate) struct Ledger {
    /// Messages received and not consumed yet.
    pub inbox: Inbox,
    /// Collectives other ranks reported failed: seq -> (rank, reason), the first report of each
    /// (fill with [`Ledger::note_abort`]).
    pub aborts: HashMap<u32, (usize, String)>,
    /// The latest collective each peer reported it failed: rank -> (seq, reason).
    failures: HashMap<usize, (u32, String)>,
    /// Collectives this rank failed: seq -> reason.
    pub my_aborts: HashMap<u32, String>,
    /// Collectives for which a peer's message showed a call different from ours: (peer, its call).
    pub mismatches: HashMap<u32, (usize, Signature)>,
    reported: BTreeSet<u32>,
    sig_log: SigLog,
}

/// This rank's calls of its last [`SIG_LOG`] collectives.
#[derive(Default)]
pub(crate) struct SigLog(VecDeque<(u32, Signature)>);

impl SigLog {
    /// Remembers the call of collective `ctx`, forgetting the oldest beyond [`SIG_LOG`].
    pub fn push(&mut self, ctx: &Ctx) {
        self.0.push_back((ctx.seq, ctx.sig));
        if self.0.len() > SIG_LOG {
            self.0.pop_front();
        }
    }

    /// The call of collective `seq`, if it is among the last [`SIG_LOG`].
    pub fn get(&self, seq: u32) -> Option<Signature> {
        self.0
            .iter()
            .rev()
            .find(|(s, _)| *s == seq)
            .map(|(_, g)| *g)
    }

    /// The call of the last collective.
    pub fn last(&self) -> Option<&Signature> {
        self.0.back().map(|(_, g)| g)
    }

    /// The calls remembered, oldest first.
    pub fn calls(&self) -> impl Iterator<Item = &Signature> {
        self.0.iter().map(|(_, g)| g)
    }
}

impl Ledger {
    /// This rank's call for collective `seq`, if it is among the last [`SIG_LOG`].
    pub fn sig_of(&self, seq: u32) -> Option<Signature> {
        self.sig_log.get(seq)
    }

    /// This rank's calls of its last [`SIG_LOG`] collectives, oldest first.
    pub fn calls(&self) -> impl Iterator<Item = &Signature> {
        self.sig_log.calls()
    }

    /// The aborts peers sent or posted for collectives this rank did not fail itself: (seq, peer,
    /// reason).
    pub fn peer_aborts(&self) -> Vec<(u32, usize, String)> {
        self.aborts
            .iter()
            .filter(|(s, _)| !self.my_aborts.contains_key(s))
            .map(|(s, (by, reason))| (*s, *by, reason.clone()))
            .collect()
    }

    /// Peer `by` reported that it failed collective `seq` with `reason` (its ABORT, or the abort
    /// it posted): the collective's abort, unless another rank's came first, and `by`'s failure.
    pub fn note_abort(&mut self, seq: u32, by: usize, reason: String) {
        self.note_failure(seq, by, &reason);
        self.aborts.entry(seq).or_insert((by, reason));
    }

    /// Peer `by` showed that it failed collective `seq` with `reason` (an ABORT, or a STATUS
    /// saying so): kept as its latest failure unless one of a later collective is known.
    pub fn note_failure(&mut self, seq: u32, by: usize, reason: &str) {
        let later = |old: u32| seq.wrapping_sub(old) < 1 << 31;
        match self.failures.get_mut(&by) {
            Some((old, _)) if !later(*old) => {}
            Some(f) => *f = (seq, reason.to_owned()),
            None => {
                self.failures.insert(by, (seq, reason.to_owned()));
            }
        }
    }

    /// Whether peer `peer` reported a failure (see [`Ledger::note_failure`]).
    pub fn failed(&self, peer: usize) -> bool {
        self.failures.contains_key(&peer)
    }

    /// How a peer that is gone (`exit`) is described: when it failed a collective before it left,
    /// with its latest failure (what made it leave).
    pub fn explain(&self, peer: usize, exit: Option<&Exit>) -> Option<Exit> {
        match exit? {
            Exit::Gone(how) => Some(Exit::Gone(match self.failures.get(&peer) {
                Some((seq, reason)) => {
                    format!("{how}, after it failed collective #{seq}: {reason}")
                }
                None => how.clone(),
            })),
            code => Some(code.clone()),
        }
    }

    /// Collective `ctx` begins: remember the call, forget what is too old to matter.
    pub fn start(&mut self, ctx: &Ctx) {
        self.sig_log.push(ctx);
        let cutoff = ctx.seq.saturating_sub(SIG_LOG as u32);
        // Usually all empty: `retain` would still visit every bucket of their capacity.
        if !self.my_aborts.is_empty() {
            self.my_aborts.retain(|s, _| *s >= cutoff);
        }
        if !self.aborts.is_empty() {
            self.aborts.retain(|s, _| *s >= cutoff);
        }
        if !self.failures.is_empty() {
            self.failures.retain(|_, (s, _)| *s >= cutoff);
        }
        if !self.reported.is_empty() {
            self.reported.retain(|s| *s >= cutoff);
        }
    }

    /// After the transport read what was waiting: notes mismatches in leftovers of finished
    /// collectives, drops them, and fails `ctx` at once if a message for it shows another call.
    pub fn settle(&mut self, rank: usize, ctx: &Ctx) -> Result<()> {
        if self.inbox.is_empty() {
            return Ok(());
        }
        self.note_leftover_mismatches(ctx.seq);
        self.inbox.retain(|(_, s, _), _| *s >= ctx.seq);
        let early = self
            .inbox
            .iter()
            .find(|((_, s, _), (theirs, _))| *s == ctx.seq && *theirs != ctx.sig)
            .map(|((src, _, _), (theirs, _))| (*src, *theirs));
        if let Some((peer, theirs)) = early {
            return Err(Error::mismatch(rank, ctx.seq, peer, ctx.sig, theirs));
        }
        Ok(())
    }

    /// Messages of finished collectives nobody consumed that show a different call (another root).
    fn note_leftover_mismatches(&mut self, seq: u32) {
        if self.inbox.is_empty() {
            return;
        }
        for ((src, s, _), (theirs, _)) in &self.inbox {
            if *s < seq && self.sig_of(*s).is_some_and(|mine| mine != *theirs) {
                self.mismatches.entry(*s).or_insert((*src, *theirs));
            }
        }
    }

    /// The first error, not reported yet, that peers raised for a collective before `seq` which this
    /// rank finished (an abort, or a message showing a different call); all such are marked reported.
    pub fn deferred(&mut self, rank: usize, seq: u32) -> Option<Error> {
        self.note_leftover_mismatches(seq);
        let fresh =
            |s: &u32| *s < seq && !self.reported.contains(s) && !self.my_aborts.contains_key(s);
        let abort = self
            .aborts
            .iter()
            .filter(|(s, _)| fresh(s))
            .min_by_key(|(s, _)| **s);
        let mismatch = self
            .mismatches
            .iter()
            .filter(|(s, _)| fresh(s))
            .min_by_key(|(s, _)| **s);
        let err: Error = match (abort, mismatch) {
            (_, Some((s, (peer, theirs)))) if abort.is_none_or(|(a, _)| s <= a) => {
                Error::mismatch(rank, *s, *peer, self.sig_of(*s)?, *theirs)
            }
            (Some((s, (by, reason))), _) => Error::aborted(rank, *s, *by, reason.clone()),
            _ => return None,
        };
        let done: Vec<u32> = self
            .aborts
            .keys()
            .chain(self.mismatches.keys())
            .copied()
            .filter(fresh)
            .collect();
        self.reported.extend(done);
        Some(err)
    }

    /// The mismatch or abort already known for collective `ctx` itself.
    pub fn current(&self, rank: usize, ctx: &Ctx) -> Result<()> {
        if let Some((peer, theirs)) = self.mismatches.get(&ctx.seq) {
            return Err(Error::mismatch(rank, ctx.seq, *peer, ctx.sig, *theirs));
        }
        if let Some((by, reason)) = self.aborts.get(&ctx.seq) {
            return Err(Error::aborted(rank, ctx.seq, *by, reason.clone()));
        }
        Ok(())
    }

    /// [`deferred`](Self::deferred), then forgets mismatches too old to matter.
    pub fn take_deferred(&mut self, rank: usize, seq: u32) -> Option<Error> {
        if self.inbox.is_empty() && self.aborts.is_empty() && self.mismatches.is_empty() {
            // Nothing to report, nothing to drop.
            return None;
        }
        let e = self.deferred(rank, seq);
        let cutoff = seq.saturating_sub(SIG_LOG as u32);
        self.mismatches.retain(|s, _| *s >= cutoff);
        e
    }
}

/// What a waiting rank knows of a silent peer's life, besides the data path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Life {
    /// Nothing: silence past the timeout is an error.
    Unknown,
    /// The peer's process is alive and responsive (its liveness socket answered, or on this host
    /// its process runs): it is busy outside boad, or waiting for another rank. `at`: the
    /// collective it started last and whether it is inside it, when known.
    Alive {
        /// (collective, inside it).
        at: Option<(u32, bool)>,
    },
}

/// How a waiting rank learned that a peer ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// The launcher's `EXIT` line: the exit status.
    Code(i32),
    /// This rank saw it (`transport::gone`): how, for the error.
    Gone(String),
}

/// Whether a rank waiting in `ctx` for `peer`, silent on the data path for `silent`, may go on
/// waiting: an error if the peer exited, or has been silent past `timeout` with no sign of life;
/// a peer that is alive is waited for as long as it takes (like MPI), with a warning naming it on
/// stderr at most every `timeout` (`warned` keeps when the last one was printed). `job_ranks`
/// gives the job rank of each rank of the transport for the warning (empty: the same numbers; errors
/// are renumbered by their caller).
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_peer(
    rank: usize,
    ctx: Option<&Ctx>,
    peer: usize,
    exited: Option<&Exit>,
    silent: Duration,
    timeout: Duration,
    life: Life,
    warned: &mut Option<std::time::Instant>,
    job_ranks: &[usize],
) -> Result<()> {
    let call = || {
        ctx.map_or_else(
            || "finalize (delivering the last messages)".into(),
            Ctx::describe,
        )
    };
    match exited {
        Some(Exit::Code(code)) => {
            return Err(Error::new(
                rank,
                CollectiveError::PeerExited {
                    call: call(),
                    peer,
                    code: *code,
                },
            ))
        }
        Some(Exit::Gone(how)) => {
            return Err(Error::new(
                rank,
                CollectiveError::PeerGone {
                    call: call(),
                    peer,
                    how: how.clone(),
                },
            ))
        }
        None => {}
    }
    if silent <= timeout {
        return Ok(());
    }
    let Life::Alive { at } = life else {
        return Err(Error::new(
            rank,
            CollectiveError::Timeout {
                call: call(),
                peer,
                waited_ms: silent.as_millis() as u64,
                timeout_ms: timeout.as_millis() as u64,
            },
        ));
    };
    let now = std::time::Instant::now();
    if warned.is_none_or(|t| now.duration_since(t) >= timeout) {
        *warned = Some(now);
        let now_seq = ctx.map_or(u32::MAX, |c| c.seq);
        let place = match at {
            Some((seq, _)) if seq < now_seq => {
                format!("it has not started this collective yet (its last was #{seq})")
            }
            Some((seq, true)) if seq == now_seq => "it is inside this collective".to_string(),
            Some((seq, inside)) => format!(
                "it is {} collective #{seq}",
                if inside { "inside" } else { "past" }
            ),
            None => "it has not started any collective yet".to_string(),
        };
        let job = |r: usize| job_ranks.get(r).copied().unwrap_or(r);
        tracing::warn!(
            "boad: rank {}: {}: still waiting for rank {}: it sent nothing for {:.1} s but is alive; {place} (this warning repeats every BOAD_TIMEOUT_MS={} ms)",
            job(rank),
            call(),
            job(peer),
            silent.as_secs_f64(),
            timeout.as_millis()
        );
    }
    Ok(())
}

/// Whether process `pid` on this host is alive and running: it exists, is not a zombie, and is not
/// stopped (a process stopped by a signal or a debugger answers nothing, like a dead one).
pub(crate) fn process_runs(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state is the first field after the command name, which is in parentheses.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, None | Some("Z" | "X" | "x" | "T" | "t"))
}

/// The most bytes one message of call `sig` can carry: the call's whole buffer, `count` elements
/// (a barrier's one byte on the kernel path included), times `gather_blocks` for an allgather (a
/// flat transport's size; on the hierarchical path, the blocks a level moves at once). None if
/// that overflows: no buffer of such a call can exist.
pub(crate) fn message_limit(sig: &Signature, gather_blocks: usize) -> Option<u64> {
    let elem = sig.dtype.map_or(0, |d| d.size() as u64);
    let blocks = match sig.coll {
        Coll::Allgather => u64::try_from(gather_blocks).ok()?,
        _ => 1,
    };
    sig.count.checked_mul(elem)?.checked_mul(blocks)
}

/// Whether collective `seq` is within [`SIG_LOG`] collectives of `cur` (the last this rank
/// started), before or after: the window of collectives a transport accepts messages for. Sequence
/// numbers wrap.
pub(crate) fn in_window(seq: u32, cur: u32) -> bool {
    let ahead = seq.wrapping_sub(cur);
    let behind = cur.wrapping_sub(seq);
    ahead <= SIG_LOG as u32 || behind < SIG_LOG as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{DType, Op};

    fn sig(count: u64, root: u32) -> Signature {
        Signature {
            coll: Coll::Reduce,
            op: Some(Op::Sum),
            dtype: Some(DType::I32),
            count,
            root,
        }
    }

    fn ctx(seq: u32, count: u64) -> Ctx {
        Ctx {
            seq,
            sig: sig(count, 0),
        }
    }

    fn kind(e: &Error) -> &CollectiveError {
        match e.kind() {
            crate::error::ErrorKind::Collective(c) => c,
            other => panic!("not a collective error: {other:?}"),
        }
    }

    #[test]
    fn a_message_showing_another_call_fails_the_collective_at_once() {
        let mut l = Ledger::default();
        l.start(&ctx(1, 4));
        l.inbox.insert((2, 1, 0), (sig(5, 0), vec![0; 20]));
        let e = l.settle(0, &ctx(1, 4)).expect_err("a mismatch");
        assert!(
            matches!(kind(&e), CollectiveError::Mismatch { seq: 1, peer: 2, mine, theirs }
                if mine.count == 4 && theirs.count == 5),
            "{e}"
        );
        // The same call is no mismatch, and the message stays for the algorithm.
        let mut l = Ledger::default();
        l.start(&ctx(1, 4));
        l.inbox.insert((2, 1, 0), (sig(4, 0), vec![0; 16]));
        assert!(l.settle(0, &ctx(1, 4)).is_ok());
        assert_eq!(l.inbox.len(), 1);
    }

    #[test]
    fn a_leftover_of_a_finished_collective_with_another_root_is_reported_once_later() {
        let mut l = Ledger::default();
        for seq in 1..=3 {
            l.start(&ctx(seq, 4));
        }
        // Rank 3 sent a message for #2 that nobody consumed, made with root 1 where ours was 0.
        l.inbox.insert((3, 2, 0), (sig(4, 1), vec![0; 16]));
        l.start(&ctx(4, 4));
        assert!(l.settle(0, &ctx(4, 4)).is_ok(), "#4 itself is fine");
        assert!(
            l.inbox.is_empty(),
            "leftovers of finished collectives are dropped"
        );
        let e = l.take_deferred(0, 4).expect("the mismatch of #2");
        assert!(
            matches!(kind(&e), CollectiveError::Mismatch { seq: 2, peer: 3, theirs, .. } if theirs.root == 1),
            "{e}"
        );
        assert!(l.take_deferred(0, 5).is_none(), "reported once");
    }

    #[test]
    fn deferred_errors_come_oldest_first_once_and_never_for_this_ranks_own_failures() {
        let mut l = Ledger::default();
        for seq in 1..=6 {
            l.start(&ctx(seq, 1));
        }
        l.aborts.insert(5, (1, "late".into()));
        l.aborts.insert(3, (2, "early".into()));
        l.aborts.insert(2, (4, "mine too".into()));
        l.my_aborts.insert(2, "this rank failed #2 itself".into());
        // Not before the collective is finished (seq 6 is current: #5 and #3 are before it).
        let e = l.take_deferred(0, 6).expect("an abort");
        assert!(
            matches!(kind(&e), CollectiveError::Aborted { seq: 3, by: 2, .. }),
            "{e}"
        );
        // Every fresh one was marked reported with it: one error per call of take_deferred.
        assert!(l.take_deferred(0, 7).is_none());
        assert_eq!(
            l.peer_aborts().len(),
            2,
            "the peers' aborts, without this rank's own"
        );
        // The current collective's abort is not deferred: `current` reports it.
        l.aborts.insert(7, (1, "now".into()));
        assert!(l.take_deferred(0, 7).is_none());
        let e = l.current(0, &ctx(7, 1)).expect_err("the abort of #7");
        assert!(matches!(
            kind(&e),
            CollectiveError::Aborted { seq: 7, by: 1, .. }
        ));
    }

    #[test]
    fn calls_are_remembered_for_a_window_only() {
        let mut l = Ledger::default();
        for seq in 1..=(SIG_LOG as u32 + 10) {
            l.start(&ctx(seq, u64::from(seq)));
        }
        assert_eq!(l.sig_of(5), None, "forgotten");
        assert_eq!(l.sig_of(11).map(|s| s.count), Some(11));
        assert_eq!(l.calls().count(), SIG_LOG);
        assert!(in_window(10, 10) && in_window(10 + SIG_LOG as u32, 10));
        assert!(!in_window(11 + SIG_LOG as u32, 10));
        assert!(in_window(11, 10 + SIG_LOG as u32) && !in_window(10, 10 + SIG_LOG as u32));
        // Across the wrap of the sequence numbers.
        assert!(in_window(3, u32::MAX - 3) && in_window(u32::MAX - 3, 3));
    }

    #[test]
    fn message_limits_follow_the_call_and_refuse_overflow() {
        assert_eq!(message_limit(&sig(10, 0), 9), Some(40));
        let gather = Signature {
            coll: Coll::Allgather,
            op: None,
            ..sig(10, 0)
        };
        assert_eq!(message_limit(&gather, 9), Some(360));
        assert_eq!(message_limit(&sig(u64::MAX / 2, 0), 1), None);
    }

    #[test]
    fn a_silent_peer_is_an_error_only_when_it_exited_or_shows_no_life() {
        let t = Duration::from_millis(100);
        let c = ctx(9, 1);
        let mut warned = None;
        let mut check = |exited, silent, life| {
            check_peer(0, Some(&c), 3, exited, silent, t, life, &mut warned, &[])
        };
        let e = check(Some(&Exit::Code(137)), Duration::ZERO, Life::Unknown).expect_err("exited");
        assert!(matches!(
            kind(&e),
            CollectiveError::PeerExited {
                peer: 3,
                code: 137,
                ..
            }
        ));
        let mut l = Ledger::default();
        l.note_abort(8, 3, "rank 3: reduce #8: rank 4 is gone".into());
        let why = l.explain(3, Some(&Exit::Gone("its process (pid 12) ended".into())));
        assert_eq!(
            why,
            Some(Exit::Gone(
                "its process (pid 12) ended, after it failed collective #8: rank 3: reduce #8: rank 4 is gone"
                    .into()
            )),
            "a peer that left after failing says why"
        );
        assert_eq!(l.explain(3, Some(&Exit::Code(1))), Some(Exit::Code(1)));
        assert_eq!(l.explain(3, None), None);
        let gone = Exit::Gone("its process (pid 12) ended".into());
        let e = check(Some(&gone), Duration::ZERO, Life::Unknown).expect_err("gone");
        assert_eq!(
            e.to_string(),
            "rank 0: reduce #9: rank 3 is gone before sending the data this rank waits for: its process (pid 12) ended"
        );
        assert!(
            check(None, t, Life::Unknown).is_ok(),
            "silent, but not past the timeout"
        );
        let e = check(None, t * 2, Life::Unknown).expect_err("silent past the timeout");
        assert!(matches!(kind(&e), CollectiveError::Timeout { peer: 3, .. }));
        let alive = Life::Alive {
            at: Some((8, false)),
        };
        assert!(check(None, t * 50, alive).is_ok(), "alive: waited for");
        assert!(warned.is_some(), "with a warning");
    }

    #[test]
    fn a_gone_peer_is_explained_by_its_own_failure_even_when_another_rank_aborted_first() {
        let mut l = Ledger::default();
        l.start(&ctx(21, 1));
        // Rank 5 fails #21 because rank 4 is gone; rank 1 fails #21 because of rank 5's abort.
        l.note_abort(21, 5, "rank 5: allreduce #21: rank 4 is gone".into());
        l.note_abort(
            21,
            1,
            "rank 1: collective #21 failed on rank 5: rank 5: allreduce #21: rank 4 is gone".into(),
        );
        assert_eq!(
            l.aborts.get(&21).map(|(by, _)| *by),
            Some(5),
            "the collective's abort is the first one"
        );
        assert!(l.failed(1) && l.failed(5) && !l.failed(2));
        let why = l.explain(1, Some(&Exit::Gone("its process (pid 7) ended".into())));
        assert_eq!(
            why,
            Some(Exit::Gone(
                "its process (pid 7) ended, after it failed collective #21: rank 1: collective #21 failed on rank 5: rank 5: allreduce #21: rank 4 is gone"
                    .into()
            )),
            "rank 1 is described by its own failure"
        );
        // A STATUS showing a failure counts too; an older failure never replaces a later one.
        l.note_failure(22, 2, "rank 2: allreduce #22: rank 4 is gone");
        l.note_failure(20, 2, "older");
        let why = l.explain(2, Some(&Exit::Gone("gone".into())));
        assert_eq!(
            why,
            Some(Exit::Gone(
                "gone, after it failed collective #22: rank 2: allreduce #22: rank 4 is gone"
                    .into()
            ))
        );
        assert!(
            !l.aborts.contains_key(&22),
            "a STATUS is no abort of the collective"
        );
        // Failures of collectives too old to matter are forgotten.
        l.start(&ctx(22 + SIG_LOG as u32 + 1, 1));
        assert!(!l.failed(1) && !l.failed(2));
    }

    #[test]
    fn a_running_process_runs_and_a_missing_one_does_not() {
        assert!(process_runs(std::process::id()));
        // Above the kernel's largest pid (2^22).
        assert!(!process_runs(1 << 23));
    }
}
