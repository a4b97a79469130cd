//! Decisions and cell summaries to and from their wire forms: the
//! `PriceUpdate` every price sink publishes and the `CellSummary` instances
//! exchange. One conversion each, so Kafka, Redis and tests agree.

use primetime_core::{CellId, Multiplier, PriceDecision, Summary};

use crate::v1;

/// The `PriceUpdate` of a decision made at the tick ending `tick_end_ms`
/// (the explanation as JSON).
pub fn price_update(d: &PriceDecision, tick_end_ms: i64) -> v1::PriceUpdate {
    v1::PriceUpdate {
        cell: d.cell.to_string(),
        tick: d.tick.0,
        tick_end_ms,
        multiplier: d.multiplier.value(),
        model_version: d.model_version.to_string(),
        // Serialising a plain struct of numbers, flags and strings cannot
        // fail; an empty explanation would be the visible sign if it did.
        explanation: serde_json::to_string(&d.explanation).unwrap_or_default(),
        control_ids: d.explanation.controls.iter().map(|c| c.0).collect(),
    }
}

/// A cell's neighbour summary as exchanged between instances.
pub fn cell_summary(cell: CellId, s: &Summary) -> v1::CellSummary {
    v1::CellSummary {
        cell: cell.as_u64(),
        supply: s.supply,
        requests_5m: s.requests_5m,
        multiplier_twentieths: s.multiplier.twentieths(),
    }
}

/// The summary a `CellSummary` carries; `None` when its cell is not an H3
/// cell (a corrupt or foreign message).
pub fn summary_of(c: &v1::CellSummary) -> Option<(CellId, Summary)> {
    Some((
        CellId::from_u64(c.cell)?,
        Summary {
            supply: c.supply,
            requests_5m: c.requests_5m,
            multiplier: Multiplier::from_twentieths(c.multiplier_twentieths),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_survives_the_round_trip() {
        let cell = CellId::from_u64(0x0882_8308_2adf_ffff).expect("an H3 cell");
        let s = Summary {
            supply: 3,
            requests_5m: 17,
            multiplier: Multiplier::from_twentieths(31),
        };
        assert_eq!(summary_of(&cell_summary(cell, &s)), Some((cell, s)));
        let mut bad = cell_summary(cell, &s);
        bad.cell = 1;
        assert_eq!(summary_of(&bad), None);
    }

    #[test]
    fn an_update_names_the_controls_that_decided_it() {
        use prost::Message as _;
        let cell = CellId::from_u64(0x0882_8308_2adf_ffff).expect("an H3 cell");
        let d = PriceDecision {
            cell,
            tick: primetime_core::Tick(7),
            multiplier: Multiplier::from_twentieths(22),
            model_version: "v".into(),
            explanation: primetime_core::Explanation {
                features: Default::default(),
                raw: 2.0,
                fallback: false,
                previous: Multiplier::ONE,
                guardrails: Vec::new(),
                controls: vec![primetime_core::ControlId(1)],
            },
        };
        let u = price_update(&d, 80_000);
        assert!(
            u.explanation.contains(r#""controls":[1]"#),
            "{}",
            u.explanation
        );
        let back = v1::PriceUpdate::decode(u.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(back.control_ids, [1]);
    }
}
