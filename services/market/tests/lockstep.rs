//! The closed loop is a pure function of its inputs: the same run gives
//! the same outcome log, with 1 or 7 engine shards.

use std::path::Path;
use std::sync::Arc;

use primetime_market::{PolicyKind, RunSpec, Scenario, Timeline, run};

const SMALL: Timeline = Timeline {
    warmup_ms: 60_000,
    measure_ms: 240_000,
    cooldown_ms: 60_000,
};

fn spec(policy: PolicyKind, shards: usize) -> RunSpec {
    let mut spec = RunSpec::new(Scenario::Stadium, policy, 3, SMALL);
    spec.shards = shards;
    spec
}

#[test]
fn one_and_seven_shards_give_identical_outcomes() {
    let one = run(&spec(PolicyKind::RatioGuardrails, 1)).expect("runs");
    let seven = run(&spec(PolicyKind::RatioGuardrails, 7)).expect("runs");
    assert!(one.decisions > 0, "the engine priced nothing");
    assert_eq!(one.decisions, seven.decisions);
    assert!(
        one.log == seven.log,
        "outcome logs differ between 1 and 7 shards"
    );
    let surged = one
        .log
        .price_changes
        .iter()
        .any(|c| c.iter().any(|(_, m)| *m > 1.0));
    assert!(surged, "the stadium never surged");
}

#[test]
fn the_model_policy_is_shard_independent_too() {
    // Tests run in the crate's directory.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/primetime-v1.onnx");
    let model = Arc::new(primetime_model::load(&path).expect("the checked-in model loads"));
    let mut a = spec(PolicyKind::Model, 1);
    a.model = Some(Arc::clone(&model));
    let mut b = spec(PolicyKind::Model, 7);
    b.model = Some(model);
    let (a, b) = (run(&a).expect("runs"), run(&b).expect("runs"));
    assert!(a.log == b.log);
    assert_eq!(a.decisions, b.decisions);
}

#[test]
fn prices_change_outcomes() {
    let flat = run(&spec(PolicyKind::Flat, 1)).expect("runs");
    let priced = run(&spec(PolicyKind::RatioGuardrails, 1)).expect("runs");
    assert_ne!(flat.log.rides, priced.log.rides);
    // Same riders arrive (common random numbers).
    let sessions = |l: &primetime_sim::MarketLog| l.minutes.iter().map(|m| m.sessions).sum::<u64>();
    assert_eq!(sessions(&flat.log), sessions(&priced.log));
}
