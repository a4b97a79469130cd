//! `primetime serve` with the embedded default: within 30 s of start the
//! scripted stadium surge is priced above 1.0 over HTTP.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A minimal HTTP/1.1 GET: status and body.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

#[test]
/// 45 s for this (debug) build: it spends ~5 s building the model plan
/// before the first record, and the stadium's cell surges at the second
/// tick after the crowd arrives, one watermark lag (~7 s) after its end; the
/// release binary of the README shows it within ~30 s.
fn embedded_default_prices_the_stadium_surge_within_45_seconds() {
    let port = free_port();
    let started = Instant::now();
    let mut server = Server(
        Command::new(env!("CARGO_BIN_EXE_primetime"))
            .args(["serve", "--http-addr", &format!("127.0.0.1:{port}")])
            // From the repository root, like `cargo run`: the default model
            // path (models/primetime-v1.onnx) resolves.
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .env("PRIMETIME_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start primetime"),
    );
    let path = "/v1/price?lat=37.7786&lng=-122.3893";
    let mut last = None;
    while started.elapsed() < Duration::from_secs(45) {
        if let Some((200, body)) = http_get(port, path) {
            let v: serde_json::Value = serde_json::from_str(body.trim()).expect("json");
            if v["multiplier"].as_f64().is_some_and(|m| m > 1.0) {
                assert_eq!(v["priced"], true);
                assert_eq!(
                    v["model_version"], "primetime-v1",
                    "the default model is used"
                );
                assert_eq!(v["stale"], false);
                eprintln!(
                    "stadium surge at {:.1} s: {v}",
                    started.elapsed().as_secs_f64()
                );
                let (status, _) = http_get(port, "/readyz").expect("readyz");
                assert_eq!(status, 200);
                // Graceful shutdown on SIGTERM: exit status 0, promptly.
                let pid = server.0.id().to_string();
                assert!(
                    Command::new("kill")
                        .args(["-TERM", &pid])
                        .status()
                        .expect("kill")
                        .success()
                );
                let stopping = Instant::now();
                loop {
                    if let Some(status) = server.0.try_wait().expect("wait") {
                        assert!(status.success(), "exit status after SIGTERM: {status}");
                        break;
                    }
                    assert!(
                        stopping.elapsed() < Duration::from_secs(10),
                        "no exit within 10 s of SIGTERM"
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
                return;
            }
            last = Some(v);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("no surge above 1.0 at the stadium within 45 s; last answer: {last:?}");
}
