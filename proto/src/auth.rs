//! The handshake of a multi-machine job's rendezvous: the head (`boadrun`) listens on TCP, the agents
//! it started on other machines (over `ssh`, given a [`Secret`] on their stdin) connect to it, and
//! each side proves to the other that it knows the secret without sending it (mutual
//! challenge-response with HMAC-SHA256).
//!
//! Three fixed-size frames, all integers big-endian:
//!
//! 1. server hello, [`HELLO_LEN`] bytes: the magic `BOADAUTH`, the version ([`VERSION`], u16), a
//!    fresh 32-byte server nonce `sn`;
//! 2. client answer, [`ANSWER_LEN`] bytes: `sn` echoed, a fresh 32-byte client nonce `cn`, the role
//!    length (u8, at most [`MAX_ROLE`]), the role (e.g. `agent 2`) zero-padded to [`MAX_ROLE`]
//!    bytes, and `HMAC(secret, "boad-auth client" || sn || cn || role)`;
//! 3. server verdict, [`VERDICT_LEN`] bytes: 1 (accepted), `cn` echoed and
//!    `HMAC(secret, "boad-auth server" || cn || sn || role)`; or 0 (refused) and zeros.
//!
//! The server checks the client's proof in constant time and answers with its own proof, which the
//! client checks the same way. The echoed nonces only tell a stale (replayed) answer from a wrong
//! key in the error; what authenticates is the HMAC, over both fresh nonces, with a different label
//! per direction (so a proof cannot be reflected back). Every read is of one fixed-size frame:
//! nothing a peer sends makes either side allocate, or wait for more than the frame it expects.
//! The handshake does no timing of its own: give the stream a read timeout
//! (`set_read_timeout`), and an expired one is [`AuthError::TimedOut`].
//!
//! What it does not do: it proves who is at each end when the connection starts, nothing more.
//! What follows on the stream is neither encrypted nor authenticated, so someone able to inject
//! into or take over the TCP connection after the handshake is not stopped by it.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::io::{self, Read, Write};

/// The first bytes of the server hello.
pub const MAGIC: [u8; 8] = *b"BOADAUTH";
/// The version of the handshake this code speaks.
pub const VERSION: u16 = 1;
/// Bytes of a nonce, a secret and a proof.
pub const NONCE_LEN: usize = 32;
/// The longest role a client may give.
pub const MAX_ROLE: usize = 64;
/// Bytes of the server hello.
pub const HELLO_LEN: usize = MAGIC.len() + 2 + NONCE_LEN;
/// Bytes of the client answer.
pub const ANSWER_LEN: usize = 2 * NONCE_LEN + 1 + MAX_ROLE + NONCE_LEN;
/// Bytes of the server verdict.
pub const VERDICT_LEN: usize = 1 + 2 * NONCE_LEN;

const CLIENT_LABEL: &[u8] = b"boad-auth client";
const SERVER_LABEL: &[u8] = b"boad-auth server";
const ACCEPTED: u8 = 1;
const REFUSED: u8 = 0;

/// The frames, as errors name them.
const HELLO: &str = "server hello";
const ANSWER: &str = "client answer";
const VERDICT: &str = "server verdict";

/// Errors of the handshake and of secrets.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The peer closed the connection in the middle of (or before) a frame.
    #[error("{frame}: connection closed after {got} of {want} bytes")]
    Truncated {
        /// The frame being read.
        frame: &'static str,
        /// Bytes of it received.
        got: usize,
        /// Its size.
        want: usize,
    },
    /// The stream's read timeout expired before the whole frame came.
    #[error("{frame}: timed out after {got} of {want} bytes")]
    TimedOut {
        /// The frame being read.
        frame: &'static str,
        /// Bytes of it received.
        got: usize,
        /// Its size.
        want: usize,
    },
    /// Reading or writing a frame failed.
    #[error("{frame}: {source}")]
    Io {
        /// The frame being read or written.
        frame: &'static str,
        /// Why.
        source: io::Error,
    },
    /// The server hello does not start with [`MAGIC`]: not a boad rendezvous.
    #[error("the peer is not a boad rendezvous (wrong magic in the server hello)")]
    BadMagic,
    /// The server speaks another version of the handshake.
    #[error("the server speaks handshake version {got}, this side version {want}")]
    UnsupportedVersion {
        /// The server's version.
        got: u16,
        /// [`VERSION`].
        want: u16,
    },
    /// A role longer than [`MAX_ROLE`] bytes (given to the client, or announced by one).
    #[error("role of {len} bytes: at most {max}")]
    RoleTooLong {
        /// Its length.
        len: usize,
        /// [`MAX_ROLE`].
        max: usize,
    },
    /// A frame whose fixed fields hold what they cannot (padding, status byte).
    #[error("{frame}: malformed: {reason}")]
    Malformed {
        /// The frame.
        frame: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The client answered another challenge than this server's (a replayed answer).
    #[error("the client's answer is for another challenge (replayed?): refused")]
    StaleAnswer,
    /// The client's proof is wrong: it does not know the secret.
    #[error("the client's proof is wrong (it does not have the job's secret): refused")]
    BadClientProof,
    /// The server refused this client's proof.
    #[error("the server refused our proof (do both sides have the same secret?)")]
    Refused,
    /// The server's verdict is for another client nonce (a replayed verdict).
    #[error("the server's proof is for another challenge (replayed?)")]
    StaleProof,
    /// The server's proof is wrong: it does not know the secret.
    #[error("the server's proof is wrong (it does not have the job's secret)")]
    BadServerProof,
    /// A secret that is not 64 hexadecimal digits.
    #[error("bad secret: {0}")]
    BadSecret(&'static str),
    /// The operating system's random source failed.
    #[error("no random numbers from the operating system: {0}")]
    Random(String),
}

/// The 32-byte secret of a job, shared by the head and its agents. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; NONCE_LEN]);

impl Secret {
    /// A fresh secret from the operating system's random source.
    pub fn random() -> Result<Secret, AuthError> {
        random_bytes().map(Secret)
    }

    /// A secret of these bytes.
    pub fn from_bytes(bytes: [u8; NONCE_LEN]) -> Secret {
        Secret(bytes)
    }

    /// Its bytes.
    pub fn as_bytes(&self) -> &[u8; NONCE_LEN] {
        &self.0
    }

    /// 64 lowercase hexadecimal digits.
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        self.0
            .iter()
            .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]])
            .map(char::from)
            .collect()
    }

    /// Parses exactly 64 hexadecimal digits (either case; no spaces, no newline: trim first).
    pub fn from_hex(text: &str) -> Result<Secret, AuthError> {
        let text = text.as_bytes();
        if text.len() != 2 * NONCE_LEN {
            return Err(AuthError::BadSecret("not 64 hexadecimal digits"));
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(AuthError::BadSecret(
                "a character that is not a hexadecimal digit",
            )),
        };
        let mut out = [0u8; NONCE_LEN];
        for (o, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
            *o = (digit(pair[0])? << 4) | digit(pair[1])?;
        }
        Ok(Secret(out))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

fn random_bytes() -> Result<[u8; NONCE_LEN], AuthError> {
    let mut b = [0u8; NONCE_LEN];
    rand::rngs::OsRng
        .try_fill_bytes(&mut b)
        .map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(b)
}

/// HMAC-SHA256 keyed with the secret, over `label` and `parts`. (The 32-byte key is given
/// zero-padded to SHA-256's 64-byte block, which is what HMAC does with a shorter key, so that
/// keying cannot fail.)
fn mac(secret: &Secret, label: &[u8], parts: &[&[u8]]) -> Hmac<Sha256> {
    let mut key = [0u8; 64];
    key[..NONCE_LEN].copy_from_slice(&secret.0);
    let mut m = <Hmac<Sha256> as KeyInit>::new(&key.into());
    m.update(label);
    for p in parts {
        m.update(p);
    }
    m
}

/// Reads exactly `buf.len()` bytes of `frame`.
fn read_frame<S: Read>(s: &mut S, buf: &mut [u8], frame: &'static str) -> Result<(), AuthError> {
    let want = buf.len();
    let mut got = 0;
    while got < want {
        match s.read(&mut buf[got..]) {
            Ok(0) => return Err(AuthError::Truncated { frame, got, want }),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(AuthError::TimedOut { frame, got, want })
            }
            Err(source) => return Err(AuthError::Io { frame, source }),
        }
    }
    Ok(())
}

fn write_frame<S: Write>(s: &mut S, buf: &[u8], frame: &'static str) -> Result<(), AuthError> {
    s.write_all(buf)
        .and_then(|()| s.flush())
        .map_err(|source| AuthError::Io { frame, source })
}

/// The client side: reads the server hello, answers it as `role` (at most [`MAX_ROLE`] bytes),
/// and checks the server's proof. Ok: both sides know `secret`.
pub fn client_handshake<S: Read + Write>(
    s: &mut S,
    secret: &Secret,
    role: &[u8],
) -> Result<(), AuthError> {
    client_with_nonce(s, secret, role, random_bytes()?)
}

fn client_with_nonce<S: Read + Write>(
    s: &mut S,
    secret: &Secret,
    role: &[u8],
    cn: [u8; NONCE_LEN],
) -> Result<(), AuthError> {
    if role.len() > MAX_ROLE {
        return Err(AuthError::RoleTooLong {
            len: role.len(),
            max: MAX_ROLE,
        });
    }
    let mut hello = [0u8; HELLO_LEN];
    read_frame(s, &mut hello, HELLO)?;
    let (magic, rest) = hello.split_at(MAGIC.len());
    let (version, sn) = rest.split_at(2);
    if magic != MAGIC {
        return Err(AuthError::BadMagic);
    }
    let version = u16::from_be_bytes([version[0], version[1]]);
    if version != VERSION {
        return Err(AuthError::UnsupportedVersion {
            got: version,
            want: VERSION,
        });
    }

    let mut answer = [0u8; ANSWER_LEN];
    let proof = mac(secret, CLIENT_LABEL, &[sn, &cn, role])
        .finalize()
        .into_bytes();
    answer[..NONCE_LEN].copy_from_slice(sn);
    answer[NONCE_LEN..2 * NONCE_LEN].copy_from_slice(&cn);
    // At most MAX_ROLE (64): fits a byte.
    answer[2 * NONCE_LEN] = role.len() as u8;
    answer[2 * NONCE_LEN + 1..][..role.len()].copy_from_slice(role);
    answer[ANSWER_LEN - NONCE_LEN..].copy_from_slice(&proof);
    write_frame(s, &answer, ANSWER)?;

    let mut verdict = [0u8; VERDICT_LEN];
    read_frame(s, &mut verdict, VERDICT)?;
    let (echo, proof) = verdict[1..].split_at(NONCE_LEN);
    match verdict[0] {
        ACCEPTED => {}
        REFUSED if verdict[1..].iter().all(|&b| b == 0) => return Err(AuthError::Refused),
        REFUSED => {
            return Err(AuthError::Malformed {
                frame: VERDICT,
                reason: "a refusal with non-zero bytes",
            })
        }
        _ => {
            return Err(AuthError::Malformed {
                frame: VERDICT,
                reason: "a status that is neither accepted nor refused",
            })
        }
    }
    if echo != cn {
        return Err(AuthError::StaleProof);
    }
    mac(secret, SERVER_LABEL, &[&cn, sn, role])
        .verify_slice(proof)
        .map_err(|_| AuthError::BadServerProof)
}

/// The server side: sends the hello, checks the client's answer and, if right, sends its own
/// proof. Returns the role the client gave (at most [`MAX_ROLE`] bytes; only its proof is checked,
/// not what it says). On a wrong answer the client is told it was refused (best effort) before the
/// error is returned.
pub fn server_handshake<S: Read + Write>(s: &mut S, secret: &Secret) -> Result<Vec<u8>, AuthError> {
    server_with_nonce(s, secret, random_bytes()?)
}

fn server_with_nonce<S: Read + Write>(
    s: &mut S,
    secret: &Secret,
    sn: [u8; NONCE_LEN],
) -> Result<Vec<u8>, AuthError> {
    let mut hello = [0u8; HELLO_LEN];
    hello[..MAGIC.len()].copy_from_slice(&MAGIC);
    hello[MAGIC.len()..MAGIC.len() + 2].copy_from_slice(&VERSION.to_be_bytes());
    hello[MAGIC.len() + 2..].copy_from_slice(&sn);
    write_frame(s, &hello, HELLO)?;

    let mut answer = [0u8; ANSWER_LEN];
    read_frame(s, &mut answer, ANSWER)?;
    match check_answer(&answer, secret, &sn) {
        Ok((cn, role)) => {
            let proof = mac(secret, SERVER_LABEL, &[&cn, &sn, &role])
                .finalize()
                .into_bytes();
            let mut verdict = [0u8; VERDICT_LEN];
            verdict[0] = ACCEPTED;
            verdict[1..1 + NONCE_LEN].copy_from_slice(&cn);
            verdict[1 + NONCE_LEN..].copy_from_slice(&proof);
            write_frame(s, &verdict, VERDICT)?;
            Ok(role)
        }
        Err(e) => {
            let mut verdict = [0u8; VERDICT_LEN];
            verdict[0] = REFUSED;
            // Best effort: the error to report is the client's.
            let _ = write_frame(s, &verdict, VERDICT);
            Err(e)
        }
    }
}

/// The client nonce and role of a right answer to `sn`.
fn check_answer(
    answer: &[u8; ANSWER_LEN],
    secret: &Secret,
    sn: &[u8; NONCE_LEN],
) -> Result<([u8; NONCE_LEN], Vec<u8>), AuthError> {
    let (echo, rest) = answer.split_at(NONCE_LEN);
    let (cn, rest) = rest.split_at(NONCE_LEN);
    let (len, rest) = rest.split_at(1);
    let (role_field, proof) = rest.split_at(MAX_ROLE);
    let len = usize::from(len[0]);
    if len > MAX_ROLE {
        return Err(AuthError::RoleTooLong { len, max: MAX_ROLE });
    }
    let (role, padding) = role_field.split_at(len);
    if padding.iter().any(|&b| b != 0) {
        return Err(AuthError::Malformed {
            frame: ANSWER,
            reason: "non-zero bytes after the role",
        });
    }
    if echo != sn {
        return Err(AuthError::StaleAnswer);
    }
    mac(secret, CLIENT_LABEL, &[sn, cn, role])
        .verify_slice(proof)
        .map_err(|_| AuthError::BadClientProof)?;
    let mut c = [0u8; NONCE_LEN];
    c.copy_from_slice(cn);
    Ok((c, role.to_vec()))
}

/// A stream that reads from a script and records what is written (the fuzz and property-test
/// harnesses' peer).
#[cfg(any(test, feature = "fuzzing"))]
struct Scripted<'a> {
    input: &'a [u8],
    output: Vec<u8>,
}

#[cfg(any(test, feature = "fuzzing"))]
impl Read for Scripted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

#[cfg(any(test, feature = "fuzzing"))]
impl Write for Scripted<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        assert!(self.output.len() + buf.len() <= HELLO_LEN + ANSWER_LEN + VERDICT_LEN);
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The secret and nonces of the harnesses (fixed, so that a fuzzer's input means the same on every
/// run; `fuzz/make-seeds.py` writes answers with them).
#[cfg(any(test, feature = "fuzzing"))]
const HARNESS_SECRET: [u8; NONCE_LEN] = [0x5e; NONCE_LEN];
#[cfg(any(test, feature = "fuzzing"))]
const HARNESS_NONCE: [u8; NONCE_LEN] = [0x17; NONCE_LEN];

/// Fuzz and property-test harness: `data` as what a client sends to the server. The server writes
/// its hello, then a verdict exactly when a whole answer came; it accepts only an answer whose proof
/// is right for its nonce, and then returns the role of that answer.
#[cfg(any(test, feature = "fuzzing"))]
pub fn exercise_server(data: &[u8]) {
    let secret = Secret(HARNESS_SECRET);
    let mut s = Scripted {
        input: data,
        output: Vec::new(),
    };
    let r = server_with_nonce(&mut s, &secret, HARNESS_NONCE);
    let whole = data.len() >= ANSWER_LEN;
    assert_eq!(
        s.output.len(),
        HELLO_LEN + if whole { VERDICT_LEN } else { 0 }
    );
    match r {
        Ok(role) => {
            let a = &data[..ANSWER_LEN];
            assert_eq!(&a[..NONCE_LEN], &HARNESS_NONCE);
            assert_eq!(usize::from(a[2 * NONCE_LEN]), role.len());
            assert!(role.len() <= MAX_ROLE);
            let m = mac(
                &secret,
                CLIENT_LABEL,
                &[&HARNESS_NONCE, &a[NONCE_LEN..2 * NONCE_LEN], &role],
            );
            assert!(m.verify_slice(&a[ANSWER_LEN - NONCE_LEN..]).is_ok());
            assert_eq!(s.output[HELLO_LEN], ACCEPTED);
        }
        Err(AuthError::Truncated { got, want, .. }) => {
            assert!(!whole && got == data.len() && want == ANSWER_LEN)
        }
        Err(e) => {
            assert!(whole, "{e}");
            assert_eq!(s.output[HELLO_LEN..], [0u8; VERDICT_LEN]);
        }
    }
}

/// Fuzz and property-test harness: `data` as what a server sends to the client. The client answers
/// only a hello of the right magic and version, and succeeds only on a verdict whose proof is right.
#[cfg(any(test, feature = "fuzzing"))]
pub fn exercise_client(data: &[u8]) {
    let secret = Secret(HARNESS_SECRET);
    let mut s = Scripted {
        input: data,
        output: Vec::new(),
    };
    let role = b"agent 1";
    let r = client_with_nonce(&mut s, &secret, role, HARNESS_NONCE);
    let hello_ok = data.len() >= HELLO_LEN
        && data[..MAGIC.len()] == MAGIC
        && data[MAGIC.len()..MAGIC.len() + 2] == VERSION.to_be_bytes();
    assert_eq!(s.output.len(), if hello_ok { ANSWER_LEN } else { 0 });
    if r.is_ok() {
        let v = &data[HELLO_LEN..HELLO_LEN + VERDICT_LEN];
        let sn = &data[MAGIC.len() + 2..HELLO_LEN];
        assert_eq!(v[0], ACCEPTED);
        let m = mac(&secret, SERVER_LABEL, &[&HARNESS_NONCE, sn, role]);
        assert!(m.verify_slice(&v[1 + NONCE_LEN..]).is_ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::net::UnixStream;
    use std::thread;
    use std::time::Duration;

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn pair() -> (UnixStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        for s in [&a, &b] {
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            s.set_write_timeout(Some(TIMEOUT)).unwrap();
        }
        (a, b)
    }

    /// Runs the server on one end (in a thread) and the client on the other.
    fn run(
        server_secret: &Secret,
        client_secret: &Secret,
        role: &[u8],
    ) -> (Result<Vec<u8>, AuthError>, Result<(), AuthError>) {
        let (mut a, mut b) = pair();
        let ss = server_secret.clone();
        let server = thread::spawn(move || server_handshake(&mut a, &ss));
        let c = client_handshake(&mut b, client_secret, role);
        (server.join().unwrap(), c)
    }

    #[test]
    fn hmac_with_padded_key_is_hmac_with_the_key() {
        let secret = Secret::random().unwrap();
        let mut direct = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
        direct.update(b"labelpart");
        let ours = mac(&secret, b"label", &[b"part"]).finalize().into_bytes();
        assert!(direct.verify_slice(&ours).is_ok());
    }

    #[test]
    fn secret_hex_and_debug() {
        let s = Secret::random().unwrap();
        let hex = s.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(Secret::from_hex(&hex).unwrap(), s);
        assert_eq!(Secret::from_hex(&hex.to_uppercase()).unwrap(), s);
        let dbg = format!("{s:?}");
        assert!(!dbg.contains(&hex[..8]), "{dbg}");
        assert_ne!(Secret::random().unwrap(), s);
        let known = Secret::from_bytes([0xab; 32]);
        assert_eq!(known.to_hex(), "ab".repeat(32));
        for bad in [
            "",
            &hex[..63],
            &format!("{hex}0"),
            &format!("{}g", &hex[..63]),
            &format!("{hex}\n"),
        ] {
            assert!(
                matches!(Secret::from_hex(bad), Err(AuthError::BadSecret(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn right_secret_passes_both_ways() {
        let s = Secret::random().unwrap();
        let (server, client) = run(&s, &s, b"agent 2");
        assert_eq!(server.unwrap(), b"agent 2");
        client.unwrap();
        let role = [b'x'; MAX_ROLE];
        let (server, client) = run(&s, &s, &role);
        assert_eq!(server.unwrap(), role);
        client.unwrap();
        let (server, client) = run(&s, &s, b"");
        assert_eq!(server.unwrap(), b"");
        client.unwrap();
    }

    #[test]
    fn wrong_secret_refused() {
        let s = Secret::random().unwrap();
        let other = Secret::random().unwrap();
        let (server, client) = run(&s, &other, b"agent 1");
        assert!(
            matches!(server, Err(AuthError::BadClientProof)),
            "{server:?}"
        );
        assert!(matches!(client, Err(AuthError::Refused)), "{client:?}");
    }

    /// A fake server that does not know the secret: it answers with a verdict it made up.
    #[test]
    fn server_with_wrong_secret_refused_by_client() {
        let s = Secret::random().unwrap();
        let (mut a, mut b) = pair();
        let server = thread::spawn(move || {
            let mut hello = [0u8; HELLO_LEN];
            hello[..8].copy_from_slice(&MAGIC);
            hello[8..10].copy_from_slice(&VERSION.to_be_bytes());
            hello[10..].copy_from_slice(&[3; 32]);
            a.write_all(&hello).unwrap();
            let mut answer = [0u8; ANSWER_LEN];
            a.read_exact(&mut answer).unwrap();
            // Accept, echo the client nonce, prove with the wrong key.
            let wrong = Secret::from_bytes([9; 32]);
            let role = &answer[65..65 + usize::from(answer[64])];
            let proof = mac(&wrong, SERVER_LABEL, &[&answer[32..64], &[3; 32], role])
                .finalize()
                .into_bytes();
            let mut v = [0u8; VERDICT_LEN];
            v[0] = ACCEPTED;
            v[1..33].copy_from_slice(&answer[32..64]);
            v[33..].copy_from_slice(&proof);
            a.write_all(&v).unwrap();
        });
        let r = client_handshake(&mut b, &s, b"agent 3");
        assert!(matches!(r, Err(AuthError::BadServerProof)), "{r:?}");
        server.join().unwrap();

        // The real server with another secret: refused both ways.
        let other = Secret::random().unwrap();
        let (server, client) = run(&other, &s, b"agent 3");
        assert!(server.is_err() && client.is_err());
    }

    /// Records a right answer, then replays it to a new server (a new nonce).
    #[test]
    fn replayed_answer_refused() {
        let s = Secret::random().unwrap();
        let mut recorded = Vec::new();
        {
            let (mut a, mut b) = pair();
            let ss = s.clone();
            let client = thread::spawn(move || client_handshake(&mut b, &ss, b"agent 1"));
            // A man in the middle's view: play server with the real server's logic, keep the answer.
            let mut tap = Tap {
                inner: &mut a,
                read: &mut recorded,
            };
            assert_eq!(server_handshake(&mut tap, &s).unwrap(), b"agent 1");
            client.join().unwrap().unwrap();
        }
        assert_eq!(recorded.len(), ANSWER_LEN);
        let (mut a, mut b) = pair();
        let ss = s.clone();
        let server = thread::spawn(move || server_handshake(&mut a, &ss));
        let mut hello = [0u8; HELLO_LEN];
        b.read_exact(&mut hello).unwrap();
        b.write_all(&recorded).unwrap();
        let r = server.join().unwrap();
        assert!(matches!(r, Err(AuthError::StaleAnswer)), "{r:?}");
        let mut v = [0u8; VERDICT_LEN];
        b.read_exact(&mut v).unwrap();
        assert_eq!(v, [0u8; VERDICT_LEN]);

        // The replay with the new nonce put in the echo: the proof is then wrong.
        let (mut a, mut b) = pair();
        let ss = s.clone();
        let server = thread::spawn(move || server_handshake(&mut a, &ss));
        b.read_exact(&mut hello).unwrap();
        recorded[..NONCE_LEN].copy_from_slice(&hello[10..]);
        b.write_all(&recorded).unwrap();
        let r = server.join().unwrap();
        assert!(matches!(r, Err(AuthError::BadClientProof)), "{r:?}");
    }

    /// A replayed server verdict (from another handshake) refused by the client.
    #[test]
    fn replayed_verdict_refused() {
        let s = Secret::random().unwrap();
        let mut transcript = Vec::new();
        let mut c = Scripted {
            input: &[],
            output: Vec::new(),
        };
        // A first, real handshake through the harness stream: server side with a fixed nonce.
        {
            let (mut a, mut b) = pair();
            let ss = s.clone();
            let server = thread::spawn(move || server_with_nonce(&mut a, &ss, [4; 32]));
            let mut tap = Tap {
                inner: &mut b,
                read: &mut transcript,
            };
            client_handshake(&mut tap, &s, b"r").unwrap();
            server.join().unwrap().unwrap();
        }
        // Same hello, same verdict, to a client with a fresh nonce.
        c.input = &transcript;
        let r = client_handshake(&mut c, &s, b"r");
        assert!(matches!(r, Err(AuthError::StaleProof)), "{r:?}");
    }

    /// Records what is read from the inner stream.
    struct Tap<'a, S> {
        inner: &'a mut S,
        read: &'a mut Vec<u8>,
    }
    impl<S: Read> Read for Tap<'_, S> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read.extend_from_slice(&buf[..n]);
            Ok(n)
        }
    }
    impl<S: Write> Write for Tap<'_, S> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.inner.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.inner.flush()
        }
    }

    #[test]
    fn oversized_role() {
        let s = Secret::random().unwrap();
        let (mut a, _b) = pair();
        let r = client_handshake(&mut a, &s, &[0; MAX_ROLE + 1]);
        assert!(
            matches!(r, Err(AuthError::RoleTooLong { len: 65, max: 64 })),
            "{r:?}"
        );
        // Announced by a client.
        let mut answer = [0u8; ANSWER_LEN];
        answer[..NONCE_LEN].copy_from_slice(&HARNESS_NONCE);
        answer[2 * NONCE_LEN] = 200;
        let mut input = Scripted {
            input: &answer,
            output: Vec::new(),
        };
        let r = server_with_nonce(&mut input, &Secret(HARNESS_SECRET), HARNESS_NONCE);
        assert!(
            matches!(r, Err(AuthError::RoleTooLong { len: 200, max: 64 })),
            "{r:?}"
        );
        // Role bytes past its announced length.
        answer[2 * NONCE_LEN] = 1;
        answer[2 * NONCE_LEN + 3] = b'x';
        let mut input = Scripted {
            input: &answer,
            output: Vec::new(),
        };
        let r = server_with_nonce(&mut input, &Secret(HARNESS_SECRET), HARNESS_NONCE);
        assert!(matches!(r, Err(AuthError::Malformed { .. })), "{r:?}");
    }

    #[test]
    fn wrong_magic_or_version() {
        let s = Secret::random().unwrap();
        let mut hello = [0u8; HELLO_LEN];
        hello[..8].copy_from_slice(b"SSH-2.0-");
        let mut c = Scripted {
            input: &hello,
            output: Vec::new(),
        };
        assert!(matches!(
            client_handshake(&mut c, &s, b"a"),
            Err(AuthError::BadMagic)
        ));
        assert!(c.output.is_empty());
        hello[..8].copy_from_slice(&MAGIC);
        hello[8..10].copy_from_slice(&2u16.to_be_bytes());
        let mut c = Scripted {
            input: &hello,
            output: Vec::new(),
        };
        let r = client_handshake(&mut c, &s, b"a");
        assert!(
            matches!(r, Err(AuthError::UnsupportedVersion { got: 2, want: 1 })),
            "{r:?}"
        );
        let msg = r.unwrap_err().to_string();
        assert!(
            msg.contains("version 2") && msg.contains("version 1"),
            "{msg}"
        );
    }

    #[test]
    fn truncated_input_either_side() {
        let s = Secret::random().unwrap();
        // The server gets a part of an answer, then the client hangs up.
        for cut in [0, 1, NONCE_LEN, ANSWER_LEN - 1] {
            let (mut a, mut b) = pair();
            let ss = s.clone();
            let server = thread::spawn(move || server_handshake(&mut a, &ss));
            let mut hello = [0u8; HELLO_LEN];
            b.read_exact(&mut hello).unwrap();
            b.write_all(&vec![7u8; cut]).unwrap();
            drop(b);
            let r = server.join().unwrap();
            assert!(
                matches!(r, Err(AuthError::Truncated { got, want: ANSWER_LEN, .. }) if got == cut),
                "{cut}: {r:?}"
            );
        }
        // The client gets a part of the hello or of the verdict.
        for cut in [0, 5, HELLO_LEN - 1, HELLO_LEN + 10] {
            let (mut a, mut b) = pair();
            let ss = s.clone();
            let client = thread::spawn(move || client_handshake(&mut b, &ss, b"agent"));
            let mut hello = [0u8; HELLO_LEN];
            hello[..8].copy_from_slice(&MAGIC);
            hello[8..10].copy_from_slice(&VERSION.to_be_bytes());
            let mut sent = hello.to_vec();
            sent.extend_from_slice(&[ACCEPTED; 20]);
            a.write_all(&sent[..cut]).unwrap();
            if cut > HELLO_LEN {
                let mut answer = [0u8; ANSWER_LEN];
                a.read_exact(&mut answer).unwrap();
            }
            drop(a);
            let r = client.join().unwrap();
            let (frame, got) = if cut > HELLO_LEN {
                (VERDICT, cut - HELLO_LEN)
            } else {
                (HELLO, cut)
            };
            assert!(
                matches!(r, Err(AuthError::Truncated { frame: f, got: g, .. }) if f == frame && g == got),
                "{cut}: {r:?}"
            );
        }
    }

    /// A silent peer: the read timeout ends the wait, on both sides.
    #[test]
    fn silent_peer_times_out() {
        let s = Secret::random().unwrap();
        let (mut a, b) = pair();
        a.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let r = server_handshake(&mut a, &s);
        assert!(
            matches!(
                r,
                Err(AuthError::TimedOut {
                    frame: ANSWER,
                    got: 0,
                    ..
                })
            ),
            "{r:?}"
        );
        drop(b);
        let (_a, mut b) = pair();
        b.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let r = client_handshake(&mut b, &s, b"x");
        assert!(
            matches!(r, Err(AuthError::TimedOut { frame: HELLO, .. })),
            "{r:?}"
        );
    }

    #[test]
    fn over_tcp() {
        let s = Secret::random().unwrap();
        let other = Secret::random().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let ss = s.clone();
        // Three connections: right secret, wrong secret, a client that sends garbage and hangs up.
        let server = thread::spawn(move || {
            let mut results = Vec::new();
            for _ in 0..3 {
                let (mut c, _) = listener.accept().unwrap();
                c.set_read_timeout(Some(TIMEOUT)).unwrap();
                results.push(server_handshake(&mut c, &ss));
            }
            results
        });
        let connect = || {
            let c = TcpStream::connect(addr).unwrap();
            c.set_read_timeout(Some(TIMEOUT)).unwrap();
            c
        };
        client_handshake(&mut connect(), &s, b"agent 0").unwrap();
        let r = client_handshake(&mut connect(), &other, b"agent 1");
        assert!(matches!(r, Err(AuthError::Refused)), "{r:?}");
        {
            let mut c = connect();
            // (Read the hello first: closing with unread data would reset the connection.)
            let mut hello = [0u8; HELLO_LEN];
            c.read_exact(&mut hello).unwrap();
            c.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        }
        let results = server.join().unwrap();
        assert_eq!(results[0].as_ref().unwrap(), b"agent 0");
        assert!(matches!(results[1], Err(AuthError::BadClientProof)));
        assert!(
            matches!(results[2], Err(AuthError::Truncated { .. })),
            "{:?}",
            results[2]
        );
    }

    #[test]
    fn harness_accepts_a_right_answer() {
        // What make-seeds.py writes: the right answer to the harness's nonce.
        let cn = [0x21; NONCE_LEN];
        let role = b"agent 7";
        let secret = Secret(HARNESS_SECRET);
        let mut a = Vec::new();
        a.extend_from_slice(&HARNESS_NONCE);
        a.extend_from_slice(&cn);
        a.push(role.len() as u8);
        let mut field = [0u8; MAX_ROLE];
        field[..role.len()].copy_from_slice(role);
        a.extend_from_slice(&field);
        a.extend_from_slice(
            &mac(&secret, CLIENT_LABEL, &[&HARNESS_NONCE, &cn, role])
                .finalize()
                .into_bytes(),
        );
        let mut s = Scripted {
            input: &a,
            output: Vec::new(),
        };
        assert_eq!(
            server_with_nonce(&mut s, &secret, HARNESS_NONCE).unwrap(),
            role
        );
        exercise_server(&a);
        // The fuzz target's seed is that answer.
        assert_eq!(
            a,
            include_bytes!("../../fuzz/seeds/auth_server/right-answer")
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_to_server(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            exercise_server(&data);
        }

        #[test]
        fn arbitrary_bytes_to_client(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            exercise_client(&data);
        }

        /// A valid hello followed by garbage: the client answers once and then refuses.
        #[test]
        fn garbage_verdict_to_client(tail in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut data = MAGIC.to_vec();
            data.extend_from_slice(&VERSION.to_be_bytes());
            data.extend_from_slice(&[1; NONCE_LEN]);
            data.extend_from_slice(&tail);
            exercise_client(&data);
            let mut s = Scripted { input: &data, output: Vec::new() };
            prop_assert!(client_handshake(&mut s, &Secret(HARNESS_SECRET), b"x").is_err());
        }
    }
}
