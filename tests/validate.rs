//! The one validation pass, through the built binary: `check` accepts every shipped pipeline
//! without a recording, refuses each bad value naming the file, the dotted key, the value
//! and the allowed range, lists every problem of a file at once, and every command that
//! loads a pipeline refuses a bad one before reading anything else.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_neurostream");

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("neurostream-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn write(name: &str, text: &str) -> PathBuf {
    let path = temp_dir().join(name);
    std::fs::write(&path, text).expect("write pipeline");
    path
}

fn neurostream(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        // A pipeline with an LSL source must not make `check` look for a headset.
        .env("LSLAPICFG", "/nonexistent")
        .output()
        .expect("run neurostream")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn shipped_pipelines() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("pipelines/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn check_passes_every_shipped_pipeline_without_a_recording() {
    let files = shipped_pipelines();
    assert!(files.len() >= 5, "only {files:?} in pipelines/");
    for file in files {
        let output = neurostream(&["check", file.to_str().expect("utf-8 path")]);
        assert!(
            output.status.success(),
            "check {} failed:\n{}",
            file.display(),
            text(&output)
        );
        assert!(text(&output).contains(": ok"), "{}", text(&output));
    }
}

/// (TOML, key, value as printed, a piece of the allowed range)
const INVALID: &[(&str, &str, &str, &str)] = &[
    // [source]
    (
        "[source]\nkind = \"simulator\"\nrate = 0\n",
        "source.rate",
        "0",
        "64 <= rate <= 16384",
    ),
    (
        "[source]\nkind = \"simulator\"\nerd_depth = 2\n",
        "source.erd_depth",
        "2",
        "0 to 1",
    ),
    (
        "[source]\nkind = \"replay\"\nspeed = -1\n",
        "source.speed",
        "-1",
        "0 (as fast as possible) or a positive factor",
    ),
    (
        "[source]\nkind = \"replay\"\nchunk_samples = 0\n",
        "source.chunk_samples",
        "0",
        "1..=65536",
    ),
    (
        "[source]\nkind = \"lsl\"\ntype = \"EEG\"\nstall_seconds = 0\n",
        "source.stall_seconds",
        "0",
        "0 < stall_seconds <= 3600",
    ),
    // [preprocess]
    (
        "[preprocess]\nmax_abs_value = -1\n",
        "preprocess.max_abs_value",
        "-1",
        "a positive number",
    ),
    (
        "[preprocess.bandpass]\nlow = 0\nhigh = 30\n",
        "preprocess.bandpass.low",
        "0",
        "a positive frequency",
    ),
    (
        "[preprocess.bandpass]\nlow = 30\nhigh = 8\n",
        "preprocess.bandpass.high",
        "8",
        "above preprocess.bandpass.low (30)",
    ),
    (
        // The default source is the 160 Hz simulator.
        "[preprocess.bandpass]\nlow = 1\nhigh = 100\n",
        "preprocess.bandpass.high",
        "100",
        "below Nyquist, 80 Hz for a 160 Hz stream",
    ),
    (
        "[preprocess.bandpass]\nlow = 1\nhigh = 30\norder = 3\n",
        "preprocess.bandpass.order",
        "3",
        "even values 2, 4, 6 or 8",
    ),
    (
        "[preprocess.notch]\nfrequency = 55\n",
        "preprocess.notch.frequency",
        "55",
        "50 or 60",
    ),
    (
        "[preprocess.notch]\nfrequency = 50\nquality = 0\n",
        "preprocess.notch.quality",
        "0",
        "a positive number",
    ),
    // [features]
    (
        "[features]\nwindow_seconds = 0\n",
        "features.window_seconds",
        "0",
        "0 < window_seconds <= 60",
    ),
    (
        "[features]\nwindow_seconds = 1\nhop_seconds = 2\n",
        "features.hop_seconds",
        "2",
        "0 < hop_seconds <= features.window_seconds (1)",
    ),
    (
        "[features.band_power]\nbands = [{ name = \"mu\", low = 12, high = 8 }]\n",
        "features.band_power.bands[0].high",
        "8",
        "above features.band_power.bands[0].low (12)",
    ),
    (
        "[features.band_power]\nbands = [{ name = \"gamma\", low = 30, high = 100 }]\n",
        "features.band_power.bands[0].high",
        "100",
        "below Nyquist, 80 Hz for a 160 Hz stream",
    ),
    (
        "[features.band_power]\noverlap = 1\n",
        "features.band_power.overlap",
        "1",
        "0 <= overlap < 1",
    ),
    (
        "[features.csp]\ncomponents = 0\n",
        "features.csp.components",
        "0",
        "1..=256",
    ),
    // [decoder]
    (
        "[decoder]\nkind = \"mlp\"\nlearning_rate = -5\n",
        "decoder.learning_rate",
        "-5",
        "(0, 1]",
    ),
    (
        "[decoder]\nkind = \"mlp\"\n[decoder.online]\nmin_rate = 0.1\nmax_rate = 0.05\n",
        "decoder.online.min_rate",
        "0.1",
        "[0, decoder.online.max_rate = 0.05]",
    ),
    (
        "[decoder]\nkind = \"mlp\"\nhidden = [0]\n",
        "decoder.hidden[0]",
        "0",
        "1..=1024 units",
    ),
    (
        "[decoder]\nkind = \"svm\"\nc = -1\n",
        "decoder.c",
        "-1",
        "a positive number",
    ),
    (
        "[decoder]\nkind = \"lda\"\nshrinkage = 2\n",
        "decoder.shrinkage",
        "2",
        "[0, 1]",
    ),
    // [control]
    (
        "[control]\nthreshold = 2\n",
        "control.threshold",
        "2",
        "0 to 1",
    ),
    (
        "[control]\ndwell = 0\n",
        "control.dwell",
        "0",
        "1..=100 windows",
    ),
    (
        "[control]\nrefractory_seconds = -1\n",
        "control.refractory_seconds",
        "-1",
        "0 to 60 seconds",
    ),
    (
        "[decoder]\nkind = \"lda\"\n[control]\ncommands = [{ class = \"up\", command = \"go\" }]\n",
        "control.commands[0].class",
        "\"up\"",
        "a class of the decoder: left, right",
    ),
    // [training]
    ("[training]\nfolds = 1\n", "training.folds", "1", "2..=50"),
    (
        "[training]\nrecentre_rate = 2\n",
        "training.recentre_rate",
        "2",
        "0 to 1",
    ),
    (
        "[training]\nepoch_offset = 100\n",
        "training.epoch_offset",
        "100",
        "-10 to 30 seconds",
    ),
    (
        "[training]\nclasses = [{ event = \"T1\", name = \"left\" }]\n",
        "training.classes",
        "1 entry",
        "at least 2 classes",
    ),
    // [paradigm]
    (
        "[paradigm]\ncalibration_trials = 2\n",
        "paradigm.calibration_trials",
        "2",
        "5 to 1000 trials per class",
    ),
];

#[test]
fn check_refuses_each_invalid_value_naming_file_key_value_and_range() {
    assert!(INVALID.len() >= 20);
    let sections: std::collections::BTreeSet<&str> = INVALID
        .iter()
        .map(|(_, key, _, _)| key.split('.').next().unwrap_or_default())
        .collect();
    assert_eq!(
        sections.into_iter().collect::<Vec<_>>(),
        [
            "control",
            "decoder",
            "features",
            "paradigm",
            "preprocess",
            "source",
            "training"
        ]
    );
    let mut failures = Vec::new();
    for (i, (toml, key, value, allowed)) in INVALID.iter().enumerate() {
        let path = write(&format!("invalid-{i}.toml"), toml);
        let output = neurostream(&["check", path.to_str().expect("utf-8 path")]);
        let message = text(&output);
        let named = message.contains(&path.display().to_string())
            && message.contains(&format!("{key} = {value}"))
            && message.contains(allowed);
        if output.status.success() || !named {
            failures.push(format!(
                "{toml:?}: wanted {key} = {value} (allowed {allowed:?}) in the file's error, \
                 exit {:?}, got:\n{message}",
                output.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn check_lists_every_problem_of_a_file_at_once() {
    let path = write(
        "many.toml",
        "[control]\nthreshold = 2\ndwell = 0\n[training]\nfolds = 1\n\
         [decoder]\nkind = \"mlp\"\nlearning_rate = -5\n[features]\nhop_seconds = 5\n",
    );
    let output = neurostream(&["check", path.to_str().expect("utf-8 path")]);
    assert!(!output.status.success());
    let message = text(&output);
    assert!(message.contains("5 problems"), "{message}");
    for key in [
        "control.threshold = 2",
        "control.dwell = 0",
        "training.folds = 1",
        "decoder.learning_rate = -5",
        "features.hop_seconds = 5",
    ] {
        assert!(message.contains(key), "{key} missing:\n{message}");
    }
}

/// Every command that takes a pipeline refuses a bad one first: before calibrating (demo),
/// before opening recordings (train, evaluate, tune, replay) or a stream (run). The
/// recordings named here do not exist, so any other order fails with another message.
#[test]
fn every_command_refuses_a_bad_pipeline_before_anything_else() {
    let bad = write(
        "bad-threshold.toml",
        "[decoder]\nkind = \"lda\"\n[control]\nthreshold = 2\n",
    );
    let bad = bad.to_str().expect("utf-8 path");
    let missing = temp_dir().join("no-such-recording.edf");
    let missing = missing.to_str().expect("utf-8 path");
    let out = temp_dir().join("out.json");
    let out = out.to_str().expect("utf-8 path");
    let space = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/spaces/motor_imagery.toml");
    let space = space.to_str().expect("utf-8 path");
    let commands: Vec<Vec<&str>> = vec![
        vec!["check", bad],
        vec!["demo", "--pipeline", bad, "--seconds", "1"],
        vec!["run", "--pipeline", bad],
        vec!["replay", missing, "--pipeline", bad],
        vec![
            "train",
            "--pipeline",
            bad,
            "--recording",
            missing,
            "--out",
            out,
        ],
        vec!["evaluate", "--pipeline", bad, "--recording", missing],
        vec![
            "tune",
            "--pipeline",
            bad,
            "--space",
            space,
            "--recording",
            missing,
            "--out",
            out,
        ],
    ];
    let mut failures = Vec::new();
    for args in &commands {
        let output = neurostream(args);
        let message = text(&output);
        if output.status.success()
            || !message.contains(bad)
            || !message.contains("control.threshold = 2")
        {
            failures.push(format!("{args:?}:\n{message}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
