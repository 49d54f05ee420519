//! Which machines a multi-machine job runs on, and which ranks go where: the `-H` host list and the
//! hostfile that `boadrun` reads (the syntax of Open MPI's `mpirun`), and the placement of ranks on
//! the slots of those hosts (`--map-by slot` or `--map-by node`).
//!
//! - [`parse_host_list`]: `-H node1:4,node2,192.0.2.7:2,[2001:db8::1]:2`, comma-separated `name`
//!   or `name:slots`.
//! - [`parse_hostfile`]: one host per line, `name [slots=N] [max_slots=M]`, `#` comments, blank
//!   lines.
//! - [`place`]: ranks onto slots; the result says, per rank, its host, and per host its ranks.
//!
//! In both syntaxes a name given several times is one host whose slots (and `max_slots`) add up, as
//! with Open MPI. Names are host names (letters, digits, `-`, `_`, dot-separated labels, never
//! starting with `-`: they end up as `ssh` arguments), IPv4 addresses, or IPv6 addresses (in
//! brackets in `-H`, with or without in a hostfile). IP addresses are kept in their canonical text
//! form without brackets (`[0::1]` is the host `::1`), so that equal addresses are one host.
//!
//! Nothing here trusts its input: host counts, slot counts, name lengths and the ranks a placement
//! may make are bounded ([`MAX_HOSTS`], [`MAX_SLOTS`], [`MAX_NAME`], [`MAX_RANKS`]), so a hostile
//! hostfile cannot make the parser allocate without bound, and errors quote at most a short,
//! escaped excerpt of what they reject.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};

/// The most hosts a host list or hostfile may name.
pub const MAX_HOSTS: usize = 16_384;
/// The most slots (or `max_slots`) one host may have, repeated names added up.
pub const MAX_SLOTS: usize = 4_096;
/// The longest host name (a DNS name's limit).
pub const MAX_NAME: usize = 253;
/// The most ranks [`place`] makes.
pub const MAX_RANKS: usize = 1 << 20;

/// Longest excerpt of rejected input an error quotes.
const EXCERPT: usize = 64;

/// One host of a job, as the user gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSpec {
    /// Host name or IP address (IPv6 without brackets, in canonical form).
    pub name: String,
    /// Slots: how many ranks it takes before it is oversubscribed. `None`: not given ([`place`]
    /// counts 1, as Open MPI does for `-H`).
    pub slots: Option<usize>,
    /// Hostfile `max_slots`: how many ranks it takes at most, even when oversubscribing. `None`:
    /// no limit. Always `None` from [`parse_host_list`].
    pub max_slots: Option<usize>,
}

impl HostSpec {
    /// A host with `slots` slots (None: not given) and no `max_slots`.
    pub fn new(name: impl Into<String>, slots: Option<usize>) -> HostSpec {
        HostSpec {
            name: name.into(),
            slots,
            max_slots: None,
        }
    }
}

/// Errors of the host list, the hostfile and the placement.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostsError {
    /// An empty item in a `-H` list (`a,,b`, a trailing comma, or an empty list).
    #[error("host list: item {index} is empty")]
    EmptyItem {
        /// Its position, from 1.
        index: usize,
    },
    /// An item of a `-H` list that is not `name` or `name:slots`.
    #[error("host list: item {index} ({item}): {reason}")]
    BadItem {
        /// Its position, from 1.
        index: usize,
        /// An escaped excerpt of it.
        item: String,
        /// What is wrong.
        reason: String,
    },
    /// A hostfile line that is not `name [slots=N] [max_slots=M]`.
    #[error("hostfile line {line}: {reason}")]
    BadLine {
        /// Its number, from 1.
        line: usize,
        /// What is wrong (quoting an escaped excerpt of the line).
        reason: String,
    },
    /// A host list or hostfile naming no host, or a placement given none.
    #[error("no hosts given")]
    NoHosts,
    /// A host given to [`place`] that it cannot use.
    #[error("host {name}: {reason}")]
    BadHost {
        /// Its name (escaped excerpt).
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// `np` of 0.
    #[error("the number of ranks must be at least 1")]
    ZeroRanks,
    /// More ranks asked for than [`place`] makes.
    #[error("{np} ranks asked for: at most {max} can be placed")]
    TooManyRanks {
        /// Ranks asked for.
        np: usize,
        /// [`MAX_RANKS`] (or the total slots, when `np` was not given).
        max: usize,
    },
    /// More ranks than slots, without oversubscription.
    #[error(
        "{np} ranks asked for but the hosts have only {slots} slots \
         (allow oversubscription to place more ranks than slots)"
    )]
    NotEnoughSlots {
        /// Ranks asked for.
        np: usize,
        /// Total slots of the hosts.
        slots: usize,
    },
    /// More ranks than the hosts' `max_slots` allow, even oversubscribing.
    #[error("{np} ranks asked for but the hosts' max_slots allow only {max}")]
    OverMaxSlots {
        /// Ranks asked for.
        np: usize,
        /// Sum of the hosts' limits.
        max: usize,
    },
}

/// How [`place`] deals ranks onto hosts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MapBy {
    /// Fill the first host's slots, then the second's, ... (`--map-by slot`, Open MPI's default):
    /// every host gets a contiguous block of ranks.
    #[default]
    Slot,
    /// Deal ranks round robin over the hosts that have a free slot (`--map-by node`).
    Node,
}

impl std::str::FromStr for MapBy {
    type Err = String;
    fn from_str(s: &str) -> Result<MapBy, String> {
        match s {
            "slot" => Ok(MapBy::Slot),
            "node" => Ok(MapBy::Node),
            _ => Err("must be slot or node".to_string()),
        }
    }
}

/// One host of a placement: a host that got at least one rank.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedHost {
    /// Its name.
    pub name: String,
    /// Its index in the hosts given to [`place`].
    pub spec_index: usize,
    /// Its ranks, ascending; a rank's local rank is its position here.
    pub ranks: Vec<usize>,
}

/// Where the ranks of a job go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The hosts that got ranks, in the order they were given (host id = index here); hosts that
    /// got none are dropped from the job.
    pub hosts: Vec<PlacedHost>,
    /// Per rank: its host id (index into [`hosts`](Placement::hosts)).
    pub rank_host: Vec<usize>,
}

impl Placement {
    /// Number of ranks.
    pub fn np(&self) -> usize {
        self.rank_host.len()
    }

    /// The host id, local rank and local size of `rank` (None: no such rank).
    pub fn locate(&self, rank: usize) -> Option<(usize, usize, usize)> {
        let h = *self.rank_host.get(rank)?;
        let ranks = &self.hosts[h].ranks;
        let local = ranks.binary_search(&rank).ok()?;
        Some((h, local, ranks.len()))
    }
}

/// An escaped excerpt of `s` to quote in an error: at most [`EXCERPT`] characters, control and
/// non-printable characters escaped, so hostile input cannot garble a terminal.
fn excerpt(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(EXCERPT)
        .flat_map(char::escape_debug)
        .collect();
    if s.chars().nth(EXCERPT).is_some() {
        out.push_str("...");
    }
    format!("\"{out}\"")
}

/// A host name or IPv4/IPv6 address in canonical form, or why not. `bracketed`: what was inside
/// `[...]` (an IPv6 address, nothing else).
fn parse_name(s: &str, bracketed: bool) -> Result<String, String> {
    if bracketed {
        return s
            .parse::<Ipv6Addr>()
            .map(|a| a.to_string())
            .map_err(|_| format!("{} in brackets is not an IPv6 address", excerpt(s)));
    }
    if s.is_empty() {
        return Err("empty host name".to_string());
    }
    if let Ok(a) = s.parse::<Ipv4Addr>() {
        return Ok(a.to_string());
    }
    if s.contains(':') {
        return s
            .parse::<Ipv6Addr>()
            .map(|a| a.to_string())
            .map_err(|_| format!("{} is not a host name or IP address", excerpt(s)));
    }
    if s.len() > MAX_NAME {
        return Err(format!(
            "host name of {} bytes (at most {MAX_NAME})",
            s.len()
        ));
    }
    if s.starts_with('-') {
        return Err(format!("host name {} starts with '-'", excerpt(s)));
    }
    let s = s.strip_suffix('.').unwrap_or(s);
    for label in s.split('.') {
        if label.is_empty() {
            return Err(format!("host name {} has an empty label", excerpt(s)));
        }
        if label.len() > 63 {
            return Err(format!(
                "host name {} has a label longer than 63 bytes",
                excerpt(s)
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "host name {} has the character {:?}",
                excerpt(s),
                c
            ));
        }
    }
    // All-digit dotted names that are not IPv4 addresses (`1.2.3`, `999.1.1.1`) are typos.
    if s.split('.').all(|l| l.bytes().all(|b| b.is_ascii_digit())) {
        return Err(format!("{} is not an IPv4 address", excerpt(s)));
    }
    Ok(s.to_string())
}

/// A slot count (decimal, 1..=[`MAX_SLOTS`]), or why not.
fn parse_count(s: &str, what: &str) -> Result<usize, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} {} is not a number", excerpt(s)));
    }
    match s.parse::<usize>() {
        Ok(0) => Err(format!("{what} must be at least 1")),
        Ok(n) if n <= MAX_SLOTS => Ok(n),
        _ => Err(format!("{what} {} is more than {MAX_SLOTS}", excerpt(s))),
    }
}

/// Hosts in order of first appearance, repeated names merged.
#[derive(Default)]
struct Collect {
    hosts: Vec<HostSpec>,
    index: HashMap<String, usize>,
}

impl Collect {
    /// Adds one occurrence of a host; repeated names add up: slots (an occurrence without counts
    /// 1), and `max_slots` (a limit only if every occurrence gave one).
    fn add(&mut self, h: HostSpec) -> Result<(), String> {
        let Some(&i) = self.index.get(&h.name) else {
            if self.hosts.len() >= MAX_HOSTS {
                return Err(format!("more than {MAX_HOSTS} hosts"));
            }
            self.index.insert(h.name.clone(), self.hosts.len());
            self.hosts.push(h);
            return Ok(());
        };
        let old = &mut self.hosts[i];
        let slots = old.slots.unwrap_or(1) + h.slots.unwrap_or(1);
        if slots > MAX_SLOTS {
            return Err(format!(
                "host {} given again: more than {MAX_SLOTS} slots in all",
                old.name
            ));
        }
        let max_slots = match (old.max_slots, h.max_slots) {
            (Some(a), Some(b)) if a + b > MAX_SLOTS => {
                return Err(format!(
                    "host {} given again: max_slots more than {MAX_SLOTS} in all",
                    old.name
                ))
            }
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        old.slots = Some(slots);
        old.max_slots = max_slots;
        Ok(())
    }

    fn finish(self) -> Result<Vec<HostSpec>, HostsError> {
        if self.hosts.is_empty() {
            return Err(HostsError::NoHosts);
        }
        Ok(self.hosts)
    }
}

/// One `-H` item: `name`, `name:slots`, `[v6]` or `[v6]:slots`.
fn parse_item(item: &str) -> Result<HostSpec, String> {
    let (name, bracketed, slots) = if let Some(rest) = item.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return Err("'[' without ']'".to_string());
        };
        let slots = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(n) => Some(n),
                None => return Err(format!("{} after ']'", excerpt(after))),
            },
        };
        (inside, true, slots)
    } else if item.matches(':').count() > 1 {
        return Err("IPv6 addresses go in brackets, e.g. [::1]:2".to_string());
    } else {
        match item.split_once(':') {
            Some((name, n)) => (name, false, Some(n)),
            None => (item, false, None),
        }
    };
    let name = parse_name(name, bracketed)?;
    let slots = slots.map(|n| parse_count(n, "slot count")).transpose()?;
    Ok(HostSpec::new(name, slots))
}

/// Parses a `-H` host list: comma-separated `name` or `name:slots` (slots 1..=[`MAX_SLOTS`]),
/// IPv6 addresses in brackets (`[::1]:2`). A name given several times is one host whose slots add
/// up (an occurrence without slots counts 1). Errors name the item (from 1).
pub fn parse_host_list(text: &str) -> Result<Vec<HostSpec>, HostsError> {
    let mut hosts = Collect::default();
    for (i, item) in text.split(',').enumerate() {
        let index = i + 1;
        let bad = |reason: String| HostsError::BadItem {
            index,
            item: excerpt(item),
            reason,
        };
        if item.trim().is_empty() {
            return Err(HostsError::EmptyItem { index });
        }
        if item.trim() != item {
            return Err(bad("spaces around the item".to_string()));
        }
        hosts.add(parse_item(item).map_err(bad)?).map_err(bad)?;
    }
    hosts.finish()
}

/// One hostfile line without its comment, not blank.
fn parse_line(line: &str) -> Result<HostSpec, String> {
    let mut words = line.split_ascii_whitespace();
    let first = words.next().unwrap_or_default();
    let (name, bracketed) = match first.strip_prefix('[') {
        Some(rest) => match rest.strip_suffix(']') {
            Some(inside) => (inside, true),
            None => return Err(format!("{} is not a bracketed address", excerpt(first))),
        },
        None => (first, false),
    };
    if name.contains('=') {
        return Err(format!(
            "the line starts with {}, not a host name",
            excerpt(first)
        ));
    }
    let mut host = HostSpec::new(parse_name(name, bracketed)?, None);
    for word in words {
        let Some((key, value)) = word.split_once('=') else {
            return Err(format!(
                "{} is not key=value (slots=N or max_slots=M)",
                excerpt(word)
            ));
        };
        let (field, what) = match key {
            "slots" => (&mut host.slots, "slots"),
            "max_slots" | "max-slots" => (&mut host.max_slots, "max_slots"),
            _ => {
                return Err(format!(
                    "unknown key {} (known: slots, max_slots)",
                    excerpt(key)
                ))
            }
        };
        if field.is_some() {
            return Err(format!("{what} given twice"));
        }
        *field = Some(parse_count(value, what)?);
    }
    if let (Some(s), Some(m)) = (host.slots, host.max_slots) {
        if s > m {
            return Err(format!("slots={s} is more than max_slots={m}"));
        }
    }
    Ok(host)
}

/// Parses a hostfile in Open MPI's syntax: one host per line, `name [slots=N] [max_slots=M]`
/// (`max-slots` also accepted; N, M in 1..=[`MAX_SLOTS`], N <= M), `#` to the end of a line a
/// comment, blank lines ignored. A name on several lines is one host whose slots (and max_slots)
/// add up. Unknown keys are errors. Errors name the line (from 1).
pub fn parse_hostfile(text: &str) -> Result<Vec<HostSpec>, HostsError> {
    let mut hosts = Collect::default();
    for (i, line) in text.lines().enumerate() {
        let bad = |reason: String| HostsError::BadLine {
            line: i + 1,
            reason,
        };
        let content = line.split_once('#').map_or(line, |(before, _)| before);
        if content.trim().is_empty() {
            continue;
        }
        hosts.add(parse_line(content).map_err(bad)?).map_err(bad)?;
    }
    hosts.finish()
}

/// Places ranks on the slots of `hosts` (each host once; a host without slots has 1):
///
/// - `np`: number of ranks; default the total of slots. 0 is an error, as is more than
///   [`MAX_RANKS`].
/// - More ranks than slots is an error naming both numbers, unless `oversubscribe`; then the
///   ranks beyond the slots are dealt round robin over the hosts, one at a time, never past a
///   host's `max_slots`.
/// - [`MapBy::Slot`]: host 1's slots get ranks 0.., then host 2's: contiguous blocks (when
///   oversubscribing, each host's block is its slots plus its share of the extra ranks).
///   [`MapBy::Node`]: ranks dealt round robin over the hosts with free slots (then, when
///   oversubscribing, over those below their `max_slots`).
///
/// Hosts that get no rank are dropped; the others keep their order, which is also the order of
/// their lowest ranks.
pub fn place(
    hosts: &[HostSpec],
    np: Option<usize>,
    map_by: MapBy,
    oversubscribe: bool,
) -> Result<Placement, HostsError> {
    if hosts.is_empty() {
        return Err(HostsError::NoHosts);
    }
    if hosts.len() > MAX_HOSTS {
        return Err(HostsError::BadHost {
            name: excerpt(&hosts[MAX_HOSTS].name),
            reason: format!("more than {MAX_HOSTS} hosts"),
        });
    }
    let mut seen = HashSet::new();
    let mut slots = Vec::with_capacity(hosts.len());
    let mut caps = Vec::with_capacity(hosts.len());
    for h in hosts {
        let bad = |reason: String| HostsError::BadHost {
            name: excerpt(&h.name),
            reason,
        };
        if !seen.insert(h.name.as_str()) {
            return Err(bad("given twice (merge its slots into one entry)".into()));
        }
        let s = h.slots.unwrap_or(1);
        if s == 0 || s > MAX_SLOTS {
            return Err(bad(format!("{s} slots (1 to {MAX_SLOTS})")));
        }
        let cap = h.max_slots.unwrap_or(MAX_RANKS);
        if h.max_slots.is_some() && (cap < s || cap > MAX_SLOTS) {
            return Err(bad(format!("max_slots {cap} ({s} to {MAX_SLOTS})")));
        }
        slots.push(s);
        caps.push(cap);
    }
    // At most MAX_HOSTS * MAX_SLOTS (2^26): no overflow.
    let total: usize = slots.iter().sum();
    let np = np.unwrap_or(total);
    if np == 0 {
        return Err(HostsError::ZeroRanks);
    }
    if np > MAX_RANKS {
        return Err(HostsError::TooManyRanks { np, max: MAX_RANKS });
    }
    if np > total && !oversubscribe {
        return Err(HostsError::NotEnoughSlots { np, slots: total });
    }
    let cap_total = caps.iter().fold(0usize, |a, &c| a.saturating_add(c));
    if np > cap_total {
        return Err(HostsError::OverMaxSlots { np, max: cap_total });
    }

    // Per spec host, its ranks.
    let mut ranks: Vec<Vec<usize>> = vec![Vec::new(); hosts.len()];
    match map_by {
        MapBy::Slot => {
            // How many each host takes: its slots in order, then the extra ranks round robin.
            let mut count = vec![0usize; hosts.len()];
            let mut left = np;
            for (c, &s) in count.iter_mut().zip(&slots) {
                *c = s.min(left);
                left -= *c;
            }
            deal(&mut count, &caps, left, |_, _| {});
            let mut next = 0;
            for (r, &c) in ranks.iter_mut().zip(&count) {
                r.extend(next..next + c);
                next += c;
            }
        }
        MapBy::Node => {
            let mut count = vec![0usize; hosts.len()];
            let mut next = 0;
            deal(&mut count, &slots, np.min(total), |h, _| {
                ranks[h].push(next);
                next += 1;
            });
            deal(&mut count, &caps, np - next, |h, _| {
                ranks[h].push(next);
                next += 1;
            });
        }
    }

    let mut placed = Vec::new();
    let mut rank_host = vec![0usize; np];
    for (i, r) in ranks.into_iter().enumerate() {
        if r.is_empty() {
            continue;
        }
        for &rank in &r {
            rank_host[rank] = placed.len();
        }
        placed.push(PlacedHost {
            name: hosts[i].name.clone(),
            spec_index: i,
            ranks: r,
        });
    }
    Ok(Placement {
        hosts: placed,
        rank_host,
    })
}

/// Deals `n` units round robin, one per host per round in host order, over the hosts whose
/// `count` is below `limit`, calling `each(host, new count)` for every unit dealt. The caller
/// checked that the limits leave room for `n`.
fn deal(count: &mut [usize], limit: &[usize], mut n: usize, mut each: impl FnMut(usize, usize)) {
    let mut open: Vec<usize> = (0..count.len()).filter(|&h| count[h] < limit[h]).collect();
    while n > 0 && !open.is_empty() {
        // `open` holds only hosts below their limit.
        open.retain(|&h| {
            if n > 0 {
                count[h] += 1;
                n -= 1;
                each(h, count[h]);
            }
            count[h] < limit[h]
        });
    }
}

/// Fuzz and property-test harness: `data` as a `-H` list and as a hostfile. What parses has
/// unique, well-formed names and bounded slots, prints back (as a `-H` list) to the same hosts,
/// and places every rank exactly once, within the slots unless oversubscribing.
#[cfg(any(test, feature = "fuzzing"))]
pub fn exercise_hosts(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    // How to place: from the last byte (map-by, oversubscribe, np).
    let knobs = data.last().copied().unwrap_or(0);
    for hosts in [parse_host_list(&text), parse_hostfile(&text)]
        .into_iter()
        .flatten()
    {
        assert!(!hosts.is_empty() && hosts.len() <= MAX_HOSTS);
        let mut names = HashSet::new();
        for h in &hosts {
            assert!(names.insert(h.name.as_str()), "{} twice", h.name);
            assert!(!h.name.is_empty() && !h.name.starts_with('-'));
            assert!(h.slots.is_none_or(|s| (1..=MAX_SLOTS).contains(&s)));
            assert!(h
                .max_slots
                .is_none_or(|m| m <= MAX_SLOTS && m >= h.slots.unwrap_or(1)));
        }
        // Back to a -H list (max_slots aside).
        let list: Vec<String> = hosts
            .iter()
            .map(|h| {
                let name = if h.name.contains(':') {
                    format!("[{}]", h.name)
                } else {
                    h.name.clone()
                };
                h.slots.map_or(name.clone(), |s| format!("{name}:{s}"))
            })
            .collect();
        let again = parse_host_list(&list.join(",")).expect("a printed host list parses");
        assert_eq!(again.len(), hosts.len());
        for (a, h) in again.iter().zip(&hosts) {
            assert_eq!((&a.name, a.slots), (&h.name, h.slots));
        }
        let map_by = if knobs & 1 == 0 {
            MapBy::Slot
        } else {
            MapBy::Node
        };
        let over = knobs & 2 != 0;
        let np = (knobs >> 2 != 0).then_some(usize::from(knobs >> 2));
        let Ok(p) = place(&hosts, np, map_by, over) else {
            continue;
        };
        let mut seen = vec![false; p.np()];
        for (id, h) in p.hosts.iter().enumerate() {
            let spec = &hosts[h.spec_index];
            assert!(over || h.ranks.len() <= spec.slots.unwrap_or(1));
            for (local, &r) in h.ranks.iter().enumerate() {
                assert!(!std::mem::replace(&mut seen[r], true));
                assert_eq!(p.locate(r), Some((id, local, h.ranks.len())));
            }
        }
        assert!(seen.into_iter().all(|s| s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(name: &str, slots: Option<usize>) -> HostSpec {
        HostSpec::new(name, slots)
    }

    fn placed(p: &Placement) -> Vec<(&str, Vec<usize>)> {
        p.hosts
            .iter()
            .map(|h| (h.name.as_str(), h.ranks.clone()))
            .collect()
    }

    #[test]
    fn host_list_names_and_slots() {
        let got = parse_host_list("node1:4,node2,192.0.2.7:2,[2001:db8::1]:3,[::1],a-b_c.example.")
            .unwrap();
        assert_eq!(
            got,
            vec![
                h("node1", Some(4)),
                h("node2", None),
                h("192.0.2.7", Some(2)),
                h("2001:db8::1", Some(3)),
                h("::1", None),
                h("a-b_c.example", None),
            ]
        );
    }

    #[test]
    fn host_list_repeats_add_up() {
        assert_eq!(
            parse_host_list("a:2,b,a:3,b,[::1],[0:0::1]:2").unwrap(),
            vec![h("a", Some(5)), h("b", Some(2)), h("::1", Some(3))]
        );
        // One occurrence without slots stays "not given".
        assert_eq!(parse_host_list("a").unwrap(), vec![h("a", None)]);
    }

    #[test]
    fn host_list_errors_name_the_item() {
        let cases: &[(&str, &str)] = &[
            ("", "item 1 is empty"),
            ("a,,b", "item 2 is empty"),
            ("a,", "item 2 is empty"),
            ("a:0", "item 1 (\"a:0\"): slot count must be at least 1"),
            (
                "a,b:x",
                "item 2 (\"b:x\"): slot count \"x\" is not a number",
            ),
            ("a:", "slot count \"\" is not a number"),
            ("a:-1", "is not a number"),
            ("a:+1", "is not a number"),
            ("a:4097", "is more than 4096"),
            ("a:99999999999999999999999", "is more than 4096"),
            ("::1", "IPv6 addresses go in brackets"),
            ("[::1", "'[' without ']'"),
            ("[::1]x", "after ']'"),
            ("[node1]:2", "in brackets is not an IPv6 address"),
            ("-oProxyCommand=x", "starts with '-'"),
            ("a b", "has the character ' '"),
            ("a..b", "empty label"),
            ("a/b", "has the character '/'"),
            ("1.2.3", "is not an IPv4 address"),
            ("256.1.1.1", "is not an IPv4 address"),
            (" a", "spaces around the item"),
            (":3", "empty host name"),
        ];
        for (input, want) in cases {
            let e = parse_host_list(input).unwrap_err().to_string();
            assert!(e.contains(want), "{input:?}: {e:?} lacks {want:?}");
        }
        let long = "a".repeat(300);
        let e = parse_host_list(&long).unwrap_err().to_string();
        assert!(e.contains("300 bytes") && e.len() < 200, "{e}");
        assert_eq!(
            parse_host_list(&format!("{}.b", "x".repeat(63)))
                .unwrap()
                .len(),
            1
        );
        let e = parse_host_list(&format!("{}.b", "x".repeat(64))).unwrap_err();
        assert!(e.to_string().contains("longer than 63"), "{e}");
        // Repeats stop at the slot limit.
        let e = parse_host_list("a:4000,a:97").unwrap_err().to_string();
        assert!(e.contains("item 2") && e.contains("more than 4096"), "{e}");
        // Control characters are escaped in messages.
        let e = parse_host_list("a\u{1b}[2J").unwrap_err().to_string();
        assert!(!e.contains('\u{1b}'), "{e:?}");
    }

    #[test]
    fn hostfile_syntax() {
        let text = "# cluster\n\
                    node01 slots=10\n\
                    \n\
                    node13  slots=5   max_slots=8 # comment\n\
                    \tnode15\n\
                    192.0.2.1 max-slots=2\n\
                    2001:db8::2 slots=2\n\
                    [::1]\n\
                    node01 slots=2\n";
        let got = parse_hostfile(text).unwrap();
        assert_eq!(
            got,
            vec![
                h("node01", Some(12)),
                HostSpec {
                    max_slots: Some(8),
                    ..h("node13", Some(5))
                },
                h("node15", None),
                HostSpec {
                    max_slots: Some(2),
                    ..h("192.0.2.1", None)
                },
                h("2001:db8::2", Some(2)),
                h("::1", None),
            ]
        );
        // CRLF line ends.
        assert_eq!(
            parse_hostfile("a slots=2\r\nb\r\n").unwrap(),
            vec![h("a", Some(2)), h("b", None)]
        );
    }

    #[test]
    fn hostfile_errors_name_the_line() {
        let cases: &[(&str, &str)] = &[
            ("", "no hosts given"),
            ("# only\n\n   \n", "no hosts given"),
            ("a\nb slots=0\n", "line 2: slots must be at least 1"),
            ("a\n\nb cpus=2\n", "line 3: unknown key \"cpus\""),
            ("a slots=2 slots=3", "line 1: slots given twice"),
            ("a slots", "line 1: \"slots\" is not key=value"),
            ("a slots=x", "slots \"x\" is not a number"),
            ("a slots=4 max_slots=2", "slots=4 is more than max_slots=2"),
            ("a:4", "line 1: \"a:4\" is not a host name or IP address"),
            ("slots=4", "not a host name"),
            ("[a]", "in brackets is not an IPv6 address"),
            ("[::1", "is not a bracketed address"),
            ("-x", "starts with '-'"),
            (
                "a\na slots=4096",
                "line 2: host a given again: more than 4096 slots",
            ),
        ];
        for (input, want) in cases {
            let e = parse_hostfile(input).unwrap_err().to_string();
            assert!(e.contains(want), "{input:?}: {e:?} lacks {want:?}");
        }
    }

    #[test]
    fn hostfile_host_limit() {
        let mut text = String::new();
        for i in 0..MAX_HOSTS {
            text.push_str(&format!("h{i}\n"));
        }
        assert_eq!(parse_hostfile(&text).unwrap().len(), MAX_HOSTS);
        text.push_str("one-more\n");
        let e = parse_hostfile(&text).unwrap_err();
        assert_eq!(
            e,
            HostsError::BadLine {
                line: MAX_HOSTS + 1,
                reason: format!("more than {MAX_HOSTS} hosts")
            }
        );
        // Repeated names do not count as new hosts.
        let many = "a\n".repeat(MAX_SLOTS);
        assert_eq!(
            parse_hostfile(&many).unwrap(),
            vec![h("a", Some(MAX_SLOTS))]
        );
    }

    #[test]
    fn place_by_slot_and_node() {
        let hosts = vec![h("a", Some(2)), h("b", Some(3)), h("c", None)];
        let p = place(&hosts, None, MapBy::Slot, false).unwrap();
        assert_eq!(
            placed(&p),
            vec![("a", vec![0, 1]), ("b", vec![2, 3, 4]), ("c", vec![5])]
        );
        assert_eq!(p.rank_host, vec![0, 0, 1, 1, 1, 2]);
        assert_eq!(p.locate(3), Some((1, 1, 3)));
        assert_eq!(p.locate(6), None);

        let p = place(&hosts, None, MapBy::Node, false).unwrap();
        assert_eq!(
            placed(&p),
            vec![("a", vec![0, 3]), ("b", vec![1, 4, 5]), ("c", vec![2])]
        );

        // Fewer ranks: unused hosts dropped, ids renumbered.
        let p = place(&hosts, Some(2), MapBy::Slot, false).unwrap();
        assert_eq!(placed(&p), vec![("a", vec![0, 1])]);
        let p = place(&hosts, Some(2), MapBy::Node, false).unwrap();
        assert_eq!(placed(&p), vec![("a", vec![0]), ("b", vec![1])]);
        assert_eq!(p.hosts[1].spec_index, 1);
    }

    #[test]
    fn place_oversubscribed() {
        let hosts = vec![h("a", Some(2)), h("b", Some(1))];
        let e = place(&hosts, Some(5), MapBy::Slot, false).unwrap_err();
        assert_eq!(e, HostsError::NotEnoughSlots { np: 5, slots: 3 });
        let msg = e.to_string();
        assert!(msg.contains('5') && msg.contains('3'), "{msg}");

        let p = place(&hosts, Some(6), MapBy::Slot, true).unwrap();
        // 2 + 1 slots, then 3 extra round robin: a gets 2 + 2, b 1 + 1.
        assert_eq!(placed(&p), vec![("a", vec![0, 1, 2, 3]), ("b", vec![4, 5])]);
        let p = place(&hosts, Some(6), MapBy::Node, true).unwrap();
        // Slots: a0 b1 a2; then round robin: a3 b4 a5.
        assert_eq!(placed(&p), vec![("a", vec![0, 2, 3, 5]), ("b", vec![1, 4])]);

        // max_slots bounds oversubscription.
        let capped = vec![
            HostSpec {
                max_slots: Some(2),
                ..h("a", Some(2))
            },
            HostSpec {
                max_slots: Some(3),
                ..h("b", Some(1))
            },
        ];
        let p = place(&capped, Some(5), MapBy::Node, true).unwrap();
        assert_eq!(placed(&p), vec![("a", vec![0, 2]), ("b", vec![1, 3, 4])]);
        let p = place(&capped, Some(5), MapBy::Slot, true).unwrap();
        assert_eq!(placed(&p), vec![("a", vec![0, 1]), ("b", vec![2, 3, 4])]);
        assert_eq!(
            place(&capped, Some(6), MapBy::Slot, true).unwrap_err(),
            HostsError::OverMaxSlots { np: 6, max: 5 }
        );
    }

    #[test]
    fn place_rejects() {
        let a = vec![h("a", Some(2))];
        assert_eq!(
            place(&[], None, MapBy::Slot, false),
            Err(HostsError::NoHosts)
        );
        assert_eq!(
            place(&a, Some(0), MapBy::Slot, true),
            Err(HostsError::ZeroRanks)
        );
        assert_eq!(
            place(&a, Some(MAX_RANKS + 1), MapBy::Node, true),
            Err(HostsError::TooManyRanks {
                np: MAX_RANKS + 1,
                max: MAX_RANKS
            })
        );
        assert!(place(&[h("a", None), h("a", None)], None, MapBy::Slot, false).is_err());
        assert!(place(&[h("a", Some(0))], None, MapBy::Slot, false).is_err());
        let bad_cap = HostSpec {
            max_slots: Some(1),
            ..h("a", Some(2))
        };
        assert!(place(&[bad_cap], None, MapBy::Slot, false).is_err());
        // The most ranks, on one host, oversubscribed.
        let p = place(&[h("a", None)], Some(MAX_RANKS), MapBy::Node, true).unwrap();
        assert_eq!(p.hosts[0].ranks.len(), MAX_RANKS);
    }

    fn arb_hosts() -> impl Strategy<Value = Vec<HostSpec>> {
        proptest::collection::vec(
            (
                proptest::option::of(1usize..6),
                proptest::option::of(0usize..4),
            ),
            1..8,
        )
        .prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (slots, extra))| HostSpec {
                    name: format!("h{i}"),
                    slots,
                    max_slots: extra.map(|e| slots.unwrap_or(1) + e),
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn placement_invariants(
            hosts in arb_hosts(),
            np in proptest::option::of(1usize..40),
            node in any::<bool>(),
            over in any::<bool>(),
        ) {
            let map_by = if node { MapBy::Node } else { MapBy::Slot };
            let slots: Vec<usize> = hosts.iter().map(|h| h.slots.unwrap_or(1)).collect();
            let total: usize = slots.iter().sum();
            let caps: usize = hosts.iter().map(|h| h.max_slots.unwrap_or(MAX_RANKS)).sum();
            let want = np.unwrap_or(total);
            let p = match place(&hosts, np, map_by, over) {
                Ok(p) => p,
                Err(e) => {
                    prop_assert!(want > total && !over || want > caps, "{e}");
                    return Ok(());
                }
            };
            prop_assert!(want <= total || over);
            prop_assert_eq!(p.np(), want);
            // Every rank placed once, on the host rank_host says.
            let mut seen = vec![0u32; want];
            for (id, host) in p.hosts.iter().enumerate() {
                prop_assert!(!host.ranks.is_empty());
                prop_assert!(host.ranks.windows(2).all(|w| w[0] < w[1]));
                let spec = &hosts[host.spec_index];
                prop_assert_eq!(&host.name, &spec.name);
                if !over {
                    prop_assert!(host.ranks.len() <= slots[host.spec_index]);
                }
                prop_assert!(host.ranks.len() <= spec.max_slots.unwrap_or(MAX_RANKS));
                for (local, &r) in host.ranks.iter().enumerate() {
                    seen[r] += 1;
                    prop_assert_eq!(p.rank_host[r], id);
                    prop_assert_eq!(p.locate(r), Some((id, local, host.ranks.len())));
                }
                if map_by == MapBy::Slot {
                    let first = host.ranks[0];
                    prop_assert_eq!(host.ranks.clone(), (first..first + host.ranks.len()).collect::<Vec<_>>());
                }
            }
            prop_assert!(seen.iter().all(|&n| n == 1));
            // Host ids in order of the hosts given, and of their lowest ranks.
            prop_assert!(p.hosts.windows(2).all(|w| w[0].spec_index < w[1].spec_index));
            prop_assert!(p.hosts.windows(2).all(|w| w[0].ranks[0] < w[1].ranks[0]));
            // Without oversubscription, the slots are used before any host is skipped: a host is
            // dropped only when all ranks fit before it (by slot) or there are fewer ranks than
            // hosts (by node).
            if map_by == MapBy::Node {
                prop_assert_eq!(p.hosts.len(), hosts.len().min(want));
            }
        }

        #[test]
        fn parsers_never_panic(text in "[a-z0-9:,\\[\\]=#. \n_-]{0,80}") {
            exercise_hosts(text.as_bytes());
        }

        #[test]
        fn harness_on_bytes(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            exercise_hosts(&data);
        }

        #[test]
        fn host_list_round_trip(hosts in proptest::collection::vec(("[a-z][a-z0-9-]{0,8}", proptest::option::of(1usize..100)), 1..10)) {
            let text: Vec<String> = hosts.iter().map(|(n, s)| match s {
                Some(s) => format!("{n}:{s}"),
                None => n.clone(),
            }).collect();
            let got = parse_host_list(&text.join(",")).unwrap();
            let mut names: Vec<&String> = Vec::new();
            for (n, _) in &hosts {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
            prop_assert_eq!(got.len(), names.len());
            for (g, n) in got.iter().zip(names) {
                prop_assert_eq!(&g.name, n);
                let occ: Vec<Option<usize>> = hosts.iter().filter(|(m, _)| m == n).map(|(_, s)| *s).collect();
                let want = if occ.len() == 1 { occ[0] } else { Some(occ.iter().map(|s| s.unwrap_or(1)).sum()) };
                prop_assert_eq!(g.slots, want);
            }
        }
    }
}
