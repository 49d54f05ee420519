//! Several jobs on one set of programs (as the kernel service `boadd` runs them): each
//! communicator has its own job key, so a datagram naming a communicator with another job's key is
//! foreign; and an incomplete reduction of one communicator is never taken over by another
//! communicator's contribution that hashes to the same slot (it passes unfolded instead), so both
//! jobs' results stay exact.
//!
//! Needs root (CAP_BPF + CAP_NET_ADMIN) and a kernel with XDP (generic mode). Each test makes a
//! fresh network namespace of its own, the programs on its `lo`.

use std::net::{Ipv4Addr, UdpSocket};

use boad::{DType, Op};
use boad_common::kernel::slot_index;
use boad_common::kind;
use boad_tests_privileged::fixture::{
    delta, recv, reducer_on_lo, userspace_fold, COMM, JOB, QUIET, RECV_TIMEOUT, REDUCE_PORT,
};
use boad_tests_privileged::{contrib, finish, parse, privileged, Netns};

/// The second job's key and communicator (equal to `COMM` modulo 64, so that its reductions of
/// chunk 0 can share a slot with `COMM`'s: `slot_index` keeps the low 6 bits for the chunk).
const JOB2: u64 = 0x5eed_b0ad_0000_0777;
const COMM2: u32 = COMM + 64;

#[test]
fn each_communicator_has_its_own_key_and_keeps_its_slots() {
    if !privileged() {
        return;
    }
    let ns = Netns::new().expect("netns");
    ns.run(|| {
        const N: u32 = 2;
        let (mut k, ranks) = reducer_on_lo(N);
        // The second job: same sockets (what matters is the key and the communicator).
        k.set_job_comm(JOB2, COMM2, N, &ranks.members())
            .expect("second job's communicator");
        assert!(k.set_job_comm(0, COMM2 + 1, N, &ranks.members()).is_err());
        assert_ne!(COMM, COMM2);
        let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, REDUCE_PORT)).expect("bind reducer");
        let parts = |salt: i32| -> Vec<Vec<u8>> {
            (1..=N as i32)
                .map(|r| {
                    (0..16)
                        .flat_map(|j| (salt * 7919 + r * 101 + j).to_le_bytes())
                        .collect()
                })
                .collect()
        };
        let before = k.counters().expect("counters");

        // A job's key on the other job's communicator is foreign, both ways.
        let payload = &parts(0)[0];
        for (job, comm) in [(JOB2, COMM), (JOB, COMM2)] {
            let d = contrib(job, comm, 1, 1, Op::Sum, DType::I32, payload);
            ranks.send(1, &d);
            assert_eq!(
                recv(&rx, RECV_TIMEOUT),
                Some(d),
                "job {job:x} on comm {comm}"
            );
        }
        let d = delta(k.counters().expect("counters"), before);
        assert_eq!((d.foreign, d.folded), (2, 0), "{d:?}");

        // Job 1 starts a reduction (one of two contributions in); job 2's reduction whose slot is
        // the same one must not take it over.
        let seq1 = 5;
        let seq2 = (0..1u32 << 20)
            .find(|s| slot_index(COMM2, *s, 0) == slot_index(COMM, seq1, 0))
            .expect("a colliding seq");
        let (p1, p2) = (parts(1), parts(2));
        ranks.send(1, &contrib(JOB, COMM, seq1, 1, Op::Sum, DType::I32, &p1[0]));
        assert!(
            recv(&rx, QUIET).is_none(),
            "job 1's first contribution passed"
        );
        let mut got2 = Vec::new();
        for src in 1..=N {
            let d = contrib(
                JOB2,
                COMM2,
                seq2,
                src,
                Op::Sum,
                DType::I32,
                &p2[src as usize - 1],
            );
            ranks.send(src, &d);
            got2.push(recv(&rx, RECV_TIMEOUT).expect("job 2's contribution"));
        }
        // Passed unfolded: the receiving transport folds them in userspace.
        for g in &got2 {
            let (h, _) = parse(g).expect("header");
            assert_eq!((h.kind, h.job, h.comm), (kind::CONTRIB, JOB2, COMM2));
        }
        // Job 1's reduction is intact: its second contribution completes it, exactly.
        ranks.send(2, &contrib(JOB, COMM, seq1, 2, Op::Sum, DType::I32, &p1[1]));
        let got = recv(&rx, RECV_TIMEOUT).expect("job 1's RESULT");
        let (h, payload) = parse(&got).expect("header");
        assert_eq!(
            (h.kind, h.job, h.comm, h.seq),
            (kind::RESULT, JOB, COMM, seq1)
        );
        assert_eq!(payload, &userspace_fold(DType::I32, Op::Sum, &p1)[..]);
        // And job 2's next reduction, in a free slot, is folded.
        for src in 1..=N {
            ranks.send(
                src,
                &contrib(
                    JOB2,
                    COMM2,
                    seq2 + 1,
                    src,
                    Op::Sum,
                    DType::I32,
                    &p2[src as usize - 1],
                ),
            );
        }
        let got = recv(&rx, RECV_TIMEOUT).expect("job 2's RESULT");
        let (h, payload) = parse(&got).expect("header");
        assert_eq!((h.kind, h.job, h.comm), (kind::RESULT, JOB2, COMM2));
        assert_eq!(payload, &userspace_fold(DType::I32, Op::Sum, &p2)[..]);
        let d = delta(k.counters().expect("counters"), before);
        assert_eq!(
            (d.foreign, d.unfolded, d.folded, d.passed),
            (2, 2, 4, 2),
            "{d:?}"
        );
        drop(k);
    });
    finish(ns);
}
