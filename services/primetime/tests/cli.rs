//! The binary's commands: `simulate` → `replay` is byte-identical twice
//! and equal across shard counts; invalid configuration lists every
//! problem and exits 64.

use std::process::Command;

fn primetime() -> Command {
    Command::new(env!("CARGO_BIN_EXE_primetime"))
}

fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn decisions(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("decisions")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

/// `primetime simulate` into `dir/events.log` with `args`; the log's path.
fn simulated_log(dir: &std::path::Path, args: &[&str]) -> std::path::PathBuf {
    let log = dir.join("events.log");
    let status = primetime()
        .args(["simulate", "--out"])
        .arg(&log)
        .args(args)
        .status()
        .expect("run simulate");
    assert!(status.success(), "simulate failed");
    log
}

#[test]
fn the_model_prices_and_every_broken_model_means_flagged_fallback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = simulated_log(dir.path(), &["--minutes", "4", "--drivers", "600"]);
    let replay = |model: &std::path::Path| {
        let out = dir.path().join("out.jsonl");
        let output = primetime()
            .args(["replay", "--input"])
            .arg(&log)
            .arg("--out")
            .arg(&out)
            .arg("--model")
            .arg(model)
            .output()
            .expect("replay");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        (
            decisions(&out),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    let (good, stderr) = replay(&repo().join("models/primetime-v1.onnx"));
    assert!(!good.is_empty());
    assert!(
        good.iter().all(|d| d["model_version"] == "primetime-v1"),
        "{stderr}"
    );
    assert!(good.iter().all(|d| d["explanation"]["fallback"] == false));
    assert!(!stderr.contains("model unavailable"), "{stderr}");

    let fixtures = repo().join("services/model/tests/fixtures");
    for broken in [
        "missing.onnx",
        "corrupt.onnx",
        "wrong_shape.onnx",
        "badsha.onnx",
        "badorder.onnx",
    ] {
        let (flagged, stderr) = replay(&fixtures.join(broken));
        assert!(!flagged.is_empty(), "{broken}: fallback mode still prices");
        for d in &flagged {
            assert_eq!(d["model_version"], "fallback-formula-v1", "{broken}");
            assert_eq!(d["explanation"]["fallback"], true, "{broken}");
            assert!(
                d["multiplier"]
                    .as_f64()
                    .is_some_and(|m| (1.0..=3.0).contains(&m))
            );
        }
        assert!(
            stderr.contains("model unavailable"),
            "{broken}: the reason is logged:\n{stderr}"
        );
    }

    // A model answering log(prev_multiplier - 2): NaN or -inf while the
    // previous multiplier is at most 2. Those rows fall back, flagged.
    let (nan, _) = replay(&fixtures.join("nan.onnx"));
    let non_finite: Vec<_> = nan
        .iter()
        .filter(|d| d["explanation"]["features"]["prev_multiplier"].as_f64() <= Some(2.0))
        .collect();
    assert!(!non_finite.is_empty());
    for d in non_finite {
        assert_eq!(d["explanation"]["fallback"], true, "{d}");
        assert_eq!(d["explanation"]["raw"], serde_json::Value::Null, "{d}");
        assert_eq!(
            d["explanation"]["guardrails"][0]["guardrail"], "non_finite",
            "{d}"
        );
    }
}

#[test]
fn simulate_then_replay_twice_is_byte_identical() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = simulated_log(
        dir.path(),
        &[
            "--minutes",
            "6",
            "--seed",
            "11",
            "--drivers",
            "600",
            "--noise",
            "0.01",
        ],
    );
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
            .arg("--model")
            .arg(repo().join("models/primetime-v1.onnx"))
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

/// The default model is built into the binary: `replay` with no `--model`,
/// run from a directory that has no `models/`, prices with primetime-v1
/// (not silently with the formula) and equals `--model <the file>`.
#[test]
fn replay_uses_the_embedded_model_from_any_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("events.log");
    let status = primetime()
        .current_dir(dir.path())
        .args(["simulate", "--out", "events.log", "--minutes", "3"])
        .args(["--drivers", "500"])
        .status()
        .expect("simulate");
    assert!(status.success());
    let run = |model: Option<&std::path::Path>, out: &str| {
        let mut cmd = primetime();
        cmd.current_dir(dir.path())
            .args(["replay", "--input", "events.log", "--out", out]);
        if let Some(m) = model {
            cmd.arg("--model").arg(m);
        }
        let output = cmd.output().expect("replay");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stderr}");
        assert!(!stderr.contains("model unavailable"), "{stderr}");
        std::fs::read(dir.path().join(out)).expect("decisions")
    };
    let embedded = run(None, "embedded.jsonl");
    let file = run(Some(&repo().join("models/primetime-v1.onnx")), "file.jsonl");
    assert!(!embedded.is_empty(), "{log:?} priced some cells");
    let parsed = decisions(&dir.path().join("embedded.jsonl"));
    assert!(parsed.iter().all(|d| d["model_version"] == "primetime-v1"));
    assert!(parsed.iter().all(|d| d["explanation"]["fallback"] == false));
    assert_eq!(embedded, file, "embedded and file models decide alike");
}

#[test]
fn replay_with_placement_decides_the_same_and_serve_refuses_it_where_unsupported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = simulated_log(
        dir.path(),
        &["--minutes", "5", "--seed", "5", "--drivers", "800"],
    );
    let replay = |placement: &str| {
        let out = dir.path().join(format!("decisions-{placement}.jsonl"));
        let output = primetime()
            .args(["replay", "--input"])
            .arg(&log)
            .arg("--out")
            .arg(&out)
            .args(["--shards", "3", "--placement", placement])
            .output()
            .expect("run replay");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::read(&out).expect("read decisions")
    };
    let hash = replay("off");
    assert!(!hash.is_empty());
    assert_eq!(hash, replay("1"), "placement must not change a decision");

    // The default embedded city runs a closed loop; Kafka has other
    // instances: both refused before anything starts.
    for args in [
        vec!["--placement", "on"],
        vec!["--placement", "on", "--kafka", "127.0.0.1:1"],
    ] {
        let output = primetime().args(&args).output().expect("run serve");
        assert_eq!(output.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("placement.enabled"), "{stderr}");
    }
    let output = primetime()
        .args(["replay", "--input"])
        .arg(&log)
        .arg("--out")
        .arg(dir.path().join("x.jsonl"))
        .args(["--placement", "sometimes"])
        .output()
        .expect("run replay");
    assert_eq!(output.status.code(), Some(64));
}
