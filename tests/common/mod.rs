//! Shared helpers for integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The real-EEG data folder (PhysioNet EEGMMIDB + XDF test vectors), from `NEUROSTREAM_DATA`,
/// falling back to `../shared/data/eeg` next to the checkout.
///
/// Returns `None` (after saying so on stderr) when the data is absent, so `cargo test` on a
/// machine without it still runs everything else. `.ci/run` sets `NEUROSTREAM_REQUIRE_DATA=1`,
/// which turns absence into a failure: CI always has the data, so a skip there would hide a
/// broken path.
pub fn data_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("NEUROSTREAM_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/eeg"));
    if dir.join("eegmmidb").is_dir() {
        return Some(dir);
    }
    let msg = format!(
        "real EEG data not found at {} (set NEUROSTREAM_DATA to the folder holding eegmmidb/ and xdf/)",
        dir.display()
    );
    if std::env::var("NEUROSTREAM_REQUIRE_DATA").is_ok_and(|v| v == "1") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// Path of an EEGMMIDB run, e.g. `eegmmidb_file("S001", 4)` → `.../eegmmidb/S001/S001R04.edf`.
pub fn eegmmidb_file(subject: &str, run: u32) -> Option<PathBuf> {
    data_dir().map(|d| d.join(format!("eegmmidb/{subject}/{subject}R{run:02}.edf")))
}

/// Path of an XDF test vector, e.g. `xdf_file("minimal.xdf")`.
pub fn xdf_file(name: &str) -> Option<PathBuf> {
    data_dir().map(|d| d.join("xdf").join(name))
}

/// The left/right imagery runs R04, R08 and R12 of a subject, or `None` without the data.
pub fn imagery_runs(subject: &str) -> Option<[PathBuf; 3]> {
    Some([
        eegmmidb_file(subject, 4)?,
        eegmmidb_file(subject, 8)?,
        eegmmidb_file(subject, 12)?,
    ])
}
