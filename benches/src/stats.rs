//! Summaries of per-iteration latencies (one rank's mean, median, 99th percentile) and their
//! combination over ranks (the osu convention: the max over ranks of each rank's statistic).

/// One rank's latency statistics, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    /// Mean.
    pub mean_ns: f64,
    /// Median (nearest rank).
    pub p50_ns: f64,
    /// 99th percentile (nearest rank).
    pub p99_ns: f64,
}

/// The `p`-th percentile (0..=100) of sorted samples by the nearest-rank method; 0 when empty.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Mean, median and 99th percentile of `samples` (sorted in place).
pub fn summarize(samples: &mut [u64]) -> Summary {
    if samples.is_empty() {
        return Summary::default();
    }
    samples.sort_unstable();
    let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
    Summary {
        mean_ns: sum as f64 / samples.len() as f64,
        p50_ns: percentile(samples, 50.0) as f64,
        p99_ns: percentile(samples, 99.0) as f64,
    }
}

/// The osu combination over ranks: the max of each statistic over the ranks' summaries.
pub fn max_over_ranks(ranks: &[Summary]) -> Summary {
    ranks.iter().fold(Summary::default(), |a, s| Summary {
        mean_ns: a.mean_ns.max(s.mean_ns),
        p50_ns: a.p50_ns.max(s.p50_ns),
        p99_ns: a.p99_ns.max(s.p99_ns),
    })
}

/// Message sizes from `min` to `max` bytes, multiplying by `factor` (4, 16, ..., 1 MiB for 4, 4).
pub fn sizes(min: u64, max: u64, factor: u64) -> Vec<u64> {
    let mut v = vec![];
    let mut s = min.max(1);
    while s <= max {
        v.push(s);
        s = s.saturating_mul(factor.max(2));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
        // 10 samples: the 99th percentile is the largest.
        let w: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&w, 99.0), 10);
        assert_eq!(percentile(&w, 50.0), 5);
    }

    #[test]
    fn summary_and_max_over_ranks() {
        let mut a = vec![30, 10, 20];
        let s = summarize(&mut a);
        assert_eq!(s.mean_ns, 20.0);
        assert_eq!(s.p50_ns, 20.0);
        assert_eq!(s.p99_ns, 30.0);
        let t = Summary {
            mean_ns: 25.0,
            p50_ns: 5.0,
            p99_ns: 100.0,
        };
        let m = max_over_ranks(&[s, t]);
        assert_eq!((m.mean_ns, m.p50_ns, m.p99_ns), (25.0, 20.0, 100.0));
        assert_eq!(summarize(&mut []), Summary::default());
    }

    #[test]
    fn size_ladder() {
        let s = sizes(4, 1 << 20, 4);
        assert_eq!(s.first(), Some(&4));
        assert_eq!(s.last(), Some(&(1 << 20)));
        assert_eq!(s.len(), 10);
        assert_eq!(sizes(4, 3, 4), Vec::<u64>::new());
    }
}
