//! The rendezvous protocol between `boadrun` and its ranks, shared by both sides.
//!
//! `boadrun` gives every rank its own connection, one end of a Unix stream socket pair the rank
//! inherits (its descriptor number in `BOAD_RENDEZVOUS_FD`; it works in any network namespace and
//! exists nowhere in the file system). The two sides exchange newline-terminated ASCII lines:
//!
//! ```text
//! rank -> launcher   HELLO <rank> <host_id> <ip> <udp_port>
//! launcher -> rank   TABLE <n>          (once all n ranks said HELLO)
//!                    <rank> <host_id> <ip> <udp_port>     (n lines, ranks 0..n in order)
//!                    KERNEL <trigger_port> [LEADERS]
//!                                       (optional: the kernel path is attached; BCAST datagrams to
//!                                       this port are cloned to every member of their communicator;
//!                                       LEADERS: the host leaders' communicator is filled too)
//!                    END
//!                    ABORT <reason...>  (instead of TABLE, when the job cannot start)
//! launcher -> rank   EXIT <rank> <code> (whenever a rank exits; code = exit status, or 128+signal)
//! ```
//!
//! The connection stays open for the life of the rank: `EXIT` lines let a rank waiting for a peer that
//! has already gone fail at once with a message naming it, instead of waiting for the timeout.

use std::net::IpAddr;

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
}

/// A line of the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// `HELLO <rank> <host_id> <ip> <port>`
    Hello(PeerEntry),
    /// `TABLE <n>`
    Table(usize),
    /// `<rank> <host_id> <ip> <port>` inside a table.
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
            Line::Hello(e) => format!("HELLO {} {} {} {}\n", e.rank, e.host_id, e.ip, e.port),
            Line::Table(n) => format!("TABLE {n}\n"),
            Line::Entry(e) => format!("{} {} {} {}\n", e.rank, e.host_id, e.ip, e.port),
            Line::Kernel {
                trigger_port,
                leaders,
            } => format!(
                "KERNEL {trigger_port}{}\n",
                if *leaders { " LEADERS" } else { "" }
            ),
            Line::End => "END\n".to_string(),
            Line::Abort(r) => format!("ABORT {}\n", r.replace('\n', " ")),
            Line::Exit { rank, code } => format!("EXIT {rank} {code}\n"),
        }
    }

    /// Parses one line (with or without its newline); `None` if it is not a protocol line.
    pub fn parse(line: &str) -> Option<Line> {
        let line = line.trim_end_matches(['\n', '\r']);
        let mut words = line.split(' ');
        let first = words.next()?;
        let entry = |w: &mut std::str::Split<'_, char>, rank: &str| -> Option<PeerEntry> {
            let e = PeerEntry {
                rank: rank.parse().ok()?,
                host_id: w.next()?.parse().ok()?,
                ip: w.next()?.parse().ok()?,
                port: w.next()?.parse().ok()?,
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
                let trigger_port = words.next()?.parse().ok()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let e = PeerEntry {
            rank: 3,
            host_id: 1,
            ip: "10.0.0.2".parse().unwrap(),
            port: 4000,
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
            Line::End,
            Line::Abort("rank 2 exited with status 1 before joining".into()),
            Line::Exit { rank: 4, code: 137 },
        ] {
            assert_eq!(Line::parse(&l.format()), Some(l));
        }
        assert_eq!(Line::parse("HELLO 1 2"), None);
        assert_eq!(Line::parse("garbage"), None);
        assert_eq!(Line::parse("KERNEL 4999 FOLLOWERS"), None);
    }
}
