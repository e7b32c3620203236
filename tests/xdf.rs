//! The XDF reader against the three reference files of `xdf-modules/example-files`
//! (see `shared/data/eeg/README.md`, sections 2 and 3, for what pyxdf reports on them).

mod common;

use std::path::Path;

use neurostream::io::xdf::{self, ParseOptions};
use neurostream::io::{self as nio, RecordedStream, Recording, StreamData};
use neurostream::stream::ValueFormat;

fn load(name: &str) -> Option<(Vec<u8>, Recording)> {
    let path = common::xdf_file(name)?;
    let bytes = std::fs::read(&path).expect("read test vector");
    let rec = nio::open(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    Some((bytes, rec))
}

fn stream<'a>(rec: &'a Recording, name: &str) -> &'a RecordedStream {
    rec.streams
        .iter()
        .find(|s| s.info.name == name)
        .unwrap_or_else(|| panic!("no stream {name:?}"))
}

fn markers(s: &RecordedStream) -> &[neurostream::stream::Event] {
    match &s.data {
        StreamData::Markers(events) => events,
        StreamData::Signal { .. } => panic!("{} is not a marker stream", s.info.name),
    }
}

fn assert_near(got: f64, want: f64, tol: f64, what: &str) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, want {want} ± {tol}"
    );
}

fn is_monotonic(t: &[f64]) -> bool {
    t.windows(2).all(|w| w[1] >= w[0])
}

/// Cutting a file anywhere must give an error, or `Ok` only at a chunk boundary with no more
/// samples than the whole file has; never a panic.
fn check_cuts(name: &str, bytes: &[u8], full: &Recording, cuts: impl Iterator<Item = usize>) {
    let path = Path::new(name);
    let mut errors = 0;
    for cut in cuts.filter(|&c| c < bytes.len()) {
        let result = std::panic::catch_unwind(|| xdf::parse(&bytes[..cut], path))
            .unwrap_or_else(|_| panic!("{name} cut at {cut} panicked"));
        match result {
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("byte"),
                    "{name} cut at {cut}: error names no offset: {msg}"
                );
                errors += 1;
            }
            Ok(part) => {
                for s in &part.streams {
                    let whole = stream(full, &s.info.name);
                    assert!(
                        s.sample_count() <= whole.sample_count(),
                        "{name} cut at {cut}"
                    );
                }
            }
        }
    }
    assert!(errors > 0, "{name}: no cut produced an error");
}

#[test]
fn minimal_has_two_synchronised_streams() {
    let Some((bytes, rec)) = load("minimal.xdf") else {
        return;
    };
    assert_eq!(rec.streams.len(), 2);

    let eeg = stream(&rec, "SendDataC");
    assert!(eeg.info.has_type("EEG"));
    assert_eq!(eeg.info.channel_count(), 3);
    assert_eq!(eeg.info.format, ValueFormat::Int16);
    assert_eq!(eeg.info.nominal_rate, 10.0);
    assert_eq!(eeg.info.labels().collect::<Vec<_>>(), ["Ch1", "Ch2", "Ch3"]);
    assert_eq!(eeg.sample_count(), 9);
    // Values from the example-files README: first sample 192/255/238, then 12..15 repeating.
    assert_eq!(
        eeg.channel(0).unwrap(),
        [192.0, 12., 13., 14., 15., 12., 13., 14., 15.]
    );
    assert_eq!(eeg.channel(2).unwrap()[1], 32.0);
    // Raw stamps are 5.1..5.9 and both clock offsets are -0.1 s, so the fit is exact and no
    // dejittering is needed to match pyxdf's 5.0..5.8.
    assert_near(eeg.timestamps[0], 5.0, 1e-9, "SendDataC first");
    assert_near(eeg.timestamps[8], 5.8, 1e-9, "SendDataC last");

    let strings = stream(&rec, "SendDataString");
    assert!(strings.info.has_type("StringMarker"));
    assert_eq!(strings.sample_count(), 9);
    let events = markers(strings);
    assert_eq!(events.len(), 9);
    // This stream has no clock offsets in the file, so its stamps stay as recorded.
    assert_near(events[0].onset, 5.1, 1e-9, "SendDataString first");
    assert_near(events[8].onset, 5.9, 1e-9, "SendDataString last");
    assert!(events.iter().all(|e| e.duration == 0.0));
    assert!(
        events[0].label.contains("<?xml"),
        "first marker holds the footer XML"
    );
    assert_eq!(rec.events().len(), 9);

    check_cuts("minimal.xdf", &bytes, &rec, (1..bytes.len()).step_by(97));
    check_cuts(
        "minimal.xdf",
        &bytes,
        &rec,
        [5, 63, 64, 65, 66, 70, 1004].into_iter(),
    );
}

#[test]
fn clock_resets_yield_monotonic_corrected_timestamps() {
    let Some((bytes, rec)) = load("clock_resets.xdf") else {
        return;
    };
    assert_eq!(rec.streams.len(), 2);

    let eeg = stream(&rec, "BioSemi");
    assert!(eeg.info.has_type("EEG"));
    assert_eq!(eeg.info.channel_count(), 8);
    assert_eq!(eeg.info.format, ValueFormat::Float32);
    assert_eq!(eeg.info.nominal_rate, 100.0);
    assert_eq!(eeg.sample_count(), 27_815);
    assert!(
        is_monotonic(&eeg.timestamps),
        "BioSemi corrected time stamps go backwards"
    );

    let marks = stream(&rec, "MyMarkerStream");
    assert_eq!(marks.info.format, ValueFormat::String);
    assert!(marks.info.is_irregular());
    assert_eq!(markers(marks).len(), 175);
    assert!(
        is_monotonic(&marks.timestamps),
        "marker time stamps go backwards"
    );

    // The raw stamps do jump back at the reset: the monotonicity above is the sync's work.
    let path = common::xdf_file("clock_resets.xdf").unwrap();
    let raw_options = ParseOptions {
        synchronize_clocks: false,
        ..ParseOptions::default()
    };
    let raw = xdf::parse_with(&bytes, &path, &raw_options).unwrap();
    assert!(!is_monotonic(&stream(&raw, "BioSemi").timestamps));

    // After the reset both streams share the recorder's clock: markers fall inside the EEG.
    let (first, last) = (eeg.timestamps[0], *eeg.timestamps.last().unwrap());
    for e in markers(marks) {
        assert!(
            e.onset >= first - 1.0 && e.onset <= last + 1.0,
            "marker at {}",
            e.onset
        );
    }

    let n = bytes.len();
    let cuts = [10, 500, 4321, n / 3, n / 2, n - 300, n - 1];
    check_cuts("clock_resets.xdf", &bytes, &rec, cuts.into_iter());
}

#[test]
fn clock_resets_dejittered_is_regular_between_gaps() {
    let Some(path) = common::xdf_file("clock_resets.xdf") else {
        return;
    };
    let bytes = std::fs::read(&path).unwrap();
    let options = ParseOptions {
        dejitter: true,
        ..ParseOptions::default()
    };
    let rec = xdf::parse_with(&bytes, &path, &options).unwrap();
    let eeg = stream(&rec, "BioSemi");
    assert_eq!(eeg.sample_count(), 27_815);
    assert!(is_monotonic(&eeg.timestamps));
}

#[test]
fn empty_streams_load_as_empty() {
    let Some((bytes, rec)) = load("empty_streams.xdf") else {
        return;
    };
    assert_eq!(rec.streams.len(), 4);
    assert_eq!(
        rec.streams.iter().filter(|s| s.sample_count() == 0).count(),
        2
    );

    let counter = rec
        .streams
        .iter()
        .find(|s| s.is_signal() && s.sample_count() > 0)
        .expect("counter stream");
    assert_eq!(counter.info.format, ValueFormat::Int32);
    assert_eq!(counter.info.nominal_rate, 1.0);
    assert_eq!(counter.sample_count(), 10);
    let values: Vec<f32> = (0..10).map(|v| v as f32).collect();
    assert_eq!(counter.channel(0).unwrap(), values.as_slice());

    let control = rec
        .streams
        .iter()
        .find(|s| !s.is_signal() && s.sample_count() > 0)
        .expect("control stream");
    let events = markers(control);
    assert_eq!(events.len(), 1);
    let state: serde_json::Value = serde_json::from_str(&events[0].label).unwrap();
    assert_eq!(state, serde_json::json!({"state": 2}));

    for empty in rec.streams.iter().filter(|s| s.sample_count() == 0) {
        assert_eq!(empty.duration(), 0.0);
        match &empty.data {
            StreamData::Signal { samples, values } => assert!(*samples == 0 && values.is_empty()),
            StreamData::Markers(events) => assert!(events.is_empty()),
        }
    }

    let n = bytes.len();
    check_cuts("empty_streams.xdf", &bytes, &rec, (3..n).step_by(311));
}

#[test]
fn garbage_after_magic_is_an_error() {
    let path = Path::new("garbage.xdf");
    for garbage in [
        &b"XDF:"[..],
        b"XDF:\x00\x00\x00",
        b"XDF:\x07garbage garbage",
        b"XDF:\x01\x05\x02\x00abc",
        b"XDF:\x08\xff\xff\xff\xff\xff\xff\xff\xff\x01\x00",
        b"XDF:\x01\x02\x03\x00",
    ] {
        assert!(xdf::parse(garbage, path).is_err(), "{garbage:?} parsed");
    }
    assert!(xdf::parse(b"NOPE", path).is_err());
}
