//! Validation of a control request ([`ControlSpec`]) into a [`Control`]:
//! every problem reported with the field it is about, nothing half-applied.

use super::*;

/// One field's problem, as the API reports it (400 naming the field).
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Every problem of a rejected [`ControlSpec`]; nothing of it was applied.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize)]
#[error("invalid control: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct InvalidControl(pub Vec<FieldError>);

/// Limits that validation enforces, relative to `now` (ms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ControlLimits {
    /// The H3 resolution of price cells.
    pub price_resolution: u8,
    /// Reference time: the service's current event time (e.g. wall clock
    /// at the API, the watermark in a replay).
    pub now_ms: i64,
    /// `from` may be at most this far before `now`. Default 24 h.
    pub max_past_ms: i64,
    /// `to` may be at most this far after `now`. Default 90 days.
    pub max_future_ms: i64,
    /// At most this many cells in an area. Default 10,000.
    pub max_cells: usize,
    /// Largest multiplier a control may name. Default 100.
    pub max_multiplier: f64,
}

impl ControlLimits {
    pub fn new(price_resolution: u8, now_ms: i64) -> Self {
        Self {
            price_resolution,
            now_ms,
            max_past_ms: 24 * 3_600_000,
            max_future_ms: 90 * 24 * 3_600_000,
            max_cells: 10_000,
            max_multiplier: 100.0,
        }
    }
}

/// Text fields longer than this are refused (the log is an audit trail,
/// not a document store).
const MAX_TEXT: usize = 1_000;

impl ControlSpec {
    /// The control, or every problem with the request (each naming its
    /// field, e.g. `area.cells[2]`, `multiplier`, `from`).
    pub fn validate(&self, limits: &ControlLimits) -> Result<Control, InvalidControl> {
        let mut errors = Vec::new();
        let mut bad = |field: &str, message: String| {
            errors.push(FieldError {
                field: field.to_owned(),
                message,
            })
        };
        let area = validate_area(&self.area, limits, &mut bad);
        let action = validate_action(self.kind, self.multiplier, limits, &mut bad);
        if self.to <= self.from {
            bad(
                "to",
                format!("must be after from ({}), got {}", self.from, self.to),
            );
        }
        if self.from < limits.now_ms.saturating_sub(limits.max_past_ms) {
            bad(
                "from",
                format!(
                    "more than {} ms before now ({})",
                    limits.max_past_ms, limits.now_ms
                ),
            );
        }
        if self.to > limits.now_ms.saturating_add(limits.max_future_ms) {
            bad(
                "to",
                format!(
                    "more than {} ms after now ({})",
                    limits.max_future_ms, limits.now_ms
                ),
            );
        }
        for (field, text) in [("reason", &self.reason), ("author", &self.author)] {
            if text.trim().is_empty() {
                bad(field, "must not be empty".to_owned());
            } else if text.len() > MAX_TEXT {
                bad(field, format!("at most {MAX_TEXT} bytes"));
            }
        }
        match (area, action) {
            (Some(area), Some(action)) if errors.is_empty() => Ok(Control {
                area,
                action,
                from: self.from,
                to: self.to,
                reason: self.reason.clone(),
                author: self.author.clone(),
            }),
            _ => Err(InvalidControl(errors)),
        }
    }
}

fn validate_area(
    spec: &AreaSpec,
    limits: &ControlLimits,
    bad: &mut impl FnMut(&str, String),
) -> Option<Area> {
    match (&spec.cells, &spec.bbox) {
        (Some(cells), None) => validate_cells(cells, limits, bad).map(Area::Cells),
        (None, Some(bbox)) => validate_bbox(bbox, bad).map(Area::Bbox),
        _ => {
            bad("area", "exactly one of `cells` or `bbox`".to_owned());
            None
        }
    }
}

fn validate_cells(
    cells: &[String],
    limits: &ControlLimits,
    bad: &mut impl FnMut(&str, String),
) -> Option<Vec<CellId>> {
    if cells.is_empty() {
        bad("area.cells", "must not be empty".to_owned());
        return None;
    }
    if cells.len() > limits.max_cells {
        bad("area.cells", format!("at most {} cells", limits.max_cells));
        return None;
    }
    let res = Resolution::try_from(limits.price_resolution).ok()?;
    let mut out = Vec::with_capacity(cells.len());
    let mut ok = true;
    for (i, s) in cells.iter().enumerate() {
        match s.parse::<CellIndex>() {
            Ok(c) => {
                // A finer cell stands for its price cell: a price cell has
                // one price.
                let c = if c.resolution() > res {
                    c.parent(res).unwrap_or(c)
                } else {
                    c
                };
                out.extend(CellId::from_u64(u64::from(c)));
            }
            Err(_) => {
                bad(
                    &format!("area.cells[{i}]"),
                    format!("not an H3 cell index: {s:?}"),
                );
                ok = false;
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    ok.then_some(out)
}

fn validate_bbox(bbox: &[f64], bad: &mut impl FnMut(&str, String)) -> Option<[f64; 4]> {
    let Ok([min_lng, min_lat, max_lng, max_lat]) = <[f64; 4]>::try_from(bbox) else {
        bad(
            "area.bbox",
            format!(
                "must be [minLng, minLat, maxLng, maxLat], got {} numbers",
                bbox.len()
            ),
        );
        return None;
    };
    let lng = |v: f64| v.is_finite() && (-180.0..=180.0).contains(&v);
    let lat = |v: f64| v.is_finite() && (-90.0..=90.0).contains(&v);
    if !(lng(min_lng) && lng(max_lng) && lat(min_lat) && lat(max_lat)) {
        bad("area.bbox", "coordinates out of range".to_owned());
        return None;
    }
    if min_lng >= max_lng || min_lat >= max_lat {
        bad(
            "area.bbox",
            "empty: min must be below max (no antimeridian crossing)".to_owned(),
        );
        return None;
    }
    Some([min_lng, min_lat, max_lng, max_lat])
}

fn validate_action(
    kind: ControlKind,
    multiplier: Option<f64>,
    limits: &ControlLimits,
    bad: &mut impl FnMut(&str, String),
) -> Option<Action> {
    let m = match (kind, multiplier) {
        (ControlKind::Freeze, None) => return Some(Action::Freeze),
        (ControlKind::Freeze, Some(_)) => {
            bad("multiplier", "must be absent for a freeze".to_owned());
            return None;
        }
        (_, None) => {
            bad("multiplier", "required for cap, floor and force".to_owned());
            return None;
        }
        (_, Some(v)) => v,
    };
    let q = quantum(m).filter(|_| m <= limits.max_multiplier);
    let Some(q) = q else {
        bad(
            "multiplier",
            format!(
                "must be a multiple of 0.05 in [1.0, {}], got {m}",
                limits.max_multiplier
            ),
        );
        return None;
    };
    let m = Multiplier::from_twentieths(q);
    Some(match kind {
        ControlKind::Cap => Action::Cap(m),
        ControlKind::Floor => Action::Floor(m),
        ControlKind::Force => Action::Force(m),
        ControlKind::Freeze => Action::Freeze,
    })
}
