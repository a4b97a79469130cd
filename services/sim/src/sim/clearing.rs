//! What the simulator knows of its own market, for the model's target and
//! the closed loop's oracle: expected demand per cell, the idle supply in
//! reach, and the multiplier at which the two clear.

use primetime_core::CellId;

use super::{
    CLEARING_HORIZON_MIN, DEMAND_ELASTICITY, REQUEST_PROBABILITY, SHARE_SAMPLES, SHARE_STREAM,
    STADIUM_REQUEST_PROBABILITY, Simulator,
};
use crate::demand::stadium_released;
use crate::rng::Rng;

impl Simulator {
    /// Expected ride requests per minute in the cell at `t_ms` at price
    /// 1.0 (before elasticity): baseline sessions × time of day × request
    /// probability × the cell's demand share, plus the stadium's release
    /// rate there.
    pub fn expected_requests_per_min(&self, cell: CellId, t_ms: i64) -> f64 {
        let Some(slot) = self.city.slot(cell.as_u64()) else {
            return 0.0;
        };
        let share = self
            .demand_share
            .get_or_init(|| self.measure_demand_share())[slot as usize];
        let mut per_min = self.config.demand_per_s
            * 60.0
            * self.tod.factor(t_ms)
            * self.peak_factor(t_ms)
            * REQUEST_PROBABILITY
            * share;
        if let Some(st) = &self.stadium {
            if st.cell == cell {
                let elapsed = t_ms - st.start_ms;
                let released = |e: i64| stadium_released(st.riders, st.duration_ms, e) as f64;
                per_min += (released(elapsed + 30_000) - released(elapsed - 30_000))
                    * STADIUM_REQUEST_PROBABILITY;
            }
        }
        per_min
    }

    /// Available drivers as the market sees them for `cell`: those in the
    /// cell plus half of those in its k-ring 1 (dispatch reaches
    /// neighbours, at a longer pickup), as of the drivers' last pings.
    pub fn available_supply(&self, cell: CellId) -> f64 {
        let Some(slot) = self.city.slot(cell.as_u64()) else {
            return 0.0;
        };
        let own = self.available[slot as usize].len() as f64;
        let ring: usize = self
            .city
            .dispatch_ring(slot)
            .iter()
            .filter(|(_, d)| *d == 1)
            .map(|(s, _)| self.available[*s as usize].len())
            .sum();
        own + 0.5 * ring as f64
    }

    /// The market-clearing multiplier of `cell` now (at [`Self::now_ms`]):
    /// the price `m` at which price-elastic expected demand over the
    /// clearing horizon, `D · m^-ε` with `D` = expected requests per minute
    /// × [`CLEARING_HORIZON_MIN`] and `ε` = [`DEMAND_ELASTICITY`], meets
    /// the available supply `S`: `m = (D / S)^(1/ε)`, clipped to `[1, cap]`
    /// (`S` floored at 0.5 driver so an empty cell with demand prices at
    /// the cap rather than infinity). The pricing model's training target.
    pub fn clearing_multiplier(&self, cell: CellId, cap: f64) -> f64 {
        self.clearing_multiplier_with(cell, cap, DEMAND_ELASTICITY)
    }

    /// [`Self::clearing_multiplier`] for any elasticity `ε > 0`: the closed
    /// loop's oracle uses the riders' own elasticity
    /// ([`crate::MarketConfig::elasticity`]).
    pub fn clearing_multiplier_with(&self, cell: CellId, cap: f64, elasticity: f64) -> f64 {
        let demand = self.expected_requests_per_min(cell, self.now_ms) * CLEARING_HORIZON_MIN;
        let supply = self.available_supply(cell).max(0.5);
        let m = (demand / supply).powf(1.0 / elasticity);
        if m.is_finite() {
            m.clamp(1.0, cap.max(1.0))
        } else {
            1.0
        }
    }

    pub(super) fn measure_demand_share(&self) -> Vec<f64> {
        // Its own random stream: measuring never changes the simulation.
        let mut rng = Rng::new(self.config.seed, SHARE_STREAM);
        let mut counts = vec![0u32; self.city.cell_count()];
        for _ in 0..SHARE_SAMPLES {
            counts[self.city.demand_spot(&mut rng).slot as usize] += 1;
        }
        counts
            .into_iter()
            .map(|c| f64::from(c) / f64::from(SHARE_SAMPLES))
            .collect()
    }
}
