//! What requests carry, as types: query, path and body parameters with the
//! bounds and patterns their validation enforces. The OpenAPI document is
//! generated from these types, and each pattern here is the one the
//! handler checks, so the document and the validation cannot disagree.

use std::sync::LazyLock;

use actix_web::HttpRequest;
use primetime_core::{CellId, Geo};
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;
use crate::quotes::MAX_TOKEN_LEN;

/// A latitude in [-90, 90] (no exponent, no leading `+`).
const LAT: &str = r"-?(?:90(?:\.0+)?|[1-8]?[0-9](?:\.[0-9]+)?)";
/// A longitude in [-180, 180].
const LNG: &str = r"-?(?:180(?:\.0+)?|(?:1[0-7][0-9]|[1-9]?[0-9])(?:\.[0-9]+)?)";

/// `bbox`: `minLng,minLat,maxLng,maxLat`, each within its range.
pub static BBOX_PATTERN: LazyLock<String> = LazyLock::new(|| format!("^{LNG},{LAT},{LNG},{LAT}$"));

static BBOX_REGEX: LazyLock<Option<regex::Regex>> =
    LazyLock::new(|| regex::Regex::new(&BBOX_PATTERN).ok());

/// Query of `GET /v1/price`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PriceQuery {
    /// Latitude, degrees (WGS 84).
    #[param(minimum = -90, maximum = 90)]
    pub lat: f64,
    /// Longitude, degrees (WGS 84).
    #[param(minimum = -180, maximum = 180)]
    pub lng: f64,
    /// A past time, ms since the Unix epoch: the decision in force then,
    /// from the per-cell history (410 before the retained history, 422
    /// after what this instance knows of the cell). Absent: the current
    /// price.
    #[param(minimum = 0, maximum = 253402300799999_i64)]
    pub at: Option<i64>,
}

/// Latest time accepted in `at`, `from`, `to`: 9999-12-31T23:59:59.999Z.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

impl PriceQuery {
    pub fn from_request(req: &HttpRequest) -> Result<Self, ApiError> {
        let pairs = query_pairs(req)?;
        Ok(Self {
            lat: coordinate("lat", param(&pairs, "lat")?.parse().ok(), 90.0)?,
            lng: coordinate("lng", param(&pairs, "lng")?.parse().ok(), 180.0)?,
            at: optional_time(&pairs, "at")?,
        })
    }
}

/// Query of `GET /v1/cells/{cell}/history`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Start, ms since the Unix epoch: the answer begins with the decision
    /// in force then (410 before the retained history, 422 after what
    /// this instance knows of the cell).
    #[param(minimum = 0, maximum = 253402300799999_i64)]
    pub from: i64,
    /// End (inclusive), ms since the Unix epoch. Default and cap: what
    /// this instance knows of the cell (`known_until_ms`). Before `from`: no changes (an empty
    /// range, not an error).
    #[param(minimum = 0, maximum = 253402300799999_i64)]
    pub to: Option<i64>,
}

impl HistoryQuery {
    pub fn from_request(req: &HttpRequest) -> Result<Self, ApiError> {
        let pairs = query_pairs(req)?;
        let from =
            optional_time(&pairs, "from")?.ok_or_else(|| ApiError::field("from", "is required"))?;
        let to = optional_time(&pairs, "to")?;
        Ok(Self { from, to })
    }
}

/// An optional time parameter: an integer in `0..=MAX_TIME_MS`.
fn optional_time(pairs: &[(String, String)], name: &str) -> Result<Option<i64>, ApiError> {
    let Some((_, raw)) = pairs.iter().find(|(k, _)| k == name) else {
        return Ok(None);
    };
    match raw.parse::<i64>() {
        Ok(v) if (0..=MAX_TIME_MS).contains(&v) && !raw.starts_with('+') => Ok(Some(v)),
        _ => Err(ApiError::field(
            name,
            format!("must be an integer in [0, {MAX_TIME_MS}] (ms since the Unix epoch)"),
        )),
    }
}

/// Query of `GET /v1/cells`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CellsQuery {
    /// `minLng,minLat,maxLng,maxLat` in degrees, with `minLng <= maxLng`
    /// and `minLat <= maxLat` (answered 400 otherwise: a pattern cannot
    /// state it).
    /// (The pattern is [`BBOX_PATTERN`], set by `openapi.rs`.)
    #[param(example = "-122.55,37.65,-122.30,37.85")]
    pub bbox: String,
}

/// A bounding box, validated.
#[derive(Debug, Clone, Copy)]
pub struct BBox {
    pub min_lat: f64,
    pub min_lng: f64,
    pub max_lat: f64,
    pub max_lng: f64,
}

impl CellsQuery {
    pub fn from_request(req: &HttpRequest) -> Result<Self, ApiError> {
        let pairs = query_pairs(req)?;
        Ok(Self {
            bbox: param(&pairs, "bbox")?.to_owned(),
        })
    }

    pub fn bbox(&self) -> Result<BBox, ApiError> {
        let raw = self.bbox.as_str();
        let bad = || {
            ApiError::field(
                "bbox",
                "must be minLng,minLat,maxLng,maxLat with min <= max, in degrees",
            )
        };
        if !BBOX_REGEX.as_ref().is_some_and(|r| r.is_match(raw)) {
            return Err(bad());
        }
        let parts: Vec<f64> = raw
            .split(',')
            .map(str::parse::<f64>)
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?;
        let [min_lng, min_lat, max_lng, max_lat] = parts[..] else {
            return Err(bad());
        };
        // The pattern bounds each number; the order is checked here.
        if !(min_lat <= max_lat && min_lng <= max_lng) {
            return Err(bad());
        }
        Ok(BBox {
            min_lat,
            min_lng,
            max_lat,
            max_lng,
        })
    }
}

/// Path of `GET /v1/cells/{cell}`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct CellPath {
    /// H3 index (15 hex digits) of a cell at the price resolution. An index
    /// of that shape that names no H3 cell answers 404.
    /// (The pattern is [`CellShape::pattern`], set by `openapi.rs`.)
    #[param(example = "8828308281fffff")]
    pub cell: String,
}

/// What a cell path parameter turned out to be.
pub enum CellParam {
    Cell(CellId),
    /// Matches [`CellShape::pattern`] but is no H3 cell (e.g. base cell > 121).
    NoSuchCell,
}

impl CellPath {
    pub fn from_request(req: &HttpRequest) -> Self {
        Self {
            cell: req.match_info().query("cell").to_owned(),
        }
    }

    pub fn parse(&self, geo: &Geo) -> Result<CellParam, ApiError> {
        let text = self.cell.as_str();
        let shape = CellShape::new(geo.price_resolution());
        if !shape.matches(text) {
            return Err(ApiError::field(
                "cell",
                format!(
                    "must be an H3 index at resolution {} ({})",
                    shape.res,
                    shape.pattern()
                ),
            ));
        }
        Ok(match geo.parse_cell(text) {
            Ok(cell) => CellParam::Cell(cell),
            Err(_) => CellParam::NoSuchCell,
        })
    }
}

/// The hex shape of an H3 cell index at one resolution: `8`, the
/// resolution digit, 13 hex digits whose low `3 × (15 − res)` bits (the
/// unused digits) are all ones.
pub struct CellShape {
    res: u8,
}

impl CellShape {
    pub fn new(res: u8) -> Self {
        Self { res: res.min(15) }
    }

    /// Trailing all-`f` digits, and the bits set in the digit before them.
    fn tail(&self) -> (usize, u32) {
        let ones = 3 * (15 - usize::from(self.res));
        (ones / 4, (ones % 4) as u32)
    }

    /// Hex digits (either case) whose low `bits` bits are set.
    fn partial_digits(bits: u32) -> String {
        let mask = (1u32 << bits) - 1;
        (0..16u32)
            .filter(|v| v & mask == mask)
            .flat_map(|v| {
                let c = char::from_digit(v, 16).unwrap_or('0');
                [c, c.to_ascii_uppercase()]
            })
            .fold(String::new(), |mut s, c| {
                if !s.contains(c) {
                    s.push(c);
                }
                s
            })
    }

    /// The ECMA-262 pattern of the shape (for the OpenAPI document).
    pub fn pattern(&self) -> String {
        let (full, bits) = self.tail();
        let free = 13 - full - usize::from(bits > 0);
        let partial = match bits {
            0 => String::new(),
            b => format!("[{}]", Self::partial_digits(b)),
        };
        format!(
            "^8{:x}[0-9a-fA-F]{{{free}}}{partial}[fF]{{{full}}}$",
            self.res
        )
    }

    /// Whether `s` has the shape [`Self::pattern`] describes.
    pub fn matches(&self, s: &str) -> bool {
        let b = s.as_bytes();
        let (full, bits) = self.tail();
        let digit = |c: u8| char::from(c).to_digit(16);
        let res = char::from_digit(u32::from(self.res), 16).map(|c| c as u8);
        if b.len() != 15 || b[0] != b'8' || Some(b[1]) != res {
            return false;
        }
        let mask = (1u32 << bits) - 1;
        b[2..].iter().enumerate().all(|(i, &c)| match digit(c) {
            None => false,
            Some(v) if i >= 13 - full => v == 15,
            Some(v) if bits > 0 && i == 12 - full => v & mask == mask,
            Some(_) => true,
        })
    }
}

/// Body of `POST /v1/prices`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct BatchRequest {
    /// At most 1,000 locations; the whole body at most `max_body_bytes`
    /// (413 otherwise).
    #[schema(max_items = 1000)]
    pub locations: Vec<Location>,
}

/// One location of a batch.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Location {
    #[schema(minimum = -90, maximum = 90)]
    pub lat: f64,
    #[schema(minimum = -180, maximum = 180)]
    pub lng: f64,
}

/// Longest `rider_id` / `session_id` of a quote request.
pub const MAX_ID_LEN: usize = 128;

/// Body of `POST /v1/quotes`.
#[derive(Debug, ToSchema)]
pub struct QuoteRequest {
    #[schema(minimum = -90, maximum = 90)]
    pub lat: f64,
    #[schema(minimum = -180, maximum = 180)]
    pub lng: f64,
    /// The backend's rider id, written into the quote: 1 to 128 of
    /// `A-Za-z0-9._:@-` (a UUID, a number, an email-like id).
    #[schema(pattern = "^[A-Za-z0-9._:@-]{1,128}$")]
    pub rider_id: Option<String>,
    /// The backend's session id, written into the quote (as `rider_id`).
    #[schema(pattern = "^[A-Za-z0-9._:@-]{1,128}$")]
    pub session_id: Option<String>,
}

impl QuoteRequest {
    /// Parses and validates a body, naming the offending field.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let v = json_object(body)?;
        Ok(Self {
            lat: coordinate("lat", v.get("lat").and_then(Value::as_f64), 90.0)?,
            lng: coordinate("lng", v.get("lng").and_then(Value::as_f64), 180.0)?,
            rider_id: optional_id(&v, "rider_id")?,
            session_id: optional_id(&v, "session_id")?,
        })
    }
}

/// Body of `POST /v1/quotes/redeem`.
#[derive(Debug, ToSchema)]
pub struct RedeemRequest {
    /// The `quote_id` of a quote (a signed token).
    #[schema(min_length = 1, max_length = 1024)]
    pub quote_id: String,
}

impl RedeemRequest {
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let v = json_object(body)?;
        let quote_id = match v.get("quote_id") {
            None | Some(Value::Null) => return Err(ApiError::field("quote_id", "is required")),
            Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= MAX_TOKEN_LEN => {
                s.clone()
            }
            Some(_) => {
                return Err(ApiError::field(
                    "quote_id",
                    format!("must be a string of 1 to {MAX_TOKEN_LEN} characters"),
                ));
            }
        };
        Ok(Self { quote_id })
    }
}

/// A JSON object body.
fn json_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::InvalidBody("must be a JSON object".to_owned())),
        Err(e) => Err(ApiError::InvalidBody(e.to_string())),
    }
}

/// An optional id: 1 to [`MAX_ID_LEN`] of `A-Za-z0-9._:@-`. The alphabet
/// needs no JSON escape, so two ids of full length keep a quote's token
/// well below [`MAX_TOKEN_LEN`].
fn optional_id(
    v: &serde_json::Map<String, Value>,
    field: &str,
) -> Result<Option<String>, ApiError> {
    let ok = |s: &str| {
        (1..=MAX_ID_LEN).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:@-".contains(&b))
    };
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if ok(s) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::field(
            field,
            format!("must be 1 to {MAX_ID_LEN} of A-Za-z0-9._:@-"),
        )),
    }
}

fn query_pairs(req: &HttpRequest) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(req.query_string())
        .map_err(|e| ApiError::Read(format!("query string: {e}")))
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Result<&'a str, ApiError> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| ApiError::field(name, "is required"))
}

pub fn coordinate(field: &str, value: Option<f64>, limit: f64) -> Result<f64, ApiError> {
    coordinate_named(|| field.to_owned(), value, limit)
}

/// As [`coordinate`], naming the field only when the value is bad (batch
/// fields are named by index: no string built per valid location).
pub fn coordinate_named(
    field: impl FnOnce() -> String,
    value: Option<f64>,
    limit: f64,
) -> Result<f64, ApiError> {
    match value {
        Some(v) if v.is_finite() && (-limit..=limit).contains(&v) => Ok(v),
        _ => Err(ApiError::field(
            field(),
            format!("must be a number in [-{limit}, {limit}]"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_shape_matches_its_pattern() {
        let shape = CellShape::new(8);
        assert_eq!(shape.pattern(), "^88[0-9a-fA-F]{7}[13579bBdDfF][fF]{5}$");
        let re = regex::Regex::new(&shape.pattern()).unwrap();
        for s in [
            "8828308281fffff",
            "881fb46621fffff",
            "8828308280fffff",
            "85283083fffffff",
            "8f283082adfffff0000",
            "882830828Dfffff",
            "nope",
            "8828308281ffffe",
            "+828308281fffff",
        ] {
            assert_eq!(shape.matches(s), re.is_match(s), "{s}");
        }
        assert!(shape.matches("8828308281fffff"));
        assert!(!shape.matches("85283083fffffff"));
        for res in 0..=15 {
            let shape = CellShape::new(res);
            let re = regex::Regex::new(&shape.pattern()).unwrap();
            let cell = primetime_core::Geo::new(res.max(1), 0)
                .ok()
                .and_then(|g| g.cell_of(37.7786, -122.3893));
            if let Some(c) = cell.filter(|c| c.resolution() == res) {
                let s = c.to_string();
                assert!(shape.matches(&s) && re.is_match(&s), "{res}: {s}");
            }
        }
    }

    #[test]
    fn bbox_pattern_bounds_each_number() {
        let re = regex::Regex::new(&BBOX_PATTERN).unwrap();
        for ok in [
            "-122.55,37.65,-122.30,37.85",
            "0,0,1,1",
            "-180,-90,180.000,90.0",
        ] {
            assert!(re.is_match(ok), "{ok}");
        }
        for bad in [
            "1,2,3",
            "a,b,c,d",
            "0,0,1,100",
            "0,0,181,1",
            "1e1,0,20,1",
            " 1,0,2,1",
        ] {
            assert!(!re.is_match(bad), "{bad}");
        }
    }
}
