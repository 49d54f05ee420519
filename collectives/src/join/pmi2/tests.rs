//! The PMI-2 client against an in-test PMI-2 server (threads on Unix socket pairs): a whole job
//! through `store::prepare` and `store::exchange`, and servers that answer wrong.

use super::*;
use crate::join::store::{exchange, prepare, HostValue};
use boad_proto::lines::PeerEntry;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Instant;

const T: Duration = Duration::from_secs(10);

/// The server's own reading of a request (not the client's parser): length field, then
/// `key=value;` pairs split on `;`.
fn read_request(s: &mut UnixStream) -> Option<HashMap<String, String>> {
    let mut len = [0u8; 6];
    s.read_exact(&mut len).ok()?;
    let n: usize = std::str::from_utf8(&len).ok()?.trim().parse().ok()?;
    let mut body = vec![0u8; n];
    s.read_exact(&mut body).ok()?;
    let text = String::from_utf8(body).ok()?;
    assert!(text.ends_with(';'), "{text:?}");
    Some(
        text.trim_end_matches(';')
            .split(';')
            .map(|kv| {
                let (k, v) = kv.split_once('=').expect("key=value");
                (k.to_string(), v.to_string())
            })
            .collect(),
    )
}

fn send(s: &mut UnixStream, body: &str) {
    let _ = s.write_all(format!("{:<6}{body}", body.len()).as_bytes());
}

/// Reads the PMI-1 form init line and answers it with `answer`.
fn serve_init(s: &mut UnixStream, answer: &str) {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while s.read_exact(&mut b).is_ok() && b[0] != b'\n' {
        line.push(b[0]);
    }
    assert_eq!(line, b"cmd=init pmi_version=2 pmi_subversion=0");
    let _ = s.write_all(answer.as_bytes());
}

const INIT_OK: &str = "cmd=response_to_init rc=0 pmi_version=2 pmi_subversion=0\n";

/// A PMI-2 server as slurmstepd's plugin behaves, for `n` tasks of job "7.0": puts become visible
/// at the fence every task reaches.
fn server(n: usize) -> (Vec<UnixStream>, Vec<std::thread::JoinHandle<()>>) {
    let kvs = Arc::new(Mutex::new(HashMap::<String, String>::new()));
    let fence = Arc::new(Barrier::new(n));
    let mut clients = Vec::new();
    let mut threads = Vec::new();
    for rank in 0..n {
        let (client, mut s) = UnixStream::pair().expect("socket pair");
        clients.push(client);
        let (kvs, fence) = (kvs.clone(), fence.clone());
        threads.push(std::thread::spawn(move || {
            serve_init(&mut s, INIT_OK);
            let mut pending = Vec::new();
            while let Some(req) = read_request(&mut s) {
                let cmd = req["cmd"].as_str();
                match cmd {
                    "fullinit" => {
                        assert_eq!(req["pmijobid"], "7.0");
                        assert_eq!(req["pmirank"], rank.to_string());
                        assert_eq!(req["threaded"], "FALSE");
                        send(
                            &mut s,
                            &format!(
                                "cmd=fullinit-response;rc=0;pmi-version=2;pmi-subversion=0;\
                                 rank={rank};size={n};appnum=-1;debugged=FALSE;pmiverbose=FALSE;"
                            ),
                        );
                    }
                    "job-getid" => send(&mut s, "cmd=job-getid-response;rc=0;jobid=7.0;"),
                    "kvs-put" => {
                        pending.push((req["key"].clone(), req["value"].clone()));
                        send(&mut s, "cmd=kvs-put-response;rc=0;");
                    }
                    "kvs-fence" => {
                        kvs.lock().expect("kvs").extend(pending.drain(..));
                        fence.wait();
                        send(&mut s, "cmd=kvs-fence-response;rc=0;");
                    }
                    "kvs-get" => {
                        assert_eq!(req["jobid"], "7.0");
                        let v = kvs.lock().expect("kvs").get(&req["key"]).cloned();
                        match v {
                            Some(v) => send(
                                &mut s,
                                &format!("cmd=kvs-get-response;rc=0;found=TRUE;value={v};"),
                            ),
                            None => send(&mut s, "cmd=kvs-get-response;rc=0;found=FALSE;"),
                        }
                    }
                    "finalize" => {
                        send(&mut s, "cmd=finalize-response;rc=0;");
                        return;
                    }
                    other => panic!("unexpected command {other}"),
                }
            }
        }));
    }
    (clients, threads)
}

fn info(rank: usize, size: usize) -> JobInfo {
    let mut i = JobInfo::singleton();
    i.rank = rank;
    i.size = size;
    i.launcher = Launcher::Slurm;
    i
}

#[test]
fn ranks_meet_through_a_pmi2_server_and_agree_on_the_job_table() {
    let n = 4;
    let (clients, servers) = server(n);
    let here = HostValue::here().expect("this host");
    let ranks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(rank, c)| {
            let here = here.clone();
            std::thread::spawn(move || {
                let mut i = info(rank, n);
                let mut store = Pmi2::over(c, &i, "7.0", T, "test".into()).expect("connect");
                let ids = prepare(&mut store, &mut i, &here, None).expect("prepare");
                let me = PeerEntry {
                    rank,
                    host_id: i.host_id,
                    ip: i.bind,
                    port: 7000 + rank as u16,
                    pulse: 8000 + rank as u16,
                    pid: 10 + rank as u32,
                };
                let table = exchange(&mut store, &ids, &me).expect("exchange");
                (i, table)
            })
        })
        .collect();
    let out: Vec<_> = ranks.into_iter().map(|h| h.join().expect("rank")).collect();
    for s in servers {
        s.join()
            .expect("server saw only the protocol, ending with finalize");
    }
    for (rank, (i, table)) in out.iter().enumerate() {
        assert_eq!(i.job, out[0].0.job);
        assert_ne!(i.job, 0);
        assert_eq!((i.local_rank, i.local_size), (rank, n));
        assert_eq!(i.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(table, &out[0].1);
        assert_eq!(table.len(), n);
        assert_eq!(table[rank].port, 7000 + rank as u16);
    }
}

/// Runs the client's handshake (as rank 1 of 3) against a server that answers init with `init`,
/// then each request with the next of `replies` (raw bytes, the length field included; an empty
/// one: no answer, the connection held open), then closes; returns the client's error.
fn refused(init: &[u8], replies: Vec<Vec<u8>>, t: Duration) -> String {
    let (client, mut s) = UnixStream::pair().expect("socket pair");
    let init = init.to_vec();
    let srv = std::thread::spawn(move || {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while s.read_exact(&mut b).is_ok() && b[0] != b'\n' {
            line.push(b[0]);
        }
        let _ = s.write_all(&init);
        for r in replies {
            if read_request(&mut s).is_none() {
                return;
            }
            if r.is_empty() {
                // Silence: hold the connection open until the client gives up.
                while read_request(&mut s).is_some() {}
                return;
            }
            let _ = s.write_all(&r);
        }
    });
    let start = Instant::now();
    let result = Pmi2::over(client, &info(1, 3), "7.0", t, "PMI_FD=5".into());
    let err = match result {
        Ok(mut p) => p.get("k").err().map(|e| e.to_string()),
        Err(e) => Some(e.to_string()),
    }
    .expect("the client must refuse");
    assert!(start.elapsed() < t + Duration::from_secs(2), "{err}");
    drop(srv.join());
    err
}

fn msg(body: &str) -> Vec<u8> {
    format!("{:<6}{body}", body.len()).into_bytes()
}

const FULL_OK: &str = "cmd=fullinit-response;rc=0;pmi-version=2;pmi-subversion=0;rank=1;size=3;\
                       appnum=0;debugged=FALSE;pmiverbose=FALSE;";

#[test]
fn a_server_that_answers_wrong_is_an_error_naming_slurm_and_what_it_sent() {
    let ok = INIT_OK.as_bytes();
    // (the server's init line, its replies, what the client's error must say)
    type Case<'a> = (&'a [u8], Vec<Vec<u8>>, &'a str);
    let cases: Vec<Case> = vec![
        (
            b"cmd=response_to_init rc=1 pmi_version=2 pmi_subversion=0\n",
            vec![],
            "init failed with rc=1",
        ),
        (
            b"cmd=response_to_init rc=0 pmi_version=1 pmi_subversion=1\n",
            vec![],
            "PMI-1.1",
        ),
        (&[b'x'; 300], vec![], "longer than 128"),
        (b"cmd=hello\n", vec![], "in reply to init"),
        (ok, vec![b"99999 ".to_vec()], "99999 bytes"),
        (ok, vec![b"-1    ".to_vec()], "not a number"),
        (ok, vec![b"0     ".to_vec()], "0 bytes"),
        (
            ok,
            vec![msg("cmd=kvs-put-response;rc=0;")],
            "cmd=kvs-put-response",
        ),
        (
            ok,
            vec![msg("cmd=fullinit-response;rc=3;errmsg=bad pmijobid;")],
            "refused fullinit: rc=3 (bad pmijobid)",
        ),
        (
            ok,
            vec![msg(
                "cmd=fullinit-response;rc=0;pmi-version=2;pmi-subversion=0;size=3;",
            )],
            "no rank",
        ),
        (
            ok,
            vec![msg(&FULL_OK.replace("rank=1", "rank=2"))],
            "rank 2 of 3, but PMI_RANK=1",
        ),
        (
            ok,
            vec![msg(&FULL_OK.replace("size=3", "size=1"))],
            "rank 1 of 1",
        ),
        (
            ok,
            vec![msg("cmd=fullinit-response;rc=0;rc=0;")],
            "the key \"rc\" twice",
        ),
        (
            ok,
            vec![msg("cmd=fullinit-response;rc\u{1};")],
            "not printable",
        ),
        (
            ok,
            vec![msg("rc=0;cmd=fullinit-response;")],
            "start with cmd=",
        ),
        // Truncated: announces 100 bytes, sends 10, closes.
        (
            ok,
            vec![b"100   cmd=fullin".to_vec()],
            "closed the connection",
        ),
        (
            ok,
            vec![msg(FULL_OK), msg("cmd=job-getid-response;rc=0;")],
            "no usable jobid",
        ),
        (
            ok,
            vec![
                msg(FULL_OK),
                msg("cmd=job-getid-response;rc=0;jobid=7.0;"),
                msg("cmd=kvs-get-response;rc=0;found=FALSE;"),
            ],
            "no rank published \"k\"",
        ),
        (
            ok,
            vec![
                msg(FULL_OK),
                msg("cmd=job-getid-response;rc=0;jobid=7.0;"),
                msg("cmd=kvs-get-response;rc=0;found=maybe;"),
            ],
            "found=Some(\"maybe\")",
        ),
    ];
    for (init, replies, want) in cases {
        let err = refused(init, replies, T);
        assert!(err.contains(want), "want {want:?}: {err}");
        assert!(err.contains("Slurm"), "{err}");
    }
}

#[test]
fn a_server_that_drips_its_reply_is_an_error_within_the_timeout() {
    let (client, mut s) = UnixStream::pair().expect("socket pair");
    let srv = std::thread::spawn(move || {
        serve_init(&mut s, INIT_OK);
        let _ = read_request(&mut s);
        // A byte every 50 ms of a reply that never ends: each read is quick, the whole is not.
        let reply = msg(FULL_OK);
        for b in reply.iter().cycle().take(200) {
            if s.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let t = Duration::from_millis(400);
    let start = Instant::now();
    let err = Pmi2::over(client, &info(1, 3), "7.0", t, "PMI_FD=5".into())
        .err()
        .expect("refused")
        .to_string();
    assert!(start.elapsed() < Duration::from_secs(2), "{err}");
    assert!(err.contains("no answer within 400ms"), "{err}");
    drop(srv.join());
}

#[test]
fn a_silent_server_is_an_error_within_the_timeout() {
    let t = Duration::from_millis(300);
    let err = refused(INIT_OK.as_bytes(), vec![msg(FULL_OK), Vec::new()], t);
    assert!(
        err.contains("no answer within 300ms") && err.contains("job-getid"),
        "{err}"
    );
}

#[test]
fn messages_parse_and_encode_back() {
    let m = parse_body(b"cmd=kvs-get-response;rc=0;found=TRUE;value=a=b;;c;").expect("parses");
    assert_eq!(m.cmd(), "kvs-get-response");
    assert_eq!(m.get("value"), Some("a=b;c"));
    assert_eq!(parse_body(&m.encode()[6..]).expect("again"), m);
    assert_eq!(
        &m.encode()[..6],
        format!("{:<6}", m.encode().len() - 6).as_bytes()
    );
    // The last ';' may be missing.
    assert_eq!(
        parse_body(b"cmd=x;rc=0").expect("parses").get("rc"),
        Some("0")
    );
    for bad in [
        &b""[..],
        b";",
        b"cmd",
        b"=x;",
        b"cmd=x;;;=1",
        b"cmd=x;a b=1;",
        b"\xffcmd=x",
    ] {
        assert!(parse_body(bad).is_err(), "{bad:?}");
    }
    assert_eq!(parse_length(b"42    "), Ok(42));
    assert_eq!(parse_length(b"    42"), Ok(42));
    for bad in [
        &b"      "[..],
        b"4 2   ",
        b"+42   ",
        b"2049  ",
        b"0     ",
        b"0x10  ",
    ] {
        assert!(parse_length(bad).is_err(), "{bad:?}");
    }
}

proptest::proptest! {
    #[test]
    fn any_reply_bytes_are_read_or_refused_without_panicking(
        data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)
    ) {
        exercise_replies(&data);
    }

    #[test]
    fn messages_of_printable_pairs_survive_encoding(
        pairs in proptest::collection::vec(("[a-z_-]{1,8}", "[ -~]{0,20}"), 0..6)
    ) {
        let mut m = Message { pairs: vec![("cmd".into(), "kvs-put".into())] };
        for (k, v) in pairs {
            if m.get(&k).is_none() {
                m.pairs.push((k, v));
            }
        }
        let wire = m.encode();
        let n = parse_length(&wire[..6]).expect("length");
        proptest::prop_assert_eq!(n, wire.len() - 6);
        proptest::prop_assert_eq!(parse_body(&wire[6..]).expect("body"), m);
    }
}
