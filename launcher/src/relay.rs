//! The rendezvous connections of one host's ranks, carried over the one authenticated TCP
//! connection between that host's agent and `boadrun`.
//!
//! A rank always talks to the rendezvous over the Unix socket it inherited (`BOAD_RENDEZVOUS_FD`),
//! whether boadrun started it on this machine or an agent did on another: on a remote host the agent
//! holds the other end, and on boadrun's side the rendezvous server holds one end of a socket pair
//! standing in for the rank. [`run`] joins the two, on each side the same way: every line a rank
//! end yields goes over the stream as `L RANK LINE`, the end of a rank's connection as `C RANK`, and
//! what arrives is written to that rank's end. So the server and the ranks see exactly what they see
//! on one machine, and a lost TCP connection closes every rank's connection of that host (which the
//! server and the ranks already treat as the rank being gone).
//!
//! Contract: only the ranks given to [`run`] may appear in frames; a frame naming another rank, a
//! malformed frame or a line longer than [`MAX_LINE`] ends the relay (every connection closed).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use boad_proto::control::relay_frame;

/// Longest rendezvous line relayed (the job table's lines are far shorter).
pub const MAX_LINE: usize = 64 << 10;

/// One rank's end on this side.
pub struct RankEnd {
    /// The rank.
    pub rank: usize,
    /// The connection standing in for it (the server's partner, or the rank's partner).
    pub conn: UnixStream,
}

/// Reads one line of at most [`MAX_LINE`] bytes, without its newline; None at the end (or on a line
/// too long, which ends the relay as well).
fn line(r: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    match r
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut v)
    {
        Ok(0) | Err(_) => None,
        Ok(_) if v.last() == Some(&b'\n') => {
            v.pop();
            Some(v)
        }
        Ok(_) => None,
    }
}

/// Joins `ends` to `stream` until either side ends; returns at once (threads do the work). When the
/// stream ends, every rank end is shut down; `on_lost` is then called once (not when every rank's
/// connection ended first).
pub fn run(stream: TcpStream, ends: Vec<RankEnd>, on_lost: impl FnOnce() + Send + 'static) {
    let writer = match stream.try_clone() {
        Ok(w) => Arc::new(Mutex::new(w)),
        Err(_) => {
            on_lost();
            return;
        }
    };
    let open = Arc::new(Mutex::new(ends.len()));
    let mut conns: Vec<(usize, UnixStream)> = Vec::new();
    for end in ends {
        let Ok(copy) = end.conn.try_clone() else {
            continue;
        };
        conns.push((end.rank, copy));
        let writer = Arc::clone(&writer);
        let open = Arc::clone(&open);
        thread::spawn(move || {
            let mut r = BufReader::new(&end.conn);
            while let Some(l) = line(&mut r) {
                let mut frame = format!("L {} ", end.rank).into_bytes();
                frame.extend_from_slice(&l);
                frame.push(b'\n');
                let mut w = writer.lock().unwrap_or_else(PoisonError::into_inner);
                if w.write_all(&frame).is_err() {
                    return;
                }
            }
            let mut w = writer.lock().unwrap_or_else(PoisonError::into_inner);
            let _ = w.write_all(format!("C {}\n", end.rank).as_bytes());
            let mut left = open.lock().unwrap_or_else(PoisonError::into_inner);
            *left -= 1;
            if *left == 0 {
                // Every rank's connection ended: nothing more will be said either way.
                let _ = w.shutdown(Shutdown::Write);
            }
        });
    }
    thread::spawn(move || {
        let mut r = BufReader::new(stream);
        let mut clean = false;
        while let Some(frame) = line(&mut r) {
            let Some((kind, rank, rest)) = relay_frame(&frame) else {
                break;
            };
            let Some((_, conn)) = conns.iter().find(|(q, _)| *q == rank) else {
                break;
            };
            let mut conn: &UnixStream = conn;
            match kind {
                b'L' => {
                    let mut out = rest.to_vec();
                    out.push(b'\n');
                    // A rank that is gone: its line is lost with it.
                    let _ = conn.write_all(&out);
                }
                _ => {
                    let _ = conn.shutdown(Shutdown::Write);
                    conns.retain(|(q, _)| *q != rank);
                    if conns.is_empty() {
                        clean = true;
                        break;
                    }
                }
            }
        }
        for (_, c) in &conns {
            let _ = c.shutdown(Shutdown::Both);
        }
        if !clean {
            on_lost();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Two hosts' worth of relays over real TCP: lines pass both ways per rank, the end of one
    /// rank's connection reaches its partner, and a lost stream closes every rank's partner.
    #[test]
    fn lines_pass_and_ends_propagate() {
        let l = TcpListener::bind("127.0.0.1:0").expect("listen");
        let a = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (b, _) = l.accept().expect("accept");
        let pairs = |n: usize| -> (Vec<RankEnd>, Vec<UnixStream>) {
            (0..n)
                .map(|i| {
                    let (x, y) = UnixStream::pair().expect("pair");
                    (
                        RankEnd {
                            rank: 3 + i,
                            conn: x,
                        },
                        y,
                    )
                })
                .unzip()
        };
        let (ends_a, outer_a) = pairs(2);
        let (ends_b, outer_b) = pairs(2);
        let (lost_tx, lost_rx) = mpsc::channel();
        let lost_b = lost_tx.clone();
        run(a, ends_a, move || lost_tx.send('a').expect("send"));
        run(b, ends_b, move || lost_b.send('b').expect("send"));
        for c in outer_a.iter().chain(&outer_b) {
            c.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
        }
        (&outer_a[0]).write_all(b"HELLO 3 x\n").expect("write");
        (&outer_b[1]).write_all(b"TABLE for 4\n").expect("write");
        let mut got = String::new();
        BufReader::new(&outer_b[0])
            .read_line(&mut got)
            .expect("read");
        assert_eq!(got, "HELLO 3 x\n");
        got.clear();
        BufReader::new(&outer_a[1])
            .read_line(&mut got)
            .expect("read");
        assert_eq!(got, "TABLE for 4\n");
        // Rank 3's connection ends on side a: side b's partner sees its end.
        outer_a[0].shutdown(Shutdown::Both).expect("shutdown");
        let mut rest = Vec::new();
        (&outer_b[0]).read_to_end(&mut rest).expect("eof");
        assert!(rest.is_empty());
        assert!(lost_rx.try_recv().is_err(), "one rank's end is no loss");
        // Every rank end closed on side a: both relays end cleanly.
        outer_a[1].shutdown(Shutdown::Both).expect("shutdown");
        (&outer_b[1]).read_to_end(&mut rest).expect("eof");
        assert!(lost_rx.recv_timeout(Duration::from_millis(300)).is_err());
    }

    #[test]
    fn a_foreign_rank_or_a_lost_stream_closes_every_partner() {
        let l = TcpListener::bind("127.0.0.1:0").expect("listen");
        let mut peer = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (ours, _) = l.accept().expect("accept");
        let (x, outer) = UnixStream::pair().expect("pair");
        outer
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let (tx, rx) = mpsc::channel();
        run(ours, vec![RankEnd { rank: 0, conn: x }], move || {
            tx.send(()).expect("send")
        });
        peer.write_all(b"L 0 fine\nL 1 not yours\n").expect("write");
        let mut got = Vec::new();
        (&outer).read_to_end(&mut got).expect("read");
        assert_eq!(got, b"fine\n");
        rx.recv_timeout(Duration::from_secs(5))
            .expect("reported lost");
        for bad in [&b"L 0"[..], b"C 0 x", b"X 0 y", b"L x y", b""] {
            assert!(relay_frame(bad).is_none(), "{bad:?}");
        }
        assert_eq!(relay_frame(b"L 12 a b"), Some((b'L', 12, &b"a b"[..])));
        assert_eq!(relay_frame(b"C 2"), Some((b'C', 2, &b""[..])));
    }
}
