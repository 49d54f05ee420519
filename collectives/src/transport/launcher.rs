//! A rank's connection to its launcher, as the transports read it: `boadrun` writes an `EXIT <rank>
//! <code>` line when a rank's process ends, so a rank waiting for a peer that died fails at once
//! instead of timing out.
//!
//! Contract: [`LauncherFeed::poll`] never blocks; it returns the `EXIT` lines that arrived whole
//! since the last call, in order, and ignores every other line and anything malformed
//! (`boad_proto::lines`). When the launcher closes the connection the feed closes too (its death
//! signal ends the rank soon) and polls return nothing more. A job without a launcher has a feed
//! that is closed from the start.

use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

use boad_proto::lines::{take_lines, Line};

/// The launcher connection, read for `EXIT` lines.
pub(crate) struct LauncherFeed {
    conn: Option<UnixStream>,
    buf: Vec<u8>,
}

impl LauncherFeed {
    /// The feed of `conn` (made non-blocking), starting with `leftover`: what the rendezvous read
    /// past its own lines.
    pub fn new(conn: Option<UnixStream>, leftover: Vec<u8>) -> std::io::Result<LauncherFeed> {
        if let Some(c) = &conn {
            c.set_nonblocking(true)?;
        }
        Ok(LauncherFeed {
            conn,
            buf: leftover,
        })
    }

    /// The connection's descriptor while it is open (to wait for it with a poller).
    pub fn fd(&self) -> Option<RawFd> {
        self.conn.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// The (rank, exit status) of every `EXIT` line that arrived; `closing` is called with the
    /// descriptor just before the feed closes it, when the launcher has gone.
    pub fn poll(&mut self, closing: impl FnOnce(RawFd)) -> Vec<(usize, i32)> {
        let mut chunk = [0u8; 1024];
        let mut closing = Some(closing);
        while let Some(c) = self.conn.as_mut() {
            match c.read(&mut chunk) {
                Ok(0) => {
                    if let Some(f) = closing.take() {
                        f(c.as_raw_fd());
                    }
                    self.conn = None;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        take_lines(&mut self.buf)
            .into_iter()
            .filter_map(|line| match line {
                Some(Line::Exit { rank, code }) => Some((rank, code)),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn exit_lines_arrive_whole_and_in_order_and_a_closed_launcher_closes_the_feed() {
        let (mut launcher, rank) = UnixStream::pair().expect("pair");
        let mut feed = LauncherFeed::new(Some(rank), b"EXIT 3 0\nEXIT 4".to_vec()).expect("feed");
        assert_eq!(feed.poll(|_| panic!("not closed")), vec![(3, 0)]);
        launcher
            .write_all(b" 137\nKERNEL 9 LEADERS\nEXIT x 1\nEXIT 2 1\n")
            .expect("write");
        assert_eq!(feed.poll(|_| panic!("not closed")), vec![(4, 137), (2, 1)]);
        assert!(
            feed.poll(|_| panic!("not closed")).is_empty(),
            "nothing new"
        );
        drop(launcher);
        let mut closed = None;
        assert!(feed.poll(|fd| closed = Some(fd)).is_empty());
        assert!(closed.is_some() && feed.fd().is_none());
        let mut none = LauncherFeed::new(None, Vec::new()).expect("feed");
        assert!(none.poll(|_| panic!("no connection")).is_empty());
    }
}
