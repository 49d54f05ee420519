//! The rendezvous protocol between `boadrun` and its ranks, shared by both sides.
//!
//! `boadrun` gives every rank its own connection, one end of a Unix stream socket pair the rank
//! inherits (its descriptor number in `BOAD_RENDEZVOUS_FD`; it works in any network namespace and
//! exists nowhere in the file system). The two sides exchange newline-terminated ASCII lines:
//!
//! ```text
//! rank -> launcher   HELLO <rank> <host_id> <ip> <udp_port> <pulse_port> <pid>
//! launcher -> rank   TABLE <n>          (once all n ranks said HELLO)
//!                    <rank> <host_id> <ip> <udp_port> <pulse_port> <pid>
//!                                       (n lines, ranks 0..n in order; `pulse_port`: the rank's
//!                                       liveness socket, 0 if it has none; `pid`: its process id)
//!                    KERNEL <trigger_port> [LEADERS]
//!                                       (optional: the kernel path is attached; BCAST datagrams to
//!                                       this port are cloned to every member of their communicator;
//!                                       LEADERS: the host leaders' communicator is filled too)
//!                    KCOMMS <world> <leaders>
//!                                       (optional, after KERNEL: the communicator ids of the job and
//!                                       of its host leaders in the programs' maps, when they are not
//!                                       0 and 1: a kernel service gives each job ids of its own)
//!                    END
//!                    ABORT <reason...>  (instead of TABLE, when the job cannot start)
//! launcher -> rank   EXIT <rank> <code> (whenever a rank exits; code = exit status, or 128+signal)
//! ```
//!
//! The connection stays open for the life of the rank: `EXIT` lines let a rank waiting for a peer that
//! has already gone fail at once with a message naming it, instead of waiting for the timeout.

use std::net::IpAddr;

/// Longest line either side reads (a table entry with an IPv6 address is under 80 bytes; an
/// `ABORT` reason may be longer): a reader keeps at most this much of an unfinished line, and
/// drops a line that runs past it.
pub const MAX_LINE: usize = 4096;

/// One rank's entry in the job table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerEntry {
    /// Rank.
    pub rank: usize,
    /// Host the rank runs on (ranks with the same host id share a machine).
    pub host_id: u32,
    /// Address of the rank's UDP socket.
    pub ip: IpAddr,
    /// Port of the rank's UDP socket.
    pub port: u16,
    /// Port of the rank's liveness socket on `ip` (answers whether the rank is alive and where it
    /// is; 0 if it has none).
    pub pulse: u16,
    /// The rank's process id (on its host).
    pub pid: u32,
}

/// A line of the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// `HELLO <rank> <host_id> <ip> <port> <pulse> <pid>`
    Hello(PeerEntry),
    /// `TABLE <n>`
    Table(usize),
    /// `<rank> <host_id> <ip> <port> <pulse> <pid>` inside a table.
    Entry(PeerEntry),
    /// `KERNEL <trigger_port> [LEADERS]`: the launcher attached the eBPF programs for this job.
    Kernel {
        /// UDP port whose BCAST datagrams the TC program clones to every member of their
        /// communicator.
        trigger_port: u16,
        /// The programs' maps also hold the host leaders' communicator
        /// (`boad_common::kernel::comm::LEADERS`), for the hierarchical path.
        leaders: bool,
    },
    /// `KCOMMS <world> <leaders>`: the communicator ids of the job and of its host leaders in the
    /// programs' maps (without this line: `boad_common::kernel::comm::WORLD` and `LEADERS`).
    KernelComms {
        /// The job's communicator (every rank, numbered by job rank).
        world: u32,
        /// The host leaders' communicator (used only with `KERNEL ... LEADERS`).
        leaders: u32,
    },
    /// `END`
    End,
    /// `ABORT <reason>`
    Abort(String),
    /// `EXIT <rank> <code>`
    Exit {
        /// The rank that exited.
        rank: usize,
        /// Its exit status (128+signal when killed by a signal).
        code: i32,
    },
}

impl Line {
    /// The line as sent, with its trailing newline.
    pub fn format(&self) -> String {
        match self {
            Line::Hello(e) => format!("HELLO {}", Self::entry_words(e)),
            Line::Table(n) => format!("TABLE {n}\n"),
            Line::Entry(e) => Self::entry_words(e),
            Line::Kernel {
                trigger_port,
                leaders,
            } => format!(
                "KERNEL {trigger_port}{}\n",
                if *leaders { " LEADERS" } else { "" }
            ),
            Line::KernelComms { world, leaders } => format!("KCOMMS {world} {leaders}\n"),
            Line::End => "END\n".to_string(),
            Line::Abort(r) => format!("ABORT {}\n", r.replace('\n', " ")),
            Line::Exit { rank, code } => format!("EXIT {rank} {code}\n"),
        }
    }

    fn entry_words(e: &PeerEntry) -> String {
        format!(
            "{} {} {} {} {} {}\n",
            e.rank, e.host_id, e.ip, e.port, e.pulse, e.pid
        )
    }

    /// Parses one line (with or without its newline); `None` if it is not a protocol line: an
    /// unknown word, a number out of range, a port 0 (no socket has it), or words missing or left
    /// over.
    pub fn parse(line: &str) -> Option<Line> {
        let line = line.trim_end_matches(['\n', '\r']);
        let mut words = line.split(' ');
        let first = words.next()?;
        let entry = |w: &mut std::str::Split<'_, char>, rank: &str| -> Option<PeerEntry> {
            let e = PeerEntry {
                rank: rank.parse().ok()?,
                host_id: w.next()?.parse().ok()?,
                ip: w.next()?.parse().ok()?,
                port: w.next()?.parse().ok().filter(|&p| p != 0)?,
                pulse: w.next()?.parse().ok()?,
                pid: w.next()?.parse().ok().filter(|&p| p != 0)?,
            };
            w.next().is_none().then_some(e)
        };
        match first {
            "HELLO" => {
                let rank = words.next()?;
                entry(&mut words, rank).map(Line::Hello)
            }
            "TABLE" => {
                let n = words.next()?.parse().ok()?;
                words.next().is_none().then_some(Line::Table(n))
            }
            "END" => words.next().is_none().then_some(Line::End),
            "KERNEL" => {
                let trigger_port = words.next()?.parse().ok().filter(|&p| p != 0)?;
                let leaders = match words.next() {
                    None => false,
                    Some("LEADERS") => true,
                    Some(_) => return None,
                };
                words.next().is_none().then_some(Line::Kernel {
                    trigger_port,
                    leaders,
                })
            }
            "KCOMMS" => {
                let world = words.next()?.parse().ok()?;
                let leaders = words.next()?.parse().ok()?;
                words
                    .next()
                    .is_none()
                    .then_some(Line::KernelComms { world, leaders })
            }
            "ABORT" => Some(Line::Abort(line.get(6..).unwrap_or("").to_string())),
            "EXIT" => {
                let rank = words.next()?.parse().ok()?;
                let code = words.next()?.parse().ok()?;
                words.next().is_none().then_some(Line::Exit { rank, code })
            }
            rank => entry(&mut words, rank).map(Line::Entry),
        }
    }
}

/// Takes the complete lines out of `buf` (bytes read from a connection) and parses them (None for
/// a line that is not the protocol); what follows the last newline stays in `buf`, unless it is
/// already longer than [`MAX_LINE`]: then it is no protocol line, and it is dropped.
pub fn take_lines(buf: &mut Vec<u8>) -> Vec<Option<Line>> {
    let mut lines = Vec::new();
    let mut start = 0;
    while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
        let line = &buf[start..start + nl];
        lines.push(std::str::from_utf8(line).ok().and_then(Line::parse));
        start += nl + 1;
    }
    buf.drain(..start);
    if buf.len() > MAX_LINE {
        buf.clear();
    }
    lines
}

/// Fuzz and property-test harness: `data` as what a connection delivers. Every line parses or not
/// without panicking, what parses formats back to the same line, and [`take_lines`] keeps what
/// follows the last newline only while it is short.
#[cfg(any(test, feature = "fuzzing"))]
pub fn exercise_lines(data: &[u8]) {
    let mut buf = data.to_vec();
    let lines = take_lines(&mut buf);
    assert_eq!(lines.len(), data.iter().filter(|&&b| b == b'\n').count());
    assert!(!buf.contains(&b'\n') && buf.len() <= MAX_LINE);
    for l in lines.into_iter().flatten() {
        assert_eq!(Line::parse(&l.format()), Some(l));
    }
    // The launcher's side: the first line, of at most 256 bytes, as `serve` reads it.
    let first = &data[..data.len().min(256)];
    let first = first
        .iter()
        .position(|&b| b == b'\n')
        .map_or(first, |nl| &first[..=nl]);
    let text = String::from_utf8_lossy(first);
    if let Some(l) = Line::parse(&text) {
        assert_eq!(Line::parse(&l.format()), Some(l));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lines_round_trip() {
        let e = PeerEntry {
            rank: 3,
            host_id: 1,
            ip: "10.0.0.2".parse().unwrap(),
            port: 4000,
            pulse: 4001,
            pid: 77,
        };
        for l in [
            Line::Hello(e.clone()),
            Line::Table(9),
            Line::Entry(e),
            Line::Kernel {
                trigger_port: 4999,
                leaders: false,
            },
            Line::Kernel {
                trigger_port: 4999,
                leaders: true,
            },
            Line::KernelComms {
                world: 6,
                leaders: 7,
            },
            Line::End,
            Line::Abort("rank 2 exited with status 1 before joining".into()),
            Line::Exit { rank: 4, code: 137 },
        ] {
            assert_eq!(Line::parse(&l.format()), Some(l));
        }
        assert_eq!(Line::parse("HELLO 1 2"), None);
        assert_eq!(Line::parse("garbage"), None);
        assert_eq!(Line::parse("KERNEL 4999 FOLLOWERS"), None);
        assert_eq!(Line::parse("KCOMMS 1"), None);
        assert_eq!(Line::parse("KCOMMS 1 2 3"), None);
        assert_eq!(Line::parse("KCOMMS -1 2"), None);
    }

    #[test]
    fn out_of_range_numbers_and_port_zero_are_not_lines() {
        for bad in [
            "HELLO 1 2 127.0.0.1 0 0 1",
            "HELLO 1 2 127.0.0.1 65536 0 1",
            "HELLO 1 4294967296 127.0.0.1 4000 0 1",
            "HELLO 99999999999999999999999 0 127.0.0.1 4000 0 1",
            "HELLO 1 2 300.0.0.1 4000 0 1",
            "HELLO 1 2 127.0.0.1 4000 5",
            "HELLO 1 2 127.0.0.1 4000 5 0",
            "HELLO 1 2 127.0.0.1 4000 5 6 7",
            "HELLO 1 2 127.0.0.1 4000 70000 6",
            "3 1 ::1 0 0 1",
            "KERNEL 0",
            "KERNEL -1",
            "EXIT 1 2147483648",
            "EXIT -1 0",
            "TABLE -1",
            "",
            " ",
            "END END",
        ] {
            assert_eq!(Line::parse(bad), None, "{bad:?}");
        }
        assert_eq!(
            Line::parse("EXIT 1 -2147483648"),
            Some(Line::Exit {
                rank: 1,
                code: i32::MIN
            })
        );
    }

    #[test]
    fn lines_are_taken_whole_and_a_runaway_line_is_dropped() {
        let mut buf = b"EXIT 1 0\nEND\n\xff\xfe\nEXIT 2".to_vec();
        assert_eq!(
            take_lines(&mut buf),
            vec![Some(Line::Exit { rank: 1, code: 0 }), Some(Line::End), None]
        );
        assert_eq!(buf, b"EXIT 2");
        buf.extend_from_slice(b" 3\n");
        assert_eq!(
            take_lines(&mut buf),
            vec![Some(Line::Exit { rank: 2, code: 3 })]
        );
        assert!(buf.is_empty());
        buf.extend(std::iter::repeat_n(b'x', MAX_LINE + 1));
        assert_eq!(take_lines(&mut buf), vec![]);
        assert!(buf.is_empty(), "a line longer than MAX_LINE is not kept");
    }

    proptest! {
        /// Whatever a line is, parsing does not panic, and what parses formats back to itself.
        #[test]
        fn parse_then_format_round_trips(line in "[A-Z0-9 .:a-f\\-]{0,60}") {
            if let Some(l) = Line::parse(&line) {
                prop_assert_eq!(Line::parse(&l.format()), Some(l));
            }
        }

        #[test]
        fn any_bytes_split_into_lines(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut buf = bytes.clone();
            let lines = take_lines(&mut buf);
            prop_assert_eq!(lines.len(), bytes.iter().filter(|&&b| b == b'\n').count());
            prop_assert!(!buf.contains(&b'\n') && buf.len() <= MAX_LINE);
        }
    }
}
