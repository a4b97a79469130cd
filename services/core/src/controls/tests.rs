use super::*;

const T0: i64 = 1_800_000_000_000;
const STADIUM: &str = "88283082adfffff";

fn spec(kind: ControlKind, m: Option<f64>) -> ControlSpec {
    ControlSpec {
        area: AreaSpec {
            cells: Some(vec![STADIUM.to_owned()]),
            bbox: None,
        },
        kind,
        multiplier: m,
        from: T0,
        to: T0 + 600_000,
        reason: "storm".to_owned(),
        author: "ops".to_owned(),
    }
}

fn limits() -> ControlLimits {
    ControlLimits::new(8, T0)
}

fn fields(e: InvalidControl) -> Vec<String> {
    e.0.into_iter().map(|f| f.field).collect()
}

#[test]
fn bad_input_names_every_field() {
    let mut s = spec(ControlKind::Cap, Some(0.5));
    s.area.cells = Some(vec![STADIUM.to_owned(), "nonsense".to_owned()]);
    s.from = T0 - 2 * 24 * 3_600_000;
    s.to = T0 + 365 * 24 * 3_600_000;
    s.reason = " ".to_owned();
    let err = s.validate(&limits()).unwrap_err();
    assert_eq!(
        fields(err),
        ["area.cells[1]", "multiplier", "from", "to", "reason"]
    );
    let mut s = spec(ControlKind::Freeze, Some(1.5));
    s.area.cells = Some(vec![]);
    assert_eq!(
        fields(s.validate(&limits()).unwrap_err()),
        ["area.cells", "multiplier"]
    );
    let mut s = spec(ControlKind::Cap, Some(1.52));
    s.area = AreaSpec {
        cells: None,
        bbox: Some(vec![-122.0, 37.0, -122.5, 38.0]),
    };
    s.to = s.from;
    assert_eq!(
        fields(s.validate(&limits()).unwrap_err()),
        ["area.bbox", "multiplier", "to"]
    );
}

#[test]
fn finer_cells_stand_for_their_price_cell_and_coarser_cover_children() {
    let stadium: CellId = STADIUM.parse().unwrap();
    let child = stadium.index().center_child(Resolution::Ten).unwrap();
    let parent = stadium.index().parent(Resolution::Six).unwrap();
    let mut s = spec(ControlKind::Cap, Some(1.5));
    s.area.cells = Some(vec![child.to_string()]);
    let c = s.validate(&limits()).unwrap();
    assert_eq!(c.area, Area::Cells(vec![stadium]));
    s.area.cells = Some(vec![parent.to_string()]);
    let mut set = ControlSet::new(10_000);
    set.issue(s.validate(&limits()).unwrap(), Tick(0), T0)
        .unwrap();
    let entry = set.get(ControlId(1)).unwrap();
    assert!(entry.covers(stadium));
    let far: CellId = "8828309545fffff".parse().unwrap();
    assert!(!entry.covers(far));
}

#[test]
fn window_stamp_and_revocation_bound_the_ticks() {
    let b = 10_000;
    let mut set = ControlSet::new(b);
    let c = spec(ControlKind::Cap, Some(1.5))
        .validate(&limits())
        .unwrap();
    let first = Tick(T0 / b - 1); // ends exactly at `from`
    // Issued late: ticks before `first + 3` have fired.
    set.issue(c, Tick(first.0 + 3), T0).unwrap();
    assert!(set.at(Tick(first.0 + 2)).is_empty());
    assert!(!set.at(Tick(first.0 + 3)).is_empty());
    let last = Tick((T0 + 600_000) / b - 2); // ends just before `to`
    assert!(!set.at(last).is_empty());
    assert!(set.at(last.next()).is_empty());
    set.revoke(
        ControlId(1),
        Tick(first.0 + 10),
        T0,
        "ops".into(),
        "over".into(),
    )
    .unwrap();
    assert!(!set.at(Tick(first.0 + 9)).is_empty());
    assert!(set.at(Tick(first.0 + 10)).is_empty());
    assert_eq!(
        set.revoke(ControlId(1), Tick(first.0 + 11), T0, "a".into(), "b".into()),
        Err(LogError::AlreadyRevoked(ControlId(1)))
    );
    assert_eq!(set.records().len(), 2);
}

#[test]
fn stamped_records_before_the_first_unfired_tick_are_refused() {
    let mut set = ControlSet::new(10_000);
    let c = spec(ControlKind::Freeze, None).validate(&limits()).unwrap();
    let rec = ControlRecord::Issued {
        id: ControlId(1),
        control: c,
        tick: Tick(5),
        recorded_at: T0,
    };
    assert!(matches!(
        set.apply(rec.clone(), Tick(6)),
        Err(LogError::AlreadyFired { .. })
    ));
    assert!(set.records().is_empty());
    set.apply(rec.clone(), Tick(5)).unwrap();
    assert_eq!(
        set.apply(rec, Tick(5)),
        Err(LogError::Duplicate(ControlId(1)))
    );
}

#[test]
fn overlaps_resolve_by_kind_then_value_then_id() {
    let m = Multiplier::from_twentieths;
    let mut e = Effect::default();
    e.add(ControlId(3), Action::Cap(m(40)));
    e.add(ControlId(2), Action::Cap(m(30)));
    e.add(ControlId(1), Action::Cap(m(30)));
    e.add(ControlId(4), Action::Floor(m(25)));
    assert_eq!(e.cap, Some((m(30), ControlId(1))));
    assert_eq!(
        e.deciding().collect::<Vec<_>>(),
        [ControlId(1), ControlId(4)]
    );
    e.add(ControlId(6), Action::Freeze);
    e.add(ControlId(5), Action::Freeze);
    assert_eq!(e.deciding().collect::<Vec<_>>(), [ControlId(5)]);
    e.add(ControlId(7), Action::Force(m(50)));
    assert_eq!(e.deciding().collect::<Vec<_>>(), [ControlId(7)]);
}

#[test]
fn records_round_trip_through_json() {
    let mut set = ControlSet::new(10_000);
    let c = spec(ControlKind::Cap, Some(1.55))
        .validate(&limits())
        .unwrap();
    let rec = set.issue(c, Tick(3), T0).unwrap();
    let json = serde_json::to_string(&rec).unwrap();
    assert!(
        json.contains(r#""action":{"kind":"cap","multiplier":1.55}"#),
        "{json}"
    );
    let back: ControlRecord = serde_json::from_str(&json).unwrap();
    assert_eq!(back, rec);
}
