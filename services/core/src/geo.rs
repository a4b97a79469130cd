//! H3 geography: price cells, regions and neighbourhoods.

use std::fmt;
use std::str::FromStr;

use h3o::{CellIndex, LatLng, Resolution};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// An H3 cell at the price resolution (default 8, ~0.74 km²). The `u64` is
/// always a valid H3 cell index: constructors go through `h3o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CellId(u64);

/// An H3 parent cell (default resolution 5, ~250 km²): the unit of Kafka
/// keying, partitioning and shard ownership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionId(u64);

/// A string that is not an H3 cell index of the expected resolution.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid cell {0:?}: expected an H3 cell index in hexadecimal")]
pub struct InvalidCell(pub String);

/// A resolution outside 0..=15, or a region resolution not coarser than the
/// price resolution.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GeoError {
    #[error("resolution {0} is outside 0..=15")]
    Resolution(u8),
    #[error("region resolution {region} must be coarser than price resolution {price}")]
    RegionNotCoarser { price: u8, region: u8 },
}

impl CellId {
    /// The H3 index as an integer.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Rebuilds a cell from its integer index (e.g. from a snapshot).
    pub fn from_u64(value: u64) -> Option<Self> {
        CellIndex::try_from(value).ok().map(|c| Self(u64::from(c)))
    }

    pub fn index(self) -> CellIndex {
        // The invariant of the type: the value came from a valid CellIndex.
        CellIndex::try_from(self.0).expect("CellId always holds a valid H3 index")
    }

    /// The cell's centre as `(lat, lng)` in degrees.
    pub fn center(self) -> (f64, f64) {
        let ll = LatLng::from(self.index());
        (ll.lat(), ll.lng())
    }

    /// The cell's boundary vertices as `(lat, lng)` in degrees (six, or
    /// more for cells distorted by an icosahedron edge).
    pub fn boundary(self) -> Vec<(f64, f64)> {
        self.index()
            .boundary()
            .iter()
            .map(|ll| (ll.lat(), ll.lng()))
            .collect()
    }

    /// The H3 resolution of this cell.
    pub fn resolution(self) -> u8 {
        u8::from(self.index().resolution())
    }
}

impl fmt::Display for CellId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

impl FromStr for CellId {
    type Err = InvalidCell;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CellIndex::from_str(s)
            .map(|c| Self(u64::from(c)))
            .map_err(|_| InvalidCell(s.to_owned()))
    }
}

impl Serialize for CellId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CellId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl RegionId {
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for RegionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// Resolutions in use; converts coordinates to cells and cells to regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geo {
    price: Resolution,
    region: Resolution,
}

impl Geo {
    pub fn new(price_resolution: u8, region_resolution: u8) -> Result<Self, GeoError> {
        let price = Resolution::try_from(price_resolution)
            .map_err(|_| GeoError::Resolution(price_resolution))?;
        let region = Resolution::try_from(region_resolution)
            .map_err(|_| GeoError::Resolution(region_resolution))?;
        if region_resolution >= price_resolution {
            return Err(GeoError::RegionNotCoarser {
                price: price_resolution,
                region: region_resolution,
            });
        }
        Ok(Self { price, region })
    }

    pub fn price_resolution(&self) -> u8 {
        u8::from(self.price)
    }

    /// The price cell containing `(lat, lng)` in degrees, or `None` when a
    /// coordinate is not finite or out of range.
    pub fn cell_of(&self, lat: f64, lng: f64) -> Option<CellId> {
        if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lng) {
            // Also rejects NaN: every comparison with NaN is false.
            return None;
        }
        let ll = LatLng::new(lat, lng).ok()?;
        Some(CellId(u64::from(ll.to_cell(self.price))))
    }

    /// Parses a cell and checks it has the price resolution.
    pub fn parse_cell(&self, s: &str) -> Result<CellId, InvalidCell> {
        let cell: CellId = s.parse()?;
        if cell.index().resolution() != self.price {
            return Err(InvalidCell(s.to_owned()));
        }
        Ok(cell)
    }

    /// The region (H3 parent) owning `cell`.
    pub fn region_of(&self, cell: CellId) -> RegionId {
        let parent = cell
            .index()
            .parent(self.region)
            .expect("region resolution is coarser than price resolution");
        RegionId(u64::from(parent))
    }

    /// The cells at grid distance 1 (six, five around a pentagon), sorted.
    pub fn neighbours(&self, cell: CellId) -> Neighbours {
        let mut out = Neighbours {
            cells: [CellId(0); 6],
            len: 0,
        };
        for n in cell.index().grid_disk_safe(1) {
            let id = u64::from(n);
            if id != cell.0 && out.len < 6 {
                out.cells[out.len as usize] = CellId(id);
                out.len += 1;
            }
        }
        out.cells[..out.len as usize].sort_unstable();
        out
    }
}

/// The k-ring-1 neighbours of a cell, stored inline (no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbours {
    cells: [CellId; 6],
    len: u8,
}

impl Neighbours {
    pub fn as_slice(&self) -> &[CellId] {
        &self.cells[..self.len as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_out_of_range_and_non_finite_coordinates() {
        let geo = Geo::new(8, 5).unwrap();
        for (lat, lng) in [
            (f64::NAN, 0.0),
            (0.0, f64::INFINITY),
            (90.0001, 0.0),
            (-90.0001, 0.0),
            (0.0, 180.0001),
            (0.0, -180.0001),
        ] {
            assert_eq!(geo.cell_of(lat, lng), None, "{lat},{lng}");
        }
        assert!(geo.cell_of(90.0, 180.0).is_some());
        assert!(geo.cell_of(37.7749, -122.4194).is_some());
    }

    #[test]
    fn cell_round_trips_through_text_and_has_six_neighbours() {
        let geo = Geo::new(8, 5).unwrap();
        let cell = geo.cell_of(37.7749, -122.4194).unwrap();
        let text = cell.to_string();
        assert_eq!(geo.parse_cell(&text).unwrap(), cell);
        assert_eq!(geo.neighbours(cell).as_slice().len(), 6);
        assert!(!geo.neighbours(cell).as_slice().contains(&cell));
        assert!(geo.parse_cell("not-a-cell").is_err());
        // A valid cell of another resolution is not a price cell.
        let region = geo.region_of(cell);
        assert!(geo.parse_cell(&region.to_string()).is_err());
    }

    #[test]
    fn region_must_be_coarser() {
        assert!(Geo::new(8, 8).is_err());
        assert!(Geo::new(16, 5).is_err());
    }
}
