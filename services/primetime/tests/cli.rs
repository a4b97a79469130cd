//! The binary's commands: `simulate` → `replay` is byte-identical twice
//! and equal across shard counts; invalid configuration lists every
//! problem and exits 64.

use std::process::Command;

fn primetime() -> Command {
    Command::new(env!("CARGO_BIN_EXE_primetime"))
}

#[test]
fn simulate_then_replay_twice_is_byte_identical() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("events.log");
    let status = primetime()
        .args(["simulate", "--out"])
        .arg(&log)
        .args([
            "--minutes",
            "6",
            "--seed",
            "11",
            "--drivers",
            "600",
            "--noise",
            "0.01",
        ])
        .status()
        .expect("run simulate");
    assert!(status.success());
    let mut outputs = Vec::new();
    for shards in ["1", "3", "3"] {
        let out = dir
            .path()
            .join(format!("decisions-{}.jsonl", outputs.len()));
        let output = primetime()
            .args(["replay", "--input"])
            .arg(&log)
            .arg("--out")
            .arg(&out)
            .args(["--shards", shards])
            .output()
            .expect("run replay");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("replayed") && stderr.contains("events/s"),
            "{stderr}"
        );
        outputs.push(std::fs::read(&out).expect("read decisions"));
    }
    assert!(!outputs[0].is_empty(), "the replay must publish decisions");
    assert_eq!(
        outputs[1], outputs[2],
        "same log, same config: byte-identical"
    );
    assert_eq!(
        outputs[0], outputs[1],
        "shard count must not change the output"
    );
    let first = String::from_utf8_lossy(&outputs[0]);
    let line: serde_json::Value =
        serde_json::from_str(first.lines().next().expect("a line")).expect("json line");
    for key in ["cell", "tick", "multiplier", "model_version", "explanation"] {
        assert!(line.get(key).is_some(), "{key} missing in {line}");
    }
}

#[test]
fn invalid_configuration_lists_every_problem_and_exits_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "mailbox = 0\n[core]\nbucket_ms = -5\n").expect("write");
    let output = primetime()
        .arg("--config")
        .arg(&file)
        .args(["--http-addr", "not-an-address", "--sim-speed", "fast"])
        .env("PRIMETIME_SHARDS", "0")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needle in [
        "sim_speed",
        "http_addr",
        "shards",
        "mailbox",
        "core.bucket_ms",
    ] {
        assert!(
            stderr.contains(needle),
            "{needle} not reported in:\n{stderr}"
        );
    }

    std::fs::write(&file, "mail_box = 1\n").expect("write");
    let output = primetime()
        .arg("--config")
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown field"));

    let output = primetime()
        .args(["replay", "--bogus"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(64));
}

#[test]
fn replay_of_a_missing_or_corrupt_log_fails_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.jsonl");
    let output = primetime()
        .args(["replay", "--input", "/nonexistent.log", "--out"])
        .arg(&out)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent.log"));

    let corrupt = dir.path().join("corrupt.log");
    std::fs::write(
        &corrupt,
        [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ],
    )
    .expect("write");
    let output = primetime()
        .args(["replay", "--input"])
        .arg(&corrupt)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
}
