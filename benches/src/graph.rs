//! The graph the PageRank and BFS examples run on, the block of it each rank owns, and the
//! single-process computations their answers are checked against.
//!
//! The graph is a directed multigraph generated from a seed, the same on every rank: out-degrees
//! follow a Pareto law (most vertices have a few edges, a few have hundreds; a share of vertices
//! have none, which PageRank calls dangling), and targets are drawn with a density that falls off
//! like `1/sqrt(i)` over a scrambled vertex order, so in-degrees are skewed too and a few vertices
//! are unreachable. Mean out-degree is about `avg_degree`.

use std::collections::VecDeque;
use std::ops::Range;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Share of vertices with no out-edge.
pub const DANGLING_SHARE: f64 = 0.05;

/// Level of a vertex BFS does not reach.
pub const UNREACHED: u32 = u32::MAX;

/// A directed graph in compressed sparse row form (out-edges).
#[derive(Clone, Debug)]
pub struct Graph {
    offsets: Vec<usize>,
    targets: Vec<u32>,
}

impl Graph {
    /// Generates a graph of `n` vertices (1..=`u32::MAX`) with mean out-degree about `avg_degree`
    /// (>= 1), deterministically from `seed`.
    pub fn generate(n: usize, avg_degree: f64, seed: u64) -> Result<Graph, String> {
        if n == 0 || u32::try_from(n).is_err() {
            return Err(format!("vertices must be in 1..={}, got {n}", u32::MAX));
        }
        if !(1.0..=1000.0).contains(&avg_degree) {
            return Err(format!("degree must be in 1..=1000, got {avg_degree}"));
        }
        let mut rng = SmallRng::seed_from_u64(seed);
        // Pareto with shape 2 has mean 2 * xmin; the non-dangling vertices carry all the edges.
        let xmin = avg_degree / (1.0 - DANGLING_SHARE) / 2.0;
        let max_degree = n.min(10_000) as f64;
        let scramble = coprime_multiplier(n);
        let mut offsets = Vec::with_capacity(n + 1);
        let mut targets = Vec::with_capacity((n as f64 * avg_degree * 1.1) as usize);
        offsets.push(0);
        for u in 0..n {
            let degree = if rng.gen::<f64>() < DANGLING_SHARE {
                0
            } else {
                // 1 - gen() is in (0, 1]: no division by zero.
                let x: f64 = 1.0 - rng.gen::<f64>();
                (xmin / x.sqrt()).round().clamp(1.0, max_degree) as usize
            };
            for _ in 0..degree {
                let y: f64 = rng.gen();
                let i = ((y * y * n as f64) as usize).min(n - 1);
                let mut v = ((i as u64 * scramble + 7) % n as u64) as usize;
                if v == u && n > 1 {
                    v = (v + 1) % n;
                }
                targets.push(v as u32);
            }
            offsets.push(targets.len());
        }
        Ok(Graph { offsets, targets })
    }

    /// The graph whose vertex `u` has out-edges to `out[u]` (for small graphs written by hand).
    pub fn from_out_edges(out: &[&[u32]]) -> Result<Graph, String> {
        let n = out.len();
        if n == 0 || u32::try_from(n).is_err() {
            return Err(format!("vertices must be in 1..={}, got {n}", u32::MAX));
        }
        let mut offsets = Vec::with_capacity(n + 1);
        let mut targets = vec![];
        offsets.push(0);
        for (u, edges) in out.iter().enumerate() {
            if let Some(v) = edges.iter().find(|&&v| v as usize >= n) {
                return Err(format!("edge {u} -> {v}: no vertex {v} (0..{n})"));
            }
            targets.extend_from_slice(edges);
            offsets.push(targets.len());
        }
        Ok(Graph { offsets, targets })
    }

    /// Number of vertices.
    pub fn vertices(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Number of edges.
    pub fn edges(&self) -> usize {
        self.targets.len()
    }

    /// The targets of `u`'s out-edges.
    pub fn out(&self, u: usize) -> &[u32] {
        &self.targets[self.offsets[u]..self.offsets[u + 1]]
    }

    /// `u`'s out-degree.
    pub fn out_degree(&self, u: usize) -> usize {
        self.offsets[u + 1] - self.offsets[u]
    }

    /// The in-edges of the vertices in `range`, each vertex's sources in increasing order.
    pub fn in_edges(&self, range: Range<usize>) -> InEdges {
        let lo = range.start;
        let len = range.len();
        let mut count = vec![0usize; len + 1];
        for &v in &self.targets {
            let v = v as usize;
            if range.contains(&v) {
                count[v - lo + 1] += 1;
            }
        }
        for i in 0..len {
            count[i + 1] += count[i];
        }
        let mut next = count.clone();
        let mut sources = vec![0u32; count[len]];
        for u in 0..self.vertices() {
            for &v in self.out(u) {
                let v = v as usize;
                if range.contains(&v) {
                    sources[next[v - lo]] = u as u32;
                    next[v - lo] += 1;
                }
            }
        }
        InEdges {
            lo,
            offsets: count,
            sources,
        }
    }

    /// The first vertex with an out-edge (0 if none has one).
    pub fn first_non_dangling(&self) -> usize {
        (0..self.vertices())
            .find(|&u| self.out_degree(u) > 0)
            .unwrap_or(0)
    }
}

/// The in-edges of a contiguous range of vertices.
#[derive(Clone, Debug)]
pub struct InEdges {
    lo: usize,
    offsets: Vec<usize>,
    sources: Vec<u32>,
}

impl InEdges {
    /// The sources of the edges into `v` (which must be in the range), in increasing order.
    pub fn sources_of(&self, v: usize) -> &[u32] {
        let i = v - self.lo;
        &self.sources[self.offsets[i]..self.offsets[i + 1]]
    }
}

/// An odd multiplier near `n * 0.618` that is coprime with `n`: `i -> i * m mod n` is a
/// permutation of `0..n`.
fn coprime_multiplier(n: usize) -> u64 {
    let n = n as u64;
    if n <= 2 {
        return 1;
    }
    let mut m = (n as f64 * 0.618_033_988_749_895) as u64 | 1;
    while gcd(m, n) != 1 {
        m += 2;
    }
    m % n
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The block of vertices rank `rank` of `size` owns: `rank * b .. min(n, (rank + 1) * b)` with
/// `b = ceil(n / size)` (so the last ranks may own fewer, or none).
pub fn block(n: usize, size: usize, rank: usize) -> Range<usize> {
    let b = n.div_ceil(size);
    (rank * b).min(n)..((rank + 1) * b).min(n)
}

/// PageRank in one process: `iters` power iterations from the uniform vector, damping `d`, the
/// rank of dangling vertices spread evenly over all vertices. Written push-style (each vertex adds
/// its share to its targets), independently of the examples' pull-style code; for each vertex the
/// shares are added in increasing order of source, as there.
pub fn pagerank(g: &Graph, d: f64, iters: usize) -> Vec<f64> {
    let n = g.vertices();
    let nf = n as f64;
    let mut pr = vec![1.0 / nf; n];
    let mut acc = vec![0.0f64; n];
    for _ in 0..iters {
        acc.fill(0.0);
        let mut dangling = 0.0;
        for (u, &p) in pr.iter().enumerate() {
            let deg = g.out_degree(u);
            if deg == 0 {
                dangling += p;
                continue;
            }
            let share = p / deg as f64;
            for &v in g.out(u) {
                acc[v as usize] += share;
            }
        }
        for (p, a) in pr.iter_mut().zip(&acc) {
            *p = (1.0 - d) / nf + d * (a + dangling / nf);
        }
    }
    pr
}

/// Breadth-first levels from `source` in one process (queue-based); [`UNREACHED`] for vertices
/// not reached.
pub fn bfs(g: &Graph, source: usize) -> Vec<u32> {
    let mut level = vec![UNREACHED; g.vertices()];
    let mut queue = VecDeque::new();
    level[source] = 0;
    queue.push_back(source);
    while let Some(u) = queue.pop_front() {
        for &v in g.out(u) {
            let v = v as usize;
            if level[v] == UNREACHED {
                level[v] = level[u] + 1;
                queue.push_back(v);
            }
        }
    }
    level
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_about_the_degree_asked() {
        let a = Graph::generate(20_000, 8.0, 42).unwrap();
        let b = Graph::generate(20_000, 8.0, 42).unwrap();
        let c = Graph::generate(20_000, 8.0, 43).unwrap();
        assert_eq!(a.targets, b.targets);
        assert_ne!(a.targets, c.targets);
        let mean = a.edges() as f64 / a.vertices() as f64;
        assert!((6.0..10.0).contains(&mean), "mean out-degree {mean}");
        let dangling = (0..a.vertices()).filter(|&u| a.out_degree(u) == 0).count();
        assert!(dangling > 500 && dangling < 1500, "{dangling} dangling");
        assert!(a.targets.iter().all(|&v| (v as usize) < a.vertices()));
    }

    #[test]
    fn scramble_is_a_permutation() {
        for n in [1usize, 2, 3, 10, 64, 97, 1000, 1024] {
            let m = coprime_multiplier(n);
            let mut seen = vec![false; n];
            for i in 0..n {
                seen[((i as u64 * m + 7) % n as u64) as usize] = true;
            }
            assert!(seen.iter().all(|&s| s), "n = {n}");
        }
    }

    #[test]
    fn blocks_cover_the_vertices_once() {
        for (n, size) in [(10, 3), (9, 9), (5, 8), (300_000, 9), (1, 1)] {
            let mut next = 0;
            for r in 0..size {
                let b = block(n, size, r);
                assert_eq!(b.start, next.min(n));
                next = b.end;
            }
            assert_eq!(next, n);
        }
    }

    #[test]
    fn in_edges_are_the_reverse_of_out_edges() {
        let g = Graph::generate(500, 8.0, 1).unwrap();
        let part = g.in_edges(100..300);
        let mut fwd = vec![];
        for u in 0..500 {
            for &v in g.out(u) {
                if (100..300).contains(&(v as usize)) {
                    fwd.push((u as u32, v));
                }
            }
        }
        let mut back = vec![];
        for v in 100..300 {
            let s = part.sources_of(v);
            assert!(s.windows(2).all(|w| w[0] <= w[1]));
            back.extend(s.iter().map(|&u| (u, v as u32)));
        }
        fwd.sort_unstable();
        back.sort_unstable();
        assert_eq!(fwd, back);
    }

    #[test]
    fn pagerank_sums_to_one_and_bfs_levels_are_consistent() {
        let g = Graph::generate(2000, 8.0, 5).unwrap();
        let pr = pagerank(&g, 0.85, 30);
        let total: f64 = pr.iter().sum();
        assert!((total - 1.0).abs() < 1e-12, "sum {total}");
        let src = g.first_non_dangling();
        let level = bfs(&g, src);
        assert_eq!(level[src], 0);
        for u in 0..g.vertices() {
            for &v in g.out(u) {
                if level[u] != UNREACHED {
                    assert!(level[v as usize] <= level[u] + 1);
                }
            }
        }
        // And every reached vertex but the source has an in-neighbour one level closer: the levels
        // are the shortest distances, not merely consistent (all zeros would pass the check above).
        let mut closer = vec![false; g.vertices()];
        for u in 0..g.vertices() {
            for &v in g.out(u) {
                if level[u] != UNREACHED && level[v as usize] == level[u] + 1 {
                    closer[v as usize] = true;
                }
            }
        }
        for v in 0..g.vertices() {
            if v != src && level[v] != UNREACHED {
                assert!(closer[v], "vertex {v} at level {} has no parent", level[v]);
            }
        }
        let reached = level.iter().filter(|&&l| l != UNREACHED).count();
        assert!(reached > 1500, "only {reached} reached");
    }

    /// The single-process references against values worked out by hand on a small graph:
    /// 0 -> {1, 2}, 1 -> {2}, 2 -> {0}, 3 dangling, 4 -> {0} (unreachable from 0). With d = 0.5
    /// every number is a short binary fraction, so the results are exact.
    #[test]
    fn pagerank_and_bfs_of_a_graph_worked_by_hand() {
        let g = Graph::from_out_edges(&[&[1, 2], &[2], &[0], &[], &[0]]).unwrap();
        assert_eq!((g.vertices(), g.edges()), (5, 5));
        // From 1/5 each. Iteration 1: the dangling rank is pr[3] = 1/5; shares: 0 gets 1/5 (from
        // 2) + 1/5 (from 4), 1 gets 1/10, 2 gets 1/10 + 1/5; then pr = 0.1 + 0.5 (share + 1/25).
        // Fifths are not binary fractions: compare within a few ulps.
        let p1 = pagerank(&g, 0.5, 1);
        let want1 = [0.32, 0.17, 0.27, 0.12, 0.12];
        for (v, (got, want)) in p1.iter().zip(want1).enumerate() {
            assert!(
                (got - want).abs() < 1e-15,
                "iteration 1, vertex {v}: {got} != {want}"
            );
        }
        // Without the unreachable vertex 4 and from 1/4 each, iteration 2 is exact.
        let g = Graph::from_out_edges(&[&[1, 2], &[2], &[0], &[]]).unwrap();
        assert_eq!(pagerank(&g, 0.5, 0), [0.25; 4]);
        assert_eq!(pagerank(&g, 0.5, 1), [0.28125, 0.21875, 0.34375, 0.15625]);
        assert_eq!(
            pagerank(&g, 0.5, 2),
            [0.31640625, 0.21484375, 0.32421875, 0.14453125]
        );
        let g = Graph::from_out_edges(&[&[1, 2], &[3], &[3], &[], &[0]]).unwrap();
        assert_eq!(bfs(&g, 0), [0, 1, 1, 2, UNREACHED]);
        assert_eq!(bfs(&g, 4), [1, 2, 2, 3, 0]);
        assert_eq!(bfs(&g, 3), [UNREACHED, UNREACHED, UNREACHED, 0, UNREACHED]);
        assert!(Graph::from_out_edges(&[&[1]]).is_err());
        assert!(Graph::from_out_edges(&[]).is_err());
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(Graph::generate(0, 8.0, 1).is_err());
        assert!(Graph::generate(10, 0.5, 1).is_err());
        assert!(Graph::generate(10, f64::NAN, 1).is_err());
    }
}
