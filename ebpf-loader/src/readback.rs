//! Decoding of what userspace reads back from the kernel path's eBPF maps, apart from aya (so it
//! can be tested and fuzzed without the programs): the per-CPU `COUNTERS` array, the only map
//! read back.
//!
//! Contract: [`sum_counters`] reads each of the `counter::COUNT` entries once and sums its per-CPU
//! values with wrapping arithmetic (the programs bump each CPU's `u64` with wrapping adds, so the
//! total wraps the same way, and a map holding anything at all cannot make the reader panic);
//! any number of CPUs, none included, is fine.

use boad_common::kernel::counter;

/// The counters, indexed by `boad_common::kernel::counter`, each the sum over CPUs of what
/// `per_cpu(index)` returns for it; the first error of `per_cpu` is returned as is.
pub fn sum_counters<V: AsRef<[u64]>, E>(
    mut per_cpu: impl FnMut(u32) -> Result<V, E>,
) -> Result<[u64; counter::COUNT as usize], E> {
    let mut sums = [0u64; counter::COUNT as usize];
    for (i, sum) in (0..counter::COUNT).zip(sums.iter_mut()) {
        *sum = per_cpu(i)?
            .as_ref()
            .iter()
            .fold(0u64, |a, b| a.wrapping_add(*b));
    }
    Ok(sums)
}

/// Fuzz and property-test harness: `data` as the per-CPU values of every counter (a CPU count,
/// then values); the sums are the wrapping sums, whatever the values.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub fn exercise_counters(data: &[u8]) {
    let Some((&cpus, rest)) = data.split_first() else {
        return;
    };
    let cpus = usize::from(cpus % 9);
    let values: Vec<u64> = rest
        .chunks(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a[..c.len()].copy_from_slice(c);
            u64::from_le_bytes(a)
        })
        .collect();
    let of = |i: u32| -> Vec<u64> {
        let start = (i as usize * cpus).min(values.len());
        values[start..(start + cpus).min(values.len())].to_vec()
    };
    let sums = sum_counters(|i| Ok::<_, ()>(of(i))).expect("no error");
    for (i, s) in (0..counter::COUNT).zip(sums) {
        assert_eq!(s, of(i).iter().fold(0u64, |a, b| a.wrapping_add(*b)));
    }
    // A failing read stops there.
    let fail_at = u32::from(data[0]) % counter::COUNT;
    let r = sum_counters(|i| if i == fail_at { Err(i) } else { Ok(of(i)) });
    assert_eq!(r, Err(fail_at));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sums_wrap_and_errors_pass_through() {
        let sums = sum_counters(|i| Ok::<_, ()>(vec![u64::MAX, u64::from(i) + 1])).expect("sums");
        assert_eq!(sums[0], 0);
        assert_eq!(sums[5], 5);
        let err = sum_counters(|i| if i == 3 { Err(i) } else { Ok(vec![1u64]) });
        assert_eq!(err, Err(3));
        assert_eq!(
            sum_counters(|_| Ok::<_, ()>(Vec::<u64>::new())),
            Ok([0; counter::COUNT as usize])
        );
    }

    proptest! {
        // The fuzz target's harness on random input, so a plain `cargo test` runs it too.
        #[test]
        fn fuzz_harness(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            exercise_counters(&data);
        }

        #[test]
        fn any_values_sum(values in proptest::collection::vec(proptest::collection::vec(any::<u64>(), 0..8), counter::COUNT as usize)) {
            let sums = sum_counters(|i| Ok::<_, ()>(values[i as usize].clone())).expect("sums");
            for (v, s) in values.iter().zip(sums) {
                prop_assert_eq!(s, v.iter().fold(0u64, |a, b| a.wrapping_add(*b)));
            }
        }
    }
}
