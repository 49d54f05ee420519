//! Which hosts the ranks of a job are on, from its table: the one numbering of hosts and leaders that
//! the launcher (filling the kernel path's leaders communicator) and the ranks (the hierarchical
//! path) both use.

use crate::lines::PeerEntry;

/// Which hosts the ranks of a job are on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Per host, in order of its lowest rank: its ranks, ascending (the first is the leader).
    pub hosts: Vec<Vec<usize>>,
    /// Per job rank: (host index, index among the host's ranks).
    pub place: Vec<(usize, usize)>,
    /// Per host: its leader (lowest rank), i.e. the job rank of leader rank `h`.
    pub leaders: Vec<usize>,
}

impl Layout {
    /// The layout of a job table (entries in rank order).
    pub fn of(table: &[PeerEntry]) -> Layout {
        Layout::of_host_ids(table.iter().map(|e| e.host_id))
    }

    /// The layout of a job whose rank `r` is on the host with the `r`-th id of `host_ids`.
    pub fn of_host_ids(host_ids: impl IntoIterator<Item = u32>) -> Layout {
        let mut ids: Vec<u32> = Vec::new();
        let mut hosts: Vec<Vec<usize>> = Vec::new();
        let mut place = Vec::new();
        for (rank, host_id) in host_ids.into_iter().enumerate() {
            let h = match ids.iter().position(|&id| id == host_id) {
                Some(h) => h,
                None => {
                    ids.push(host_id);
                    hosts.push(Vec::new());
                    ids.len() - 1
                }
            };
            place.push((h, hosts[h].len()));
            hosts[h].push(rank);
        }
        let leaders = hosts.iter().map(|ranks| ranks[0]).collect();
        Layout {
            hosts,
            place,
            leaders,
        }
    }

    /// The most ranks any host has.
    pub fn max_local(&self) -> usize {
        self.hosts.iter().map(Vec::len).max().unwrap_or(1)
    }

    /// Whether every rank is on one host.
    pub fn one_host(&self) -> bool {
        self.hosts.len() <= 1
    }

    /// Whether some host has several ranks (fewer leaders than ranks): the jobs whose ranks take
    /// the hierarchical path by default, and for which the launcher fills the kernel path's leaders
    /// communicator.
    pub fn shared_host(&self) -> bool {
        self.leaders.len() < self.place.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job table of ranks on `hosts` (host id per rank).
    fn table(hosts: &[u32]) -> Vec<PeerEntry> {
        hosts
            .iter()
            .enumerate()
            .map(|(rank, &host_id)| PeerEntry {
                rank,
                host_id,
                ip: std::net::IpAddr::from([127, 0, 0, 1]),
                port: 1000 + rank as u16,
                pulse: 0,
                pid: 1,
            })
            .collect()
    }

    #[test]
    fn hosts_in_order_of_their_lowest_rank() {
        let l = Layout::of(&table(&[7, 7, 3, 7, 3, 9]));
        assert_eq!(l.hosts, [vec![0, 1, 3], vec![2, 4], vec![5]]);
        assert_eq!(l.leaders, [0, 2, 5]);
        assert_eq!(l.place, [(0, 0), (0, 1), (1, 0), (0, 2), (1, 1), (2, 0)]);
        assert_eq!(l.max_local(), 3);
        assert!(l.shared_host() && !l.one_host());
        let one = Layout::of(&table(&[4, 4]));
        assert!(one.one_host() && one.shared_host());
        let spread = Layout::of(&table(&[1, 2, 3]));
        assert!(!spread.shared_host());
        // From the host ids alone, the same.
        assert_eq!(Layout::of_host_ids([7, 7, 3, 7, 3, 9]), l);
    }
}
