//! Incremental snapshot export of a [`Shard`]: the image of the cut is
//! taken a slice of cells at a time between the shard's other work, so a
//! snapshot of millions of cells never blocks the shard for long (issue
//! 19: a cut of 10 M cells took ~0.5 s per shard in one piece).
//!
//! Copy-on-write at cell granularity keeps the image exactly that of the
//! cut: every path that mutates a cell exports it first if it belongs to
//! the cut and is not exported yet ([`Shard::apply`] for one cell;
//! `close_tick`, `commit`, `extract` and `import` for many, so they
//! finish the export first). Cells created after the cut are appended at
//! slots at or above the cut's length and are never part of the image;
//! slots below it do not move while an export runs, since cells are only
//! removed by `commit` and `extract`, which finish it first.

use super::Shard;
use crate::snapshot::CellImage;

/// An export in progress.
#[derive(Debug, Clone, Default)]
pub(super) struct Export {
    /// Number of cells at the cut: slots `0..cut` hold them.
    cut: usize,
    /// The next slot the in-order pass exports.
    next: usize,
    /// One bit per slot below `cut`: exported out of order by a mutation.
    early_bits: Vec<u64>,
    /// Images of the in-order pass, ascending by slot.
    images: Vec<CellImage>,
    /// Images exported out of order, with their slot.
    early: Vec<(usize, CellImage)>,
    /// Set once every cell of the cut is exported.
    done: bool,
}

impl Export {
    fn is_early(&self, slot: usize) -> bool {
        self.early_bits[slot / 64] & (1 << (slot % 64)) != 0
    }

    /// The whole image, in slot order (as [`Shard::export`]).
    fn into_images(self) -> Vec<CellImage> {
        if self.early.is_empty() {
            return self.images;
        }
        let mut early = self.early;
        early.sort_unstable_by_key(|e| e.0);
        let mut out = Vec::with_capacity(self.cut);
        let mut in_order = self.images.into_iter();
        let mut early = early.into_iter().peekable();
        for slot in 0..self.cut {
            match early.peek() {
                Some((s, _)) if *s == slot => out.extend(early.next().map(|e| e.1)),
                _ => out.extend(in_order.next()),
            }
        }
        out
    }
}

impl Shard {
    /// Starts an incremental export of every active cell as of now: the
    /// same image [`Self::export`] would return at this point, built by
    /// [`Self::export_step`]s (and by mutations, which copy a cell before
    /// changing it). A running or unclaimed export is dropped: its cut is
    /// older.
    pub fn begin_export(&mut self) {
        let cut = self.cells.len();
        self.export = Some(Export {
            cut,
            next: 0,
            early_bits: vec![0; cut.div_ceil(64)],
            images: Vec::with_capacity(cut),
            early: Vec::new(),
            done: false,
        });
    }

    /// Exports up to `max_cells` more cells of the running export. Returns
    /// the whole image (slot order at the cut) once the export is complete,
    /// `None` while it is not (or when none runs).
    pub fn export_step(&mut self, max_cells: usize) -> Option<Vec<CellImage>> {
        let mut export = self.export.take()?;
        let end = export.cut.min(export.next.saturating_add(max_cells));
        while export.next < end {
            let slot = export.next;
            if !export.is_early(slot) {
                export.images.push(self.image(slot));
            }
            export.next += 1;
        }
        export.done = export.next >= export.cut;
        if export.done {
            Some(export.into_images())
        } else {
            self.export = Some(export);
            None
        }
    }

    /// Whether an export is running (begun, not yet returned).
    pub fn exporting(&self) -> bool {
        self.export.is_some()
    }

    /// Exports every cell of the running export not exported yet, before a
    /// step that changes many cells; the image waits for the next
    /// [`Self::export_step`].
    pub(super) fn finish_export(&mut self) {
        if let Some(mut export) = self.export.take() {
            if !export.done {
                while export.next < export.cut {
                    let slot = export.next;
                    if !export.is_early(slot) {
                        export.images.push(self.image(slot));
                    }
                    export.next += 1;
                }
                export.done = true;
            }
            self.export = Some(export);
        }
    }

    /// Before the cell in `slot` changes: exports it if it belongs to the
    /// running export's cut and is not exported yet.
    #[inline]
    pub(super) fn before_change(&mut self, slot: usize) {
        let Some(export) = &self.export else {
            return;
        };
        if export.done || slot < export.next || slot >= export.cut || export.is_early(slot) {
            return;
        }
        let image = self.image(slot);
        if let Some(export) = &mut self.export {
            export.early_bits[slot / 64] |= 1 << (slot % 64);
            export.early.push((slot, image));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::{CellId, Geo};
    use crate::record::{DemandKind, DriverStatus, Signal, ValidEvent};
    use crate::time::{EventTime, Tick};
    use crate::window::WindowParams;
    use crate::{DriverId, EventKey};

    fn shard_with_cells() -> (Shard, Vec<CellId>) {
        let geo = Geo::new(8, 5).unwrap();
        let centre = geo.cell_of(37.77, -122.42).unwrap();
        let disk: Vec<CellId> = centre
            .index()
            .grid_disk::<Vec<_>>(8)
            .into_iter()
            .filter_map(|c| CellId::from_u64(u64::from(c)))
            .collect();
        let params = WindowParams {
            bucket_ms: 10_000,
            supply_buckets: 6,
            short_buckets: 6,
            long_buckets: 30,
        };
        let mut shard = Shard::new(geo, params);
        // The outer ring stays inactive: cells created after the cut.
        for (i, &cell) in disk.iter().enumerate().take(disk.len() - 48) {
            shard.apply(&event(cell, i as u64, (i % 3) as i64 * 10_000));
        }
        shard.close_tick(Tick(0));
        let mut rows = Vec::new();
        shard.feature_rows(|_| None, &mut rows);
        shard.commit(Tick(0), rows.iter().map(|r| (r.cell, r.prev)));
        (shard, disk)
    }

    fn event(cell: CellId, n: u64, t: i64) -> ValidEvent {
        let signal = if n % 2 == 0 {
            Signal::Driver {
                driver: DriverId(n),
                status: DriverStatus::Available,
            }
        } else {
            Signal::Demand(DemandKind::RideRequest)
        };
        ValidEvent {
            key: EventKey(n),
            time: EventTime(t),
            cell,
            signal,
        }
    }

    /// Events between steps, to cells exported and not yet exported and
    /// to new cells, leave the image that of the cut.
    #[test]
    fn steps_between_events_give_the_image_of_the_cut() {
        let (mut shard, disk) = shard_with_cells();
        let cut = shard.export();
        shard.begin_export();
        let mut image = None;
        for round in 0..disk.len() / 7 {
            for j in 0..7 {
                // Against slot order: the end of the disk first (the
                // outer ring's cells are new).
                let cell = disk[disk.len() - 1 - round * 7 - j];
                shard.apply(&event(cell, 1_000 + j as u64, 20_000));
            }
            if let Some(done) = shard.export_step(10) {
                image = Some(done);
                break;
            }
        }
        assert_eq!(image.as_ref(), Some(&cut));
        assert!(!shard.exporting());
        assert_ne!(shard.export(), cut, "the events did change the cells");
    }

    /// A tick during an export finishes it with the state before the tick.
    #[test]
    fn a_tick_during_an_export_keeps_the_image_of_the_cut() {
        let (mut shard, disk) = shard_with_cells();
        let cut = shard.export();
        shard.begin_export();
        assert_eq!(shard.export_step(10), None);
        shard.apply(&event(disk[100], 7, 10_000));
        shard.close_tick(Tick(1));
        let mut rows = Vec::new();
        shard.feature_rows(|_| None, &mut rows);
        shard.commit(Tick(1), rows.iter().map(|r| (r.cell, r.prev)));
        assert_eq!(shard.export_step(1), Some(cut));
        assert_eq!(shard.export_step(1), None, "nothing runs any more");
    }
}
