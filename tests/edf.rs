//! The EDF reader on real EEGMMIDB recordings, and on corrupted copies of one built in memory.

mod common;

use neurostream::io::{self, edf, Recording, StreamData};
use neurostream::stream::ValueFormat;

fn read(subject: &str, run: u32) -> Option<(Vec<u8>, Recording)> {
    let path = common::eegmmidb_file(subject, run)?;
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let rec = edf::parse(&bytes, &path).unwrap_or_else(|e| panic!("{e}"));
    Some((bytes, rec))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn std_dev(x: &[f32]) -> f64 {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    (x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt()
}

/// Checks every EEGMMIDB run shares: one 64-channel 160 Hz EEG stream, plausible µV values,
/// and a marker stream. Returns (seconds, event labels).
fn check_eegmmidb(rec: &Recording) -> (f64, Vec<String>) {
    assert_eq!(
        rec.streams.len(),
        2,
        "one signal stream and one marker stream"
    );
    let eeg = rec.primary_signal().expect("an EEG stream");
    assert_eq!(eeg.info.channel_count(), 64);
    assert_eq!(eeg.info.nominal_rate, 160.0);
    assert_eq!(eeg.info.stream_type, "EEG");
    assert_eq!(eeg.info.format, ValueFormat::Int16);
    assert!(eeg
        .info
        .channels
        .iter()
        .all(|c| c.unit == "uV" && c.kind == "EEG"));
    for (i, &t) in eeg.timestamps.iter().enumerate().step_by(997) {
        assert_eq!(t, i as f64 / 160.0);
    }

    let mut stds = Vec::new();
    for c in 0..64 {
        let x = eeg.channel(c).unwrap();
        assert!(
            x.iter().all(|v| v.abs() <= 1000.0),
            "channel {c} has |x| > 1000 uV"
        );
        stds.push(std_dev(x));
    }
    let med = median(stds);
    // Scalp EEG: tens of µV. Some EEGMMIDB subjects are quiet (one of the shared runs has a
    // median of 16.6 µV, another 102 µV), so the range is 10–200 µV; a unit mistake (V, mV
    // or nV) is orders off.
    assert!((10.0..=200.0).contains(&med), "median channel std {med} uV");

    let markers = rec.streams.iter().find(|s| !s.is_signal()).unwrap();
    assert_eq!(markers.info.stream_type, "Markers");
    assert_eq!(markers.info.nominal_rate, 0.0);
    let StreamData::Markers(events) = &markers.data else {
        unreachable!()
    };
    assert_eq!(
        markers.timestamps,
        events.iter().map(|e| e.onset).collect::<Vec<_>>()
    );
    assert_eq!(events[0].label, "T0");
    assert_eq!(events[0].onset, 0.0);
    for e in events {
        let at = e.onset * 160.0;
        assert!((at - at.round()).abs() < 1e-6, "{e:?} is not on a sample");
        assert!(e.duration > 0.0, "{e:?}");
    }
    (
        eeg.sample_count() as f64 / 160.0,
        events.iter().map(|e| e.label.clone()).collect(),
    )
}

fn count(labels: &[String], label: &str) -> usize {
    labels.iter().filter(|l| *l == label).count()
}

#[test]
fn s001r04_motor_imagery() {
    let Some((_, rec)) = read("S001", 4) else {
        return;
    };
    let (seconds, labels) = check_eegmmidb(&rec);
    let eeg = rec.primary_signal().unwrap();
    assert_eq!(eeg.sample_count(), 20_000);
    assert_eq!(seconds, 125.0);
    assert_eq!(eeg.info.channels[0].label, "Fc5");
    for label in ["C3", "Cz", "C4", "Oz", "Iz"] {
        assert!(
            eeg.info.channel_index(label).is_some(),
            "no channel {label}"
        );
    }
    assert_eq!(labels.len(), 30);
    assert_eq!(count(&labels, "T0"), 15);
    let (t1, t2) = (count(&labels, "T1"), count(&labels, "T2"));
    assert!(
        (t1, t2) == (8, 7) || (t1, t2) == (7, 8),
        "T1 x{t1}, T2 x{t2}"
    );
    // The README's table for R04.
    assert_eq!((t1, t2), (8, 7));
}

#[test]
fn s001r01_baseline() {
    let Some((_, rec)) = read("S001", 1) else {
        return;
    };
    let (seconds, labels) = check_eegmmidb(&rec);
    assert_eq!(seconds, 60.0);
    assert_eq!(labels, ["T0"]);
}

#[test]
fn s004r04_is_123_seconds() {
    let Some((_, rec)) = read("S004", 4) else {
        return;
    };
    let (seconds, labels) = check_eegmmidb(&rec);
    assert_eq!(seconds, 123.0);
    assert_eq!(labels.len(), 30);
}

#[test]
fn open_sniffs_edf() {
    let Some(path) = common::eegmmidb_file("S001", 4) else {
        return;
    };
    let rec = io::open(&path).unwrap();
    assert_eq!(rec.events().len(), 30);
}

#[test]
fn truncated_file_is_an_error_with_both_sizes() {
    let Some((bytes, _)) = read("S001", 4) else {
        return;
    };
    // Cut in the middle of the next-to-last record (a partial last record alone is kept).
    let cut = bytes.len() - 30_000;
    let msg = edf::parse(&bytes[..cut], "S001R04-cut.edf".as_ref())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("truncated"), "{msg}");
    assert!(
        msg.contains(&format!("{cut} bytes")) && msg.contains(&bytes.len().to_string()),
        "{msg}"
    );
    assert!(msg.contains("S001R04-cut.edf"), "{msg}");

    // Cut inside the signal headers.
    let msg = edf::parse(&bytes[..5000], "S001R04-cut.edf".as_ref())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("header") && msg.contains("5000 bytes"),
        "{msg}"
    );
}

#[test]
fn garbage_is_an_error() {
    let garbage: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert!(edf::parse(&garbage, "garbage.edf".as_ref()).is_err());
    assert!(io::open(std::env::temp_dir().join("neurostream-no-such-file.edf")).is_err());
}

#[test]
fn corrupted_number_of_signals_names_the_field() {
    let Some((mut bytes, _)) = read("S001", 4) else {
        return;
    };
    bytes[252..256].copy_from_slice(b"ab  ");
    let msg = edf::parse(&bytes, "S001R04-bad.edf".as_ref())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("number of signals") && msg.contains("\"ab  \""),
        "{msg}"
    );
}

#[test]
fn corrupted_digital_range_names_the_signal() {
    let Some((mut bytes, _)) = read("S001", 4) else {
        return;
    };
    // 65 signals: digital maximum fields start at 256 + 128 * 65; signal 10's is the 11th.
    let at = 256 + 128 * 65 + 8 * 10;
    let dig_min = bytes[256 + 120 * 65 + 8 * 10..][..8].to_vec();
    bytes[at..at + 8].copy_from_slice(&dig_min);
    let msg = edf::parse(&bytes, "S001R04-bad.edf".as_ref())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("signal 10") && msg.contains("digital"),
        "{msg}"
    );
}

/// Every EEGMMIDB file in the data folder parses, with the shape the README reports.
#[test]
fn every_eegmmidb_file_parses() {
    let Some(dir) = common::data_dir() else {
        return;
    };
    let mut files = 0;
    for subject in std::fs::read_dir(dir.join("eegmmidb")).unwrap() {
        for file in std::fs::read_dir(subject.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_none_or(|e| e != "edf") {
                continue;
            }
            let rec = io::open(&path).unwrap_or_else(|e| panic!("{e}"));
            let (seconds, labels) = check_eegmmidb(&rec);
            let baseline = labels.len() == 1;
            assert!(
                baseline || labels.len() == 30,
                "{}: {} events",
                path.display(),
                labels.len()
            );
            assert!(
                // Task runs are 123–125 s long (S041R12: 124 s), baselines 60 s.
                [60.0, 123.0, 124.0, 125.0].contains(&seconds),
                "{}: {seconds} s",
                path.display()
            );
            files += 1;
        }
    }
    assert!(files >= 40, "only {files} EDF files found");
}
