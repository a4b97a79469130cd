//! The city's geometry: a local flat projection, its H3 cells and regions,
//! the region → partition map, dispatch neighbourhoods and the demand
//! hotspots.

use h3o::{CellIndex, LatLng, Resolution};
use primetime_core::{CellId, Geo, RegionId};

use crate::rng::Rng;

/// H3 resolution of price cells (the core's default).
pub(crate) const CELL_RES: Resolution = Resolution::Eight;
/// H3 resolution of regions, the Kafka key (the core's default).
const REGION_RES: u8 = 5;
/// Dispatch radius, in grid steps: a request is served from its own cell or
/// one at most this far.
const DISPATCH_K: u32 = 2;

/// Kilometres per degree of latitude (mean). The projection is a local
/// equirectangular one, accurate to well under 1 % over 50 km.
const KM_PER_DEG_LAT: f64 = 110.574;
/// Kilometres per degree of longitude at the equator.
const KM_PER_DEG_LNG_EQUATOR: f64 = 111.320;

/// A place where demand (and therefore drivers) concentrates: a Gaussian of
/// `sigma_km` around (`x`, `y`) km from the centre.
#[derive(Debug, Clone, Copy)]
struct Hotspot {
    x: f64,
    y: f64,
    sigma_km: f64,
    weight: f64,
}

/// San Francisco's hotspots as (east km, north km, sigma km, weight) from
/// the default centre (37.7749, -122.4194); placed relative to whatever
/// centre is configured. Weights are shares of all demand; what they leave
/// (plus the weight of hotspots outside a small city) is uniform background.
const HOTSPOTS: [(&str, f64, f64, f64, f64); 7] = [
    ("financial district", 1.72, 2.18, 0.8, 0.22),
    ("soma", 1.21, 0.40, 0.9, 0.14),
    ("mission", 0.40, -1.66, 0.9, 0.14),
    ("marina", -1.53, 2.86, 0.8, 0.08),
    ("haight / castro", -2.53, -0.63, 0.9, 0.08),
    ("richmond", -5.33, 0.56, 1.2, 0.04),
    ("sunset", -6.56, -2.42, 1.5, 0.04),
];

/// Direction (east, north) from the centre towards SFO, 17 km south-south-
/// east: the "airport side" hotspot sits on it, 1.5 km inside the radius.
const AIRPORT_DIRECTION: (f64, f64) = (3.55, -16.98);
const AIRPORT_SIGMA_KM: f64 = 1.5;
const AIRPORT_WEIGHT: f64 = 0.06;

/// Attempts at drawing a point inside the city before falling back to the
/// centre. A draw lands inside with probability well above 1/2 for any
/// valid config, so the fallback practically never happens.
const MAX_DRAWS: usize = 32;

/// A point of the city: position in km from the centre and its city cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Spot {
    pub x: f64,
    pub y: f64,
    /// Index into [`City::cells`].
    pub slot: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct City {
    lat0: f64,
    lng0: f64,
    km_per_deg_lng: f64,
    radius_km: f64,
    /// City cells (H3 res 8, as `u64`), sorted: those whose centre is
    /// within the radius, plus the centre's own cell.
    cells: Vec<u64>,
    /// Partition of each city cell.
    cell_partition: Vec<u32>,
    /// Centre of each city cell in km and the square of a radius around
    /// it that lies inside the cell for sure (see [`City::locate`]).
    cell_disk: Vec<(f64, f64, f64)>,
    /// Regions (res-5 parents of the city cells), sorted by index.
    regions: Vec<RegionId>,
    partitions: u32,
    /// Dispatch neighbourhood of city cell `i`:
    /// `ring[ring_start[i]..ring_start[i + 1]]`, city cells only, as
    /// `(slot, grid distance)` sorted by distance, then cell index.
    ring_start: Vec<u32>,
    ring: Vec<(u32, u8)>,
    hotspots: Vec<Hotspot>,
    geo: Geo,
}

impl City {
    /// Builds the city; `None` when the H3 resolutions are unusable (they
    /// are constants, so never) or the centre is not a valid coordinate.
    pub fn new(lat0: f64, lng0: f64, radius_km: f64, partitions: u32) -> Option<Self> {
        let geo = Geo::new(u8::from(CELL_RES), REGION_RES).ok()?;
        let km_per_deg_lng = KM_PER_DEG_LNG_EQUATOR * lat0.to_radians().cos();
        let mut city = Self {
            lat0,
            lng0,
            km_per_deg_lng,
            radius_km,
            cells: Vec::new(),
            cell_partition: Vec::new(),
            cell_disk: Vec::new(),
            regions: Vec::new(),
            partitions: partitions.max(1),
            ring_start: Vec::new(),
            ring: Vec::new(),
            hotspots: Vec::new(),
            geo,
        };
        let center = LatLng::new(lat0, lng0).ok()?.to_cell(CELL_RES);
        city.cells = city.covering_cells(center);
        city.index_cells();
        city.build_rings();
        city.hotspots = hotspots(radius_km);
        Some(city)
    }

    /// The res-8 cells whose centres lie within the radius (and the centre's
    /// own cell), sorted: a cell's index in this list is its slot.
    fn covering_cells(&self, center: CellIndex) -> Vec<u64> {
        let radius_km = self.radius_km;
        // Res-8 cells are ≥ 0.6 km apart centre to centre, so this disk
        // covers the whole radius.
        let k = (radius_km / 0.6).ceil() as u32 + 2;
        let mut cells: Vec<u64> = center
            .grid_disk_safe(k)
            .filter(|c| {
                let ll = LatLng::from(*c);
                let (x, y) = self.to_km(ll.lat(), ll.lng());
                x * x + y * y <= radius_km * radius_km
            })
            .map(u64::from)
            .collect();
        cells.push(u64::from(center));
        cells.sort_unstable();
        cells.dedup();
        cells
    }

    /// Each cell's region and partition, the sorted regions, and each cell's
    /// inner disk, from `self.cells`.
    fn index_cells(&mut self) {
        let mut regions: Vec<RegionId> = self
            .cells
            .iter()
            .filter_map(|c| CellId::from_u64(*c))
            .map(|c| self.geo.region_of(c))
            .collect();
        regions.sort_unstable();
        regions.dedup();
        self.regions = regions;
        self.cell_partition = self
            .cells
            .iter()
            .map(|c| self.region_partition(*c))
            .collect();

        self.cell_disk = self.cells.iter().map(|c| self.inner_disk(*c)).collect();
    }

    /// Each cell's dispatch ring: the city's cells within `DISPATCH_K`,
    /// nearest first, flattened into `ring` with `ring_start` offsets.
    fn build_rings(&mut self) {
        self.ring_start.push(0);
        let mut near: Vec<(u8, u64, u32)> = Vec::new();
        for &c in &self.cells {
            near.clear();
            let Ok(cell) = CellIndex::try_from(c) else {
                continue;
            };
            for (n, d) in cell.grid_disk_distances_safe(DISPATCH_K) {
                if let Some(slot) = self.slot(u64::from(n)) {
                    near.push((d as u8, u64::from(n), slot));
                }
            }
            near.sort_unstable();
            self.ring.extend(near.iter().map(|(d, _, s)| (*s, *d)));
            self.ring_start.push(self.ring.len() as u32);
        }
    }

    pub fn regions(&self) -> &[RegionId] {
        &self.regions
    }

    pub fn cell_count(&self) -> usize {
        self.cells.len()
    }

    pub fn cell(&self, slot: u32) -> u64 {
        self.cells[slot as usize]
    }

    /// Position in km (east, north) of a coordinate.
    pub fn to_km(&self, lat: f64, lng: f64) -> (f64, f64) {
        (
            (lng - self.lng0) * self.km_per_deg_lng,
            (lat - self.lat0) * KM_PER_DEG_LAT,
        )
    }

    /// Coordinate (lat, lng) of a position in km, longitude wrapped into
    /// [-180, 180).
    #[inline]
    pub fn to_lat_lng(&self, x: f64, y: f64) -> (f64, f64) {
        let lat = self.lat0 + y / KM_PER_DEG_LAT;
        let mut lng = self.lng0 + x / self.km_per_deg_lng;
        if lng >= 180.0 {
            lng -= 360.0;
        } else if lng < -180.0 {
            lng += 360.0;
        }
        (lat, lng)
    }

    /// The res-8 cell of a position; `None` only for non-finite input.
    #[inline]
    pub fn cell_at(&self, x: f64, y: f64) -> Option<CellIndex> {
        let (lat, lng) = self.to_lat_lng(x, y);
        LatLng::new(lat, lng).ok().map(|ll| ll.to_cell(CELL_RES))
    }

    /// The cell's centre in km and the squared radius of a disk around it
    /// inside the cell: 98 % of the distance to the nearest edge line of
    /// its boundary polygon. Cells are convex and their edges straight to
    /// within millimetres at this scale (great-circle arcs of < 1 km; the
    /// projection is linear in lat/lng), far inside the 2 % (≈ 8 m) margin.
    fn inner_disk(&self, cell: u64) -> (f64, f64, f64) {
        let Ok(index) = CellIndex::try_from(cell) else {
            return (0.0, 0.0, 0.0);
        };
        let ll = LatLng::from(index);
        let (cx, cy) = self.to_km(ll.lat(), ll.lng());
        let vertices: Vec<(f64, f64)> = index
            .boundary()
            .iter()
            .map(|v| self.to_km(v.lat(), v.lng()))
            .collect();
        let mut r = f64::INFINITY;
        for (i, &(ax, ay)) in vertices.iter().enumerate() {
            let (bx, by) = vertices[(i + 1) % vertices.len()];
            let len = ((bx - ax) * (bx - ax) + (by - ay) * (by - ay)).sqrt();
            if len > 0.0 {
                let dist = ((bx - ax) * (ay - cy) - (ax - cx) * (by - ay)).abs() / len;
                r = r.min(dist);
            }
        }
        let r = if r.is_finite() { 0.98 * r } else { 0.0 };
        (cx, cy, r * r)
    }

    /// [`Self::spot`] with a hint: the city cell the position was in
    /// recently. A position still inside the hint's inner disk is in that
    /// cell without asking H3, which is most of a driver's pings (H3
    /// indexing is the simulator's largest cost otherwise).
    #[inline]
    pub fn locate(&self, x: f64, y: f64, hint: u32) -> Option<Spot> {
        if let Some(&(cx, cy, r2)) = self.cell_disk.get(hint as usize) {
            if (x - cx) * (x - cx) + (y - cy) * (y - cy) < r2 {
                return Some(Spot { x, y, slot: hint });
            }
        }
        self.spot(x, y)
    }

    /// Centre of a city cell in km, and the squared radius of a disk
    /// around it that lies inside the cell.
    #[inline]
    pub fn cell_disk(&self, slot: u32) -> (f64, f64, f64) {
        self.cell_disk[slot as usize]
    }

    /// The slot of a city cell.
    #[inline]
    pub fn slot(&self, cell: u64) -> Option<u32> {
        self.cells.binary_search(&cell).ok().map(|i| i as u32)
    }

    /// The city cell of a position, if it is in the city.
    #[inline]
    pub fn spot(&self, x: f64, y: f64) -> Option<Spot> {
        let cell = self.cell_at(x, y)?;
        let slot = self.slot(u64::from(cell))?;
        Some(Spot { x, y, slot })
    }

    #[inline]
    pub fn partition_of_slot(&self, slot: u32) -> u32 {
        self.cell_partition[slot as usize]
    }

    /// Partition of any res-8 cell: the city's map for city cells (the
    /// common case), else by its region's rank; a region outside the city
    /// (a trip cutting a corner of the boundary) is hashed.
    pub fn partition_of_cell(&self, cell: u64) -> u32 {
        match self.slot(cell) {
            Some(slot) => self.partition_of_slot(slot),
            None => self.region_partition(cell),
        }
    }

    fn region_partition(&self, cell: u64) -> u32 {
        let Some(cell) = CellId::from_u64(cell) else {
            return 0;
        };
        let region = self.geo.region_of(cell);
        match self.regions.binary_search(&region) {
            Ok(i) => (i % self.partitions as usize) as u32,
            Err(_) => {
                let mixed = region.as_u64().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
                (mixed % u64::from(self.partitions)) as u32
            }
        }
    }

    /// City cells within the dispatch radius of `slot`, nearest first.
    pub fn dispatch_ring(&self, slot: u32) -> &[(u32, u8)] {
        let i = slot as usize;
        &self.ring[self.ring_start[i] as usize..self.ring_start[i + 1] as usize]
    }

    /// A point drawn uniformly from the disk of the city, inside a city
    /// cell.
    pub fn uniform_spot(&self, rng: &mut Rng) -> Spot {
        for _ in 0..MAX_DRAWS {
            let r = self.radius_km * rng.uniform().sqrt();
            let theta = std::f64::consts::TAU * rng.uniform();
            if let Some(s) = self.spot(r * theta.cos(), r * theta.sin()) {
                return s;
            }
        }
        self.center_spot()
    }

    /// A point drawn from the demand mixture: a hotspot by weight with
    /// Gaussian spread, or the uniform background.
    pub fn demand_spot(&self, rng: &mut Rng) -> Spot {
        for _ in 0..MAX_DRAWS {
            let mut u = rng.uniform();
            let mut chosen = None;
            for h in &self.hotspots {
                if u < h.weight {
                    chosen = Some(h);
                    break;
                }
                u -= h.weight;
            }
            let Some(h) = chosen else {
                return self.uniform_spot(rng);
            };
            let x = h.x + h.sigma_km * rng.normal();
            let y = h.y + h.sigma_km * rng.normal();
            if x * x + y * y <= self.radius_km * self.radius_km {
                if let Some(s) = self.spot(x, y) {
                    return s;
                }
            }
        }
        self.center_spot()
    }

    /// A point of the given city cell near (`x`, `y`) with spread
    /// `sigma_km`; (`x`, `y`) itself when draws keep leaving the cell.
    pub fn spot_in_cell(&self, x: f64, y: f64, slot: u32, sigma_km: f64, rng: &mut Rng) -> Spot {
        for _ in 0..8 {
            let px = x + sigma_km * rng.normal();
            let py = y + sigma_km * rng.normal();
            if let Some(s) = self.spot(px, py) {
                if s.slot == slot {
                    return s;
                }
            }
        }
        Spot { x, y, slot }
    }

    /// The centre of the city (always in a city cell by construction).
    pub fn center_spot(&self) -> Spot {
        let slot = self
            .cell_at(0.0, 0.0)
            .and_then(|c| self.slot(u64::from(c)))
            .unwrap_or(0);
        Spot {
            x: 0.0,
            y: 0.0,
            slot,
        }
    }
}

/// The fixed hotspots inside the radius, then the airport near the edge of a
/// city of 3 km or more.
fn hotspots(radius_km: f64) -> Vec<Hotspot> {
    let mut hotspots = Vec::new();
    for (_, x, y, sigma_km, weight) in HOTSPOTS {
        if x * x + y * y <= radius_km * radius_km {
            hotspots.push(Hotspot {
                x,
                y,
                sigma_km,
                weight,
            });
        }
    }
    if radius_km >= 3.0 {
        let (dx, dy) = AIRPORT_DIRECTION;
        let norm = (dx * dx + dy * dy).sqrt();
        let r = radius_km - 1.5;
        hotspots.push(Hotspot {
            x: dx / norm * r,
            y: dy / norm * r,
            sigma_km: AIRPORT_SIGMA_KM,
            weight: AIRPORT_WEIGHT,
        });
    }
    hotspots
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sf() -> City {
        City::new(37.7749, -122.4194, 12.0, 4).expect("valid city")
    }

    #[test]
    fn default_city_has_enough_regions_for_its_partitions() {
        let city = sf();
        // San Francisco's 12 km disk: 596 res-8 cells in 5 res-5 regions of
        // 262, 130, 13, 42 and 149 cells; partition 0 gets regions 0 and 4.
        assert_eq!(city.cell_count(), 596);
        assert_eq!(city.regions().len(), 5);
        let mut per_partition = [0usize; 4];
        for slot in 0..city.cell_count() as u32 {
            per_partition[city.partition_of_slot(slot) as usize] += 1;
        }
        assert_eq!(per_partition, [411, 130, 13, 42]);
    }

    #[test]
    fn projection_round_trips() {
        let city = sf();
        let (x, y) = city.to_km(37.7786, -122.3893);
        let (lat, lng) = city.to_lat_lng(x, y);
        assert!((lat - 37.7786).abs() < 1e-12 && (lng + 122.3893).abs() < 1e-12);
        assert!(
            (x - 2.65).abs() < 0.01 && (y - 0.41).abs() < 0.01,
            "{x} {y}"
        );
    }

    #[test]
    fn dispatch_ring_starts_with_the_cell_itself() {
        let city = sf();
        let slot = city.center_spot().slot;
        let ring = city.dispatch_ring(slot);
        assert_eq!(ring[0], (slot, 0));
        assert_eq!(ring.len(), 19);
        assert!(ring.windows(2).all(|w| w[0].1 <= w[1].1));
    }

    #[test]
    fn inner_disks_are_inside_their_cells() {
        let city = sf();
        let mut rng = Rng::new(2, 2);
        let mut hits = 0;
        for slot in 0..city.cell_count() as u32 {
            let (cx, cy, r2) = city.cell_disk[slot as usize];
            assert!(r2 > 0.35 * 0.35, "{r2}");
            for _ in 0..200 {
                // Points up to 1.2 radii out: inside the disk they must be
                // in the cell, outside it H3 decides.
                let r = 1.2 * r2.sqrt() * rng.uniform().sqrt();
                let a = std::f64::consts::TAU * rng.uniform();
                let (x, y) = (cx + r * a.cos(), cy + r * a.sin());
                let exact = city.spot(x, y);
                assert_eq!(city.locate(x, y, slot), exact);
                if r * r < r2 {
                    assert_eq!(exact.map(|s| s.slot), Some(slot));
                    hits += 1;
                }
            }
        }
        assert!(hits > 50_000);
    }

    #[test]
    fn drawn_spots_are_in_the_city() {
        let city = sf();
        let mut rng = Rng::new(1, 1);
        for _ in 0..2_000 {
            for s in [city.uniform_spot(&mut rng), city.demand_spot(&mut rng)] {
                let cell = city.cell_at(s.x, s.y).expect("finite");
                assert_eq!(city.slot(u64::from(cell)), Some(s.slot));
            }
        }
    }
}
