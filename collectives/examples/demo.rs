//! The README's demo: every collective once per size, results checked on every rank, and a table of
//! which path ran and how long it took (median over the iterations, slowest rank).
//!
//! `boadrun -n 9 target/release/examples/demo`

use std::time::Instant;

use boad::{Communicator, Op};

const ITERS: usize = 20;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `f` ITERS times; returns the median in microseconds (maximised over ranks) and the path
/// the collective took.
fn timed(
    comm: &mut Communicator,
    mut f: impl FnMut(&mut Communicator) -> boad::Result<()>,
) -> boad::Result<(f64, &'static str)> {
    let mut t = Vec::with_capacity(ITERS);
    let mut path = "-";
    for _ in 0..ITERS {
        comm.barrier()?;
        let s = Instant::now();
        f(comm)?;
        t.push(s.elapsed().as_secs_f64() * 1e6);
        path = comm.last_path().map_or("-", |p| p.name());
    }
    let mut m = [median(t)];
    comm.allreduce_in_place(&mut m, Op::Max)?;
    Ok((m[0], path))
}

fn row(comm: &Communicator, what: &str, (us, path): (f64, &str)) {
    if comm.rank() == 0 {
        println!("{what:<38} path={path:<11} {us:>10.1} us   ok");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut comm = boad::init()?;
    let (rank, size) = (comm.rank(), comm.size());
    let root = size / 2;
    if rank == 0 {
        println!(
            "boad demo: {size} ranks, chunk {} B; median of {ITERS} runs, slowest rank",
            comm.chunk_bytes()
        );
    }
    for n in [1usize, 1024, 262_144] {
        // bcast from a root other than 0
        let us = timed(&mut comm, |c| {
            let mut v: Vec<f64> = if c.rank() == root {
                (0..n).map(|i| i as f64 * 0.5).collect()
            } else {
                vec![0.0; n]
            };
            c.bcast(&mut v, root)?;
            assert!(
                v.iter().enumerate().all(|(i, x)| *x == i as f64 * 0.5),
                "bcast result"
            );
            Ok(())
        })?;
        row(&comm, &format!("bcast     {n:>7} x f64 root={root}"), us);

        // reduce (sum) to the same root
        let us = timed(&mut comm, |c| {
            let send: Vec<i64> = (0..n).map(|i| (i + c.rank()) as i64).collect();
            let mut recv = vec![0i64; if c.rank() == root { n } else { 0 }];
            c.reduce(&send, &mut recv, Op::Sum, root)?;
            if c.rank() == root {
                let s = size as i64;
                assert!(
                    recv.iter()
                        .enumerate()
                        .all(|(i, x)| *x == i as i64 * s + s * (s - 1) / 2),
                    "reduce result"
                );
            }
            Ok(())
        })?;
        row(
            &comm,
            &format!("reduce    {n:>7} x i64 sum root={root}"),
            us,
        );

        // allreduce (max), in place
        let us = timed(&mut comm, |c| {
            let mut v: Vec<f32> = (0..n)
                .map(|i| ((i * 7 + c.rank() * 13) % 101) as f32)
                .collect();
            c.allreduce_in_place(&mut v, Op::Max)?;
            let want = |i: usize| {
                (0..size)
                    .map(|r| ((i * 7 + r * 13) % 101) as f32)
                    .fold(f32::MIN, f32::max)
            };
            assert!(
                v.iter().enumerate().all(|(i, x)| *x == want(i)),
                "allreduce result"
            );
            Ok(())
        })?;
        row(&comm, &format!("allreduce {n:>7} x f32 max"), us);

        // allgather
        let per = (n / size).max(1);
        let us = timed(&mut comm, |c| {
            let send = vec![c.rank() as u32; per];
            let mut recv = vec![0u32; per * size];
            c.allgather(&send, &mut recv)?;
            assert!(
                recv.iter().enumerate().all(|(i, x)| *x as usize == i / per),
                "allgather result"
            );
            Ok(())
        })?;
        row(&comm, &format!("allgather {per:>7} x u32 per rank"), us);
    }
    let us = timed(&mut comm, |c| c.barrier())?;
    row(&comm, "barrier", us);
    if rank == 0 {
        println!("all collectives returned the expected results on all {size} ranks");
    }
    comm.finalize()?;
    Ok(())
}
