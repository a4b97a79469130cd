//! Operator controls (DESIGN §6a, issue 18): caps, freezes, floors and
//! forces over an area and an event-time window, as records of a log —
//! never mutable state. This module owns the control types, their
//! validation, the log ([`ControlSet`]) and the rule that answers, for a
//! tick and a cell, which control effect is in force ([`Effect`]). The
//! guardrail step that applies an effect is in [`crate::policy`].
//!
//! # Rules (the determinism contract)
//!
//! - **Window.** A control applies to every tick `k` whose end
//!   (`(k + 1) * bucket_ms`) lies in `[from, to)`.
//! - **Late controls.** The log stamps every record with `tick`: the first
//!   tick not yet fired where it was appended. An issued control applies
//!   only at ticks `>= tick`; a revocation removes it from `tick` on. Ticks
//!   already fired are never re-priced (decisions are versioned by tick and
//!   already published), so a control whose window opened in the past
//!   starts at the next tick, and the log says which. Replay applies the
//!   recorded ticks, never the time of replay, so it reproduces live
//!   decisions byte for byte. A record whose `tick` has already fired where
//!   it is applied is refused ([`LogError::AlreadyFired`]), never applied
//!   from a later tick: that would silently diverge from the log.
//! - **Overlaps** resolve by kind, independent of the order of the log:
//!   `force` > `freeze` > bounds. Among forces the lowest multiplier wins;
//!   bounds combine the lowest cap and the highest floor, and the cap wins
//!   when a floor is above it (a control protects riders first). Ties name
//!   the lowest control id.
//! - **Area.** A price cell is in a `cells` area when the area holds it or
//!   one of its ancestors; a listed cell finer than the price resolution
//!   stands for its price-resolution parent (a price cell has one price).
//!   A price cell is in a `bbox` area when its centre is (edges included).
//! - Controls only change cells that are priced at a tick (cells with window
//!   state or a multiplier above 1.0): a force over an empty area publishes
//!   nothing.

use std::collections::BTreeMap;
use std::fmt;

use h3o::{CellIndex, Resolution};
use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::geo::CellId;
use crate::policy::Multiplier;
use crate::time::Tick;

/// A control's id: its position in the log's sequence of issued controls
/// (from 1). Assigned by the log, so every replica agrees on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ControlId(pub u64);

impl fmt::Display for ControlId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a control does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlKind {
    /// A maximum multiplier; wins over the step-down limit.
    Cap,
    /// Hold the multiplier in force when the control starts: every tick
    /// keeps the previous tick's multiplier.
    Freeze,
    /// A minimum multiplier, reached at the step-up rate.
    Floor,
    /// A fixed multiplier (integrators' sandboxes, tests), immediately,
    /// without step limits; the market cap still applies.
    Force,
}

/// An area as requested: H3 cells (hexadecimal) or a bbox
/// `[min_lng, min_lat, max_lng, max_lat]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct AreaSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cells: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<Vec<f64>>,
}

/// A control as an operator submits it (the `POST /v1/controls` body);
/// [`ControlSpec::validate`] turns it into a [`Control`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSpec {
    pub area: AreaSpec,
    pub kind: ControlKind,
    /// Required for cap, floor and force; absent for freeze.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<f64>,
    /// Window start, event-time ms (inclusive).
    pub from: i64,
    /// Window end, event-time ms (exclusive).
    pub to: i64,
    pub reason: String,
    pub author: String,
}

/// A validated area: normalised cells (sorted, deduplicated, none finer
/// than the price resolution) or a bbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Area {
    Cells(Vec<CellId>),
    /// `[min_lng, min_lat, max_lng, max_lat]`, degrees.
    Bbox([f64; 4]),
}

/// What a control does, with its multiplier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "multiplier")]
pub enum Action {
    Cap(Multiplier),
    Freeze,
    Floor(Multiplier),
    Force(Multiplier),
}

/// Multipliers in log records are numbers (`1.5`), read back exactly:
/// anything but a multiple of 0.05 at least 1.0 is refused.
impl<'de> Deserialize<'de> for Multiplier {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        quantum(v)
            .map(Multiplier::from_twentieths)
            .ok_or_else(|| serde::de::Error::custom(format!("not a multiple of 0.05 >= 1: {v}")))
    }
}

/// `v` as a whole number of 0.05 steps, if it is one (within float noise)
/// and at least 1.0.
fn quantum(v: f64) -> Option<u32> {
    let q = (v * 20.0).round();
    let exact = v.is_finite() && (v * 20.0 - q).abs() < 1e-6;
    (exact && (20.0..=f64::from(u32::MAX)).contains(&q)).then_some(q as u32)
}

/// A validated control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Control {
    pub area: Area,
    pub action: Action,
    pub from: i64,
    pub to: i64,
    pub reason: String,
    pub author: String,
}

mod validate;

pub use validate::{ControlLimits, FieldError, InvalidControl};

/// A record of the control log. `tick` is the first tick not yet fired
/// where the record was appended (see the module's rules).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "record")]
pub enum ControlRecord {
    Issued {
        id: ControlId,
        control: Control,
        /// The control applies from this tick on (within its window).
        tick: Tick,
        /// When it was recorded (trusted ingest time, ms): audit only,
        /// never read by pricing.
        recorded_at: i64,
    },
    Revoked {
        id: ControlId,
        /// The control no longer applies from this tick on.
        tick: Tick,
        recorded_at: i64,
        author: String,
        reason: String,
    },
}

impl ControlRecord {
    pub fn id(&self) -> ControlId {
        match self {
            Self::Issued { id, .. } | Self::Revoked { id, .. } => *id,
        }
    }

    pub fn tick(&self) -> Tick {
        match self {
            Self::Issued { tick, .. } | Self::Revoked { tick, .. } => *tick,
        }
    }
}

/// Why the log refused a record; the log is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LogError {
    #[error("control {0} was already issued")]
    Duplicate(ControlId),
    #[error("no control {0}")]
    Unknown(ControlId),
    #[error("control {0} was already revoked")]
    AlreadyRevoked(ControlId),
    #[error(
        "record for control {id} starts at tick {tick}, but tick {first_unfired} is the first not yet fired"
    )]
    AlreadyFired {
        id: ControlId,
        tick: i64,
        first_unfired: i64,
    },
    #[error("the window of control {0} ends before the next tick: it would change nothing")]
    Ended(ControlId),
}

/// One control in the set, with the ticks of its records.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub control: Control,
    pub id: ControlId,
    /// First tick it may apply at.
    pub from_tick: Tick,
    /// First tick it no longer applies at, once revoked.
    pub revoked_from: Option<Tick>,
    /// The cells of a `cells` area, by resolution, for lookups.
    index: CellIndexSet,
}

#[derive(Debug, Clone, PartialEq, Default)]
struct CellIndexSet {
    resolutions: Vec<Resolution>,
    cells: FxHashSet<u64>,
}

impl CellIndexSet {
    fn of(area: &Area) -> Self {
        let mut out = Self::default();
        if let Area::Cells(cells) = area {
            for c in cells {
                let idx = c.index();
                out.cells.insert(u64::from(idx));
                if !out.resolutions.contains(&idx.resolution()) {
                    out.resolutions.push(idx.resolution());
                }
            }
            out.resolutions.sort_unstable();
        }
        out
    }
}

impl Entry {
    /// Whether it is in force at `tick` (window, stamp and revocation).
    pub fn in_force(&self, tick: Tick, bucket_ms: i64) -> bool {
        let end = tick.end_ms(bucket_ms);
        tick >= self.from_tick
            && self.revoked_from.is_none_or(|r| tick < r)
            && self.control.from <= end
            && end < self.control.to
    }

    /// Whether price cell `cell` is in its area.
    pub fn covers(&self, cell: CellId) -> bool {
        match &self.control.area {
            Area::Cells(_) => {
                let idx = cell.index();
                self.index.resolutions.iter().any(|&r| {
                    r <= idx.resolution()
                        && idx
                            .parent(r)
                            .is_some_and(|p| self.index.cells.contains(&u64::from(p)))
                })
            }
            Area::Bbox([min_lng, min_lat, max_lng, max_lat]) => {
                let (lat, lng) = cell.center();
                (*min_lng..=*max_lng).contains(&lng) && (*min_lat..=*max_lat).contains(&lat)
            }
        }
    }
}

/// The control effect in force on one cell at one tick, after resolving
/// overlaps (see the module's rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Effect {
    /// The lowest forced multiplier and its control.
    pub force: Option<(Multiplier, ControlId)>,
    /// The freeze with the lowest id.
    pub freeze: Option<ControlId>,
    /// The lowest cap.
    pub cap: Option<(Multiplier, ControlId)>,
    /// The highest floor.
    pub floor: Option<(Multiplier, ControlId)>,
}

impl Effect {
    fn add(&mut self, id: ControlId, action: Action) {
        // Keep the lower (resp. higher) value; on ties the lower id. The
        // result is the same in whatever order controls are added.
        fn keep(
            slot: &mut Option<(Multiplier, ControlId)>,
            new: (Multiplier, ControlId),
            better: fn(Multiplier, Multiplier) -> bool,
        ) {
            match slot {
                Some(old) if !(better(new.0, old.0) || (new.0 == old.0 && new.1 < old.1)) => {}
                _ => *slot = Some(new),
            }
        }
        match action {
            Action::Force(m) => keep(&mut self.force, (m, id), |a, b| a < b),
            Action::Cap(m) => keep(&mut self.cap, (m, id), |a, b| a < b),
            Action::Floor(m) => keep(&mut self.floor, (m, id), |a, b| a > b),
            Action::Freeze => {
                if self.freeze.is_none_or(|old| id < old) {
                    self.freeze = Some(id);
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The controls that decide the value, in the precedence order:
    /// a force alone; else a freeze alone; else the cap and the floor.
    pub fn deciding(&self) -> impl Iterator<Item = ControlId> {
        let (a, b) = match (self.force, self.freeze) {
            (Some((_, id)), _) => (Some(id), None),
            (None, Some(id)) => (Some(id), None),
            (None, None) => (self.cap.map(|c| c.1), self.floor.map(|f| f.1)),
        };
        a.into_iter().chain(b)
    }
}

/// The controls in force at one tick (any cell): a short list, so looking
/// a cell up scans it.
#[derive(Debug, Clone, Default)]
pub struct ActiveControls<'a> {
    entries: Vec<&'a Entry>,
}

impl ActiveControls<'_> {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The effect on `cell`, `None` when no control covers it.
    pub fn effect(&self, cell: CellId) -> Option<Effect> {
        let mut effect = Effect::default();
        for e in &self.entries {
            if e.covers(cell) {
                effect.add(e.id, e.control.action);
            }
        }
        (!effect.is_empty()).then_some(effect)
    }
}

/// The control log and the set of controls it defines. Appending goes
/// through [`Self::issue`]/[`Self::revoke`] (the authority that stamps
/// ticks) or [`Self::apply`] (a replica or a replay applying stamped
/// records); either way a refused record changes nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlSet {
    bucket_ms: i64,
    records: Vec<ControlRecord>,
    entries: BTreeMap<ControlId, Entry>,
}

impl ControlSet {
    /// An empty log for ticks of `bucket_ms`.
    pub fn new(bucket_ms: i64) -> Self {
        Self {
            bucket_ms: bucket_ms.max(1),
            records: Vec::new(),
            entries: BTreeMap::new(),
        }
    }

    /// Every record applied, in log order: the audit trail.
    pub fn records(&self) -> &[ControlRecord] {
        &self.records
    }

    /// Every control ever issued, by id.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    pub fn get(&self, id: ControlId) -> Option<&Entry> {
        self.entries.get(&id)
    }

    /// The id the next issued control gets.
    pub fn next_id(&self) -> ControlId {
        ControlId(self.entries.keys().next_back().map_or(1, |id| id.0 + 1))
    }

    /// Appends a new control, applying from `first_unfired` (the first tick
    /// not yet fired) on; returns its record.
    pub fn issue(
        &mut self,
        control: Control,
        first_unfired: Tick,
        recorded_at: i64,
    ) -> Result<ControlRecord, LogError> {
        let record = ControlRecord::Issued {
            id: self.next_id(),
            control,
            tick: first_unfired,
            recorded_at,
        };
        self.apply(record.clone(), first_unfired)?;
        Ok(record)
    }

    /// Appends the revocation of `id` from `first_unfired` on.
    pub fn revoke(
        &mut self,
        id: ControlId,
        first_unfired: Tick,
        recorded_at: i64,
        author: String,
        reason: String,
    ) -> Result<ControlRecord, LogError> {
        let record = ControlRecord::Revoked {
            id,
            tick: first_unfired,
            recorded_at,
            author,
            reason,
        };
        self.apply(record.clone(), first_unfired)?;
        Ok(record)
    }

    /// Applies a stamped record (a replica following the log, or a replay
    /// before its input: pass the first tick not yet fired there).
    pub fn apply(&mut self, record: ControlRecord, first_unfired: Tick) -> Result<(), LogError> {
        let id = record.id();
        if record.tick() < first_unfired {
            return Err(LogError::AlreadyFired {
                id,
                tick: record.tick().0,
                first_unfired: first_unfired.0,
            });
        }
        match &record {
            ControlRecord::Issued { control, tick, .. } => {
                if self.entries.contains_key(&id) {
                    return Err(LogError::Duplicate(id));
                }
                if control.to <= tick.end_ms(self.bucket_ms) {
                    return Err(LogError::Ended(id));
                }
                let entry = Entry {
                    index: CellIndexSet::of(&control.area),
                    control: control.clone(),
                    id,
                    from_tick: *tick,
                    revoked_from: None,
                };
                self.entries.insert(id, entry);
            }
            ControlRecord::Revoked { tick, .. } => {
                let entry = self.entries.get_mut(&id).ok_or(LogError::Unknown(id))?;
                if entry.revoked_from.is_some() {
                    return Err(LogError::AlreadyRevoked(id));
                }
                entry.revoked_from = Some(*tick);
            }
        }
        self.records.push(record);
        Ok(())
    }

    /// The controls in force at `tick`, for [`ActiveControls::effect`].
    pub fn at(&self, tick: Tick) -> ActiveControls<'_> {
        ActiveControls {
            entries: self
                .entries
                .values()
                .filter(|e| e.in_force(tick, self.bucket_ms))
                .collect(),
        }
    }

    /// The controls in force at the tick whose end is `at_ms` or the first
    /// after it (for `GET /v1/controls?active_at=`).
    pub fn active_at(&self, at_ms: i64) -> Vec<&Entry> {
        let tick = Tick(at_ms.saturating_sub(1).div_euclid(self.bucket_ms));
        self.at(tick).entries
    }
}

#[cfg(test)]
mod tests;
