//! An HTTP/1.1 load generator on one thread: many keep-alive connections
//! on a `mio` event loop, hand-written requests, responses framed by
//! `Content-Length`, one request in flight per connection (no pipelining).
//!
//! Two schedules:
//! - closed loop: every connection sends its next request as soon as the
//!   previous answer is in (the maximum rate at that concurrency);
//! - open loop: requests are due at a constant rate, whatever the answers
//!   do. A due request waits for an idle connection if none is free, and
//!   its latency is counted from when it was *due* (its intended send
//!   time), not from when it was sent: a slow answer cannot hide the
//!   requests it delayed (no coordinated omission, as in wrk2). Due times
//!   are kept by a `timerfd` (nanosecond timer), so the generator neither
//!   spins nor rounds to epoll's milliseconds.
//!
//! The generator shares the machine with the service: it is one thread,
//! so at most one core.

use std::collections::{BTreeMap, VecDeque};
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

/// When requests are sent.
#[derive(Debug, Clone, Copy)]
pub enum Schedule {
    /// Next request on a connection as soon as its answer is in.
    Closed,
    /// Requests due at a constant rate (per second), over all connections.
    Open { rate: f64 },
}

/// What a phase measured.
pub struct PhaseReport {
    /// Answers with status 200.
    pub ok: u64,
    /// Answers with another status, broken connections, unparsable
    /// answers, and requests with no answer by the end of the drain.
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    /// Length of the sending window, seconds.
    pub seconds: f64,
    /// Latency of the 200 answers, microseconds (open loop: from the
    /// intended send time).
    pub latency_us: Histogram<u64>,
    /// Most due requests waiting at once for a free connection (open
    /// loop; more than a few means the connections were too few).
    pub max_waiting: usize,
    /// Worst latency of the requests due in each second of the window,
    /// microseconds (where the slow answers cluster).
    pub worst_by_second: Vec<u64>,
    t0: Instant,
}

impl PhaseReport {
    /// Answers with status 200 per second of the sending window.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.seconds.max(1e-9)
    }

    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1_000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.latency_us.max() as f64 / 1_000.0
    }

    fn error(&mut self, kind: impl Into<String>) {
        self.errors += 1;
        *self.error_kinds.entry(kind.into()).or_default() += 1;
    }
}

/// How long in-flight requests may take after the sending window closes
/// before they count as errors.
const DRAIN: Duration = Duration::from_secs(5);

const TIMER: Token = Token(usize::MAX);

/// Shortest sleep between sending due requests.
const COALESCE: Duration = Duration::from_micros(50);

struct Conn {
    stream: TcpStream,
    /// Intended send time of the request in flight; `None` = idle.
    inflight: Option<Instant>,
    /// Which request is in flight and how much of it is written.
    request: usize,
    written: usize,
    /// Bytes of the answer so far.
    buf: Vec<u8>,
    /// Status and total length of the answer, once its head is in.
    framing: Option<(u16, usize)>,
}

/// An idle connection `c`, registered with `poll` under `Token(c)`.
fn open_conn(poll: &Poll, addr: SocketAddr, c: usize) -> std::io::Result<Conn> {
    let mut stream = connect(addr)?;
    poll.registry().register(
        &mut stream,
        Token(c),
        Interest::READABLE | Interest::WRITABLE,
    )?;
    Ok(Conn {
        stream,
        inflight: None,
        request: 0,
        written: 0,
        buf: Vec::with_capacity(4096),
        framing: None,
    })
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    Ok(TcpStream::from_std(s))
}

/// A one-shot `timerfd` on the monotonic clock (the clock of `Instant`).
struct Timer(OwnedFd);

impl Timer {
    fn new() -> anyhow::Result<Self> {
        // SAFETY: plain syscall; the returned descriptor is checked and then
        // owned by `OwnedFd`.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        anyhow::ensure!(
            fd >= 0,
            "timerfd_create: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Fires once, `after` from now (at least 1 ns: zero would disarm it).
    fn arm(&self, after: Duration) {
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: valid descriptor and a valid, initialised itimerspec.
        unsafe { libc::timerfd_settime(self.0.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
    }

    /// Consumes the expiry count (the descriptor is edge-triggered).
    fn clear(&self) {
        let mut n = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a buffer of 8.
        unsafe { libc::read(self.0.as_raw_fd(), n.as_mut_ptr().cast(), n.len()) };
    }
}

/// Runs one phase: `connections` keep-alive connections to `addr`, the
/// raw HTTP/1.1 `requests` sent in rotation, for `duration`.
pub fn run(
    addr: SocketAddr,
    requests: &[Vec<u8>],
    connections: usize,
    schedule: Schedule,
    duration: Duration,
) -> anyhow::Result<PhaseReport> {
    anyhow::ensure!(!requests.is_empty() && connections > 0, "nothing to send");
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let timer = Timer::new()?;
    poll.registry().register(
        &mut SourceFd(&timer.0.as_raw_fd()),
        TIMER,
        Interest::READABLE,
    )?;
    let mut conns = Vec::with_capacity(connections);
    for i in 0..connections {
        let conn = open_conn(&poll, addr, i).with_context(|| format!("connect to {addr}"))?;
        conns.push(Some(conn));
    }
    let mut report = PhaseReport {
        ok: 0,
        errors: 0,
        error_kinds: BTreeMap::new(),
        seconds: duration.as_secs_f64(),
        latency_us: Histogram::new_with_bounds(1, 120_000_000, 3)?,
        max_waiting: 0,
        worst_by_second: vec![0; duration.as_secs() as usize + 1],
        t0: Instant::now(),
    };
    let mut idle: Vec<usize> = (0..connections).rev().collect();
    let mut pending: VecDeque<Instant> = VecDeque::new();
    let mut next_request = 0usize;
    let mut due_index = 0u64;
    let mut read_buf = vec![0u8; 64 * 1024];
    let t0 = report.t0;
    let end = t0 + duration;
    let give_up = end + DRAIN;
    let due = |i: u64, rate: f64| t0 + Duration::from_secs_f64(i as f64 / rate);
    loop {
        let now = Instant::now();
        // Requests that are due.
        match schedule {
            Schedule::Open { rate } => loop {
                let t = due(due_index, rate);
                if t > now || t >= end {
                    break;
                }
                pending.push_back(t);
                due_index += 1;
            },
            Schedule::Closed => {
                if now < end {
                    pending.extend(std::iter::repeat_n(now, idle.len()));
                }
            }
        }
        while !pending.is_empty() {
            let Some(c) = idle.pop() else { break };
            let Some(intended) = pending.pop_front() else {
                break;
            };
            let Some(conn) = conns[c].as_mut() else {
                continue;
            };
            conn.inflight = Some(intended);
            conn.request = next_request;
            conn.written = 0;
            next_request = (next_request + 1) % requests.len();
            if let Err(e) = write_some(conn, requests) {
                fail(&mut conns, c, &mut idle, &poll, addr, &mut report, &e)?;
            }
        }
        report.max_waiting = report.max_waiting.max(pending.len());
        let busy = conns
            .iter()
            .flatten()
            .filter(|c| c.inflight.is_some())
            .count();
        if now >= end && pending.is_empty() && busy == 0 {
            break;
        }
        if now >= give_up {
            for _ in 0..busy + pending.len() {
                report.error("no answer within 5 s after the end");
            }
            break;
        }
        // Wake for the next due request, the end of the window, or the
        // end of the drain.
        let wake = match schedule {
            Schedule::Open { rate } if now < end => due(due_index, rate).min(end),
            _ if now < end => end,
            _ => give_up,
        };
        // Due requests are sent in groups at most every `COALESCE`: fewer
        // wake-ups for the generator at high rates; the wait counts in
        // their latency.
        timer.arm(wake.saturating_duration_since(Instant::now()).max(COALESCE));
        poll.poll(&mut events, None)?;
        for ev in &events {
            if ev.token() == TIMER {
                timer.clear();
                continue;
            }
            let c = ev.token().0;
            let result = match conns.get_mut(c).and_then(Option::as_mut) {
                Some(conn) => on_event(conn, requests, &mut read_buf, &mut report).map(|done| {
                    if done {
                        idle.push(c);
                    }
                }),
                None => Ok(()),
            };
            if let Err(e) = result {
                fail(&mut conns, c, &mut idle, &poll, addr, &mut report, &e)?;
            }
        }
    }
    Ok(report)
}

/// Writes what the socket takes of the request in flight.
fn write_some(conn: &mut Conn, requests: &[Vec<u8>]) -> std::io::Result<()> {
    let req = &requests[conn.request];
    while conn.inflight.is_some() && conn.written < req.len() {
        match conn.stream.write(&req[conn.written..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => conn.written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads and writes what the socket allows; `true` when an answer completed
/// (the connection is idle again).
fn on_event(
    conn: &mut Conn,
    requests: &[Vec<u8>],
    read_buf: &mut [u8],
    report: &mut PhaseReport,
) -> std::io::Result<bool> {
    write_some(conn, requests)?;
    // Edge-triggered: read until the socket is empty or the answer is
    // complete (nothing else can follow it: one request in flight).
    let len = loop {
        match conn.stream.read(read_buf) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => conn.buf.extend_from_slice(&read_buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if conn.inflight.is_none() {
            // Bytes nobody asked for: drop them.
            conn.buf.clear();
            continue;
        }
        if conn.framing.is_none() {
            conn.framing = match frame(&conn.buf) {
                Ok(f) => f,
                Err(e) => return Err(std::io::Error::new(ErrorKind::InvalidData, e)),
            };
        }
        if let Some((_, len)) = conn.framing {
            if conn.buf.len() >= len {
                break len;
            }
        }
    };
    let (Some(intended), Some((status, _))) = (conn.inflight, conn.framing) else {
        return Ok(false);
    };
    let elapsed = Instant::now().saturating_duration_since(intended);
    if status == 200 {
        report.ok += 1;
        let us = (elapsed.as_micros() as u64).clamp(1, report.latency_us.high());
        let _ = report.latency_us.record(us);
        let second = intended.saturating_duration_since(report.t0).as_secs() as usize;
        if let Some(w) = report.worst_by_second.get_mut(second) {
            *w = (*w).max(us);
        }
    } else {
        report.error(format!("status {status}"));
    }
    conn.buf.drain(..len);
    conn.framing = None;
    conn.inflight = None;
    Ok(true)
}

/// A broken connection: its request is an error; a new connection takes
/// its place (dropped from the pool if that fails).
fn fail(
    conns: &mut [Option<Conn>],
    c: usize,
    idle: &mut Vec<usize>,
    poll: &Poll,
    addr: SocketAddr,
    report: &mut PhaseReport,
    error: &std::io::Error,
) -> anyhow::Result<()> {
    let Some(mut old) = conns[c].take() else {
        return Ok(());
    };
    if old.inflight.is_some() {
        report.error(format!("connection: {}", error.kind()));
    }
    let _ = poll.registry().deregister(&mut old.stream);
    drop(old);
    idle.retain(|&i| i != c);
    if let Ok(conn) = open_conn(poll, addr, c) {
        conns[c] = Some(conn);
        idle.push(c);
    }
    anyhow::ensure!(
        conns.iter().any(Option::is_some),
        "every connection to {addr} failed: {error}"
    );
    Ok(())
}

/// Status and total length (head + body) of an HTTP/1.1 answer whose head
/// is complete in `buf`; `None` while it is not.
fn frame(buf: &[u8]) -> Result<Option<(u16, usize)>, String> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("no status line")?;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked answers are not supported".into());
        }
    }
    let length = length.ok_or("no Content-Length")?;
    Ok(Some((status, head_end + 4 + length)))
}

/// A `GET` request.
pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").into_bytes()
}

/// A `POST` request with a JSON body.
pub fn post_json(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_answers() {
        let a = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-type: x\r\n\r\nhello";
        assert_eq!(frame(a).unwrap(), Some((200, a.len())));
        assert_eq!(frame(&a[..20]).unwrap(), None);
        let b = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(frame(b).unwrap(), Some((413, b.len())));
        assert!(frame(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(frame(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
    }

    /// A tiny keep-alive server on 127.0.0.1 answering every request with
    /// the same 200: the generator completes every request of an open-loop
    /// phase, at the asked rate.
    #[test]
    fn open_loop_against_a_local_server() {
        use std::io::{BufRead as _, BufReader};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut w = stream.try_clone().unwrap();
                    let mut r = BufReader::new(stream);
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                        }
                    }
                });
            }
        });
        let report = run(
            addr,
            &[get("/x")],
            4,
            Schedule::Open { rate: 2_000.0 },
            Duration::from_millis(500),
        )
        .unwrap();
        assert_eq!(report.errors, 0, "{:?}", report.error_kinds);
        assert_eq!(report.ok, 1_000);
        assert!(report.max_ms() < 400.0, "max {} ms", report.max_ms());
    }
}
