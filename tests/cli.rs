//! The `neurostream` binary, driven as a user would.

mod common;

use std::process::{Command, Output};

fn neurostream(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_neurostream"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("run neurostream")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn failure(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "unexpected success: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("neurostream-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn demo_runs_the_embedded_pipeline_on_the_simulator() {
    let out = stdout(&neurostream(&[
        "demo",
        "--print",
        "--seconds",
        "3",
        "--speed",
        "0",
    ]));
    let mut lines = out.lines();
    assert_eq!(
        lines.next().unwrap(),
        "timestamp,marker,C3:mu,C3:beta,Cz:mu,Cz:beta,C4:mu,C4:beta"
    );
    // 3 s at 160 Hz, 1 s windows every 0.25 s: 1 + (480 − 160) / 40 windows.
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 9);
    for row in rows {
        let fields: Vec<&str> = row.split(',').collect();
        assert_eq!(fields.len(), 8);
        for v in &fields[2..] {
            assert!(v.parse::<f32>().unwrap().is_finite());
        }
    }
}

/// Start the service (`args` + a free port + a token), print its commands with `listen` until
/// the stream ends; returns their sequence numbers.
fn serve_and_listen(args: &[&str]) -> Vec<u64> {
    use std::io::BufRead;
    let mut service = Command::new(env!("CARGO_BIN_EXE_neurostream"))
        .args(args)
        .args(["--bind", "127.0.0.1:0", "--token", "t0k"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("NEUROSTREAM_TOKEN")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run neurostream");
    let mut log = std::io::BufReader::new(service.stderr.take().unwrap()).lines();
    let url = log
        .by_ref()
        .map(|l| l.unwrap())
        .find_map(|l| {
            let start = l.find("ws://")?;
            Some(l[start..].split_whitespace().next()?.to_owned())
        })
        .expect("the service never said where it serves");
    // Keep reading the log so the service never blocks on a full pipe.
    let drain = std::thread::spawn(move || log.count());
    let refused = failure(&neurostream(&["listen", &url, "--token", "wrong"]));
    assert!(refused.contains("401"), "{refused}");
    // The service's address without its `/ws` path works too.
    let bare = url
        .strip_suffix("/ws")
        .expect("the service URL ends in /ws");
    let out = stdout(&neurostream(&["listen", bare, "--token", "t0k"]));
    // stdout: the `hello` first, then commands only, each a JSON line.
    let mut lines = out.lines();
    let hello: serde_json::Value = serde_json::from_str(lines.next().expect("hello")).unwrap();
    assert_eq!(hello["type"], "hello", "{out}");
    assert!(hello["classes"].is_array(), "{hello}");
    let seqs: Vec<u64> = lines
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["type"], "command", "{l}");
            v["seq"].as_u64().unwrap()
        })
        .collect();
    assert!(service.wait().unwrap().success());
    drain.join().unwrap();
    seqs
}

#[test]
fn demo_serves_commands_that_listen_prints() {
    let seqs = serve_and_listen(&["demo", "--seconds", "40", "--speed", "10"]);
    assert!(!seqs.is_empty(), "no command printed");
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

#[test]
fn simulate_writes_one_row_per_sample_with_markers() {
    let out = stdout(&neurostream(&[
        "simulate",
        "--seconds",
        "10",
        "--seed",
        "3",
    ]));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("timestamp,Fc3,"));
    assert_eq!(lines.len(), 1 + 1600);
    let markers: Vec<&str> = lines[1..]
        .iter()
        .filter_map(|l| l.rsplit(',').next())
        .filter(|m| !m.is_empty())
        .collect();
    assert!(
        markers.len() >= 2 && markers.iter().all(|m| ["T0", "T1", "T2"].contains(m)),
        "{markers:?}"
    );
    // Same seed, same EEG.
    assert_eq!(
        out,
        stdout(&neurostream(&[
            "simulate",
            "--seconds",
            "10",
            "--seed",
            "3"
        ]))
    );
}

#[test]
fn info_describes_a_real_recording() {
    let Some(path) = common::eegmmidb_file("S001", 4) else {
        return;
    };
    let out = stdout(&neurostream(&["info", path.to_str().unwrap()]));
    assert!(
        out.contains("64 channel(s), 160 Hz, 20000 sample(s), 125.000 s"),
        "{out}"
    );
    assert!(out.contains("events: 30 (T0×15, T1×8, T2×7)"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&stdout(&neurostream(&[
        "info",
        path.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    assert_eq!(json["streams"][0]["labels"][8], "C3");
}

#[test]
fn replay_prints_features_and_with_a_model_probabilities() {
    let Some([r04, r08, r12]) = common::imagery_runs("S007") else {
        return;
    };
    let (r04, r08, r12) = (
        r04.to_str().unwrap(),
        r08.to_str().unwrap(),
        r12.to_str().unwrap(),
    );
    let out = stdout(&neurostream(&["replay", r12, "--format", "jsonl"]));
    let windows = out.lines().filter(|l| l.contains("\"features\"")).count();
    assert_eq!(windows, 1 + (20_000 - 160) / 16);
    let first: serde_json::Value =
        serde_json::from_str(out.lines().find(|l| l.contains("features")).unwrap()).unwrap();
    assert!(first["features"]["C3:mu"].as_f64().unwrap().is_finite());

    let model = temp("csp_lda.json");
    let model = model.to_str().unwrap();
    let trained = stdout(&neurostream(&[
        "train",
        "--pipeline",
        "pipelines/mi_csp_lda.toml",
        "--recording",
        r04,
        r08,
        "--out",
        model,
    ]));
    assert!(trained.contains("on 30 epoch(s)"), "{trained}");
    let out = stdout(&neurostream(&[
        "replay",
        r12,
        "--pipeline",
        "pipelines/mi_csp_lda.toml",
        "--model",
        model,
    ]));
    let header = out.lines().next().unwrap();
    assert_eq!(
        header,
        "timestamp,marker,predicted,p:left,p:right,csp0,csp1,csp2,csp3"
    );
    let row: Vec<&str> = out.lines().nth(1).unwrap().split(',').collect();
    assert!(["left", "right"].contains(&row[2]));

    // A model refused by a pipeline it does not fit.
    let err = failure(&neurostream(&[
        "replay",
        r12,
        "--pipeline",
        "pipelines/mi_tangent_lda.toml",
        "--model",
        model,
    ]));
    assert!(err.contains("model does not fit"), "{err}");
    // The same model served over WebSocket at 50× real time.
    let seqs = serve_and_listen(&[
        "replay",
        r12,
        "--serve",
        "--speed",
        "50",
        "--pipeline",
        "pipelines/mi_csp_lda.toml",
        "--model",
        model,
    ]);
    assert!(!seqs.is_empty(), "replay --serve sent no command");
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

#[test]
fn evaluate_reports_cross_validated_and_held_out_scores() {
    let Some([r04, r08, r12]) = common::imagery_runs("S007") else {
        return;
    };
    let files = [
        r04.to_str().unwrap(),
        r08.to_str().unwrap(),
        r12.to_str().unwrap(),
    ];
    let mut args = vec![
        "evaluate",
        "--json",
        "--pipeline",
        "pipelines/mi_csp_lda.toml",
        "--recording",
    ];
    args.extend(files);
    let json: serde_json::Value = serde_json::from_str(&stdout(&neurostream(&args))).unwrap();
    let result = &json["results"][0];
    assert_eq!(result["subjects"][0]["subject"], "S007");
    assert_eq!(result["subjects"][0]["trials"], 45);
    let auc = result["mean_auc"].as_f64().unwrap();
    assert!(auc > 0.8, "S007 is the clearest subject; CSP+LDA AUC {auc}");
    let kappa = result["subjects"][0]["cv"]["pooled"]["kappa"]
        .as_f64()
        .unwrap();
    assert!(kappa > 0.5);

    args.extend(["--holdout", "R12"]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&neurostream(&args))).unwrap();
    let subject = &json["results"][0]["subjects"][0];
    assert_eq!(subject["train_trials"], 30);
    assert_eq!(subject["report"]["n"], 15);
}

#[test]
fn bad_input_gets_a_clear_error() {
    let garbage = temp("garbage.edf");
    std::fs::write(&garbage, b"this is not EEG").unwrap();
    let err = failure(&neurostream(&["info", garbage.to_str().unwrap()]));
    assert!(err.contains("not an EDF, BDF or XDF file"), "{err}");

    let pipeline = temp("typo.toml");
    std::fs::write(&pipeline, "[features]\nwindow_secs = 1.0\n").unwrap();
    let err = failure(&neurostream(&["check", pipeline.to_str().unwrap()]));
    assert!(err.contains("window_secs"), "{err}");

    std::fs::write(
        &pipeline,
        "[preprocess.bandpass]\nlow = 1.0\nhigh = 100.0\n[source]\nkind = \"simulator\"\n",
    )
    .unwrap();
    let err = failure(&neurostream(&["check", pipeline.to_str().unwrap()]));
    assert!(err.contains("preprocess.bandpass.high = 100"), "{err}");

    let err = failure(&neurostream(&["info", "/nonexistent/file.edf"]));
    assert!(err.contains("/nonexistent/file.edf"), "{err}");
}

#[test]
fn every_shipped_pipeline_passes_check() {
    for entry in
        std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines"))
            .unwrap()
    {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name == "demo.toml" {
            let out = stdout(&neurostream(&["check", path.to_str().unwrap()]));
            assert!(out.contains("ok"), "{out}");
        }
    }
}

#[test]
fn listen_has_a_default_url() {
    let help = stdout(&neurostream(&["listen", "--help"]));
    assert!(help.contains("[default: ws://127.0.0.1:8765/ws]"), "{help}");
}

#[test]
fn replay_of_an_xdf_fills_the_marker_column_without_colour_codes() {
    // XDF markers have no duration: each one is the window's marker until the next starts.
    let out = Command::new(env!("CARGO_BIN_EXE_neurostream"))
        .args([
            "replay",
            "recordings/demo.xdf",
            "--pipeline",
            "pipelines/demo.toml",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .output()
        .expect("run neurostream");
    let text = stdout(&out);
    let rows: Vec<&str> = text.lines().skip(1).collect();
    let markers: Vec<&str> = rows.iter().map(|r| r.split(',').nth(1).unwrap()).collect();
    // 120 s at 160 Hz, 1 s windows every 0.25 s.
    assert_eq!(rows.len(), 1 + (120 * 160 - 160) / 40);
    let empty = markers.iter().filter(|m| m.is_empty()).count();
    assert!(
        empty * 20 < rows.len(),
        "{empty} of {} rows without a marker",
        rows.len()
    );
    assert!(
        markers.iter().all(|m| ["", "T0", "T1", "T2"].contains(m)),
        "{markers:?}"
    );
    for cue in ["T0", "T1", "T2"] {
        assert!(markers.contains(&cue), "no {cue} in the marker column");
    }
    // The marker changes with the cues: a label run is never the whole recording.
    let changes = markers.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(changes >= 10, "{changes} marker changes");
    // stderr is a pipe here: the log has no ANSI colour codes.
    let log = String::from_utf8(out.stderr).unwrap();
    assert!(log.contains("replay of recordings/demo.xdf done"), "{log}");
    assert!(
        !log.contains('\x1b'),
        "ANSI escape codes in a piped log: {log:?}"
    );
}

#[test]
fn info_summarises_the_commands_of_a_session_recording() {
    let file = temp("session.xdf");
    let _ = std::fs::remove_file(&file);
    let out = neurostream(&[
        "demo",
        "--seconds",
        "60",
        // 20× real time: as fast as possible, the recorder (bounded, never blocking the DSP
        // thread) may fall behind on a loaded machine and the run then fails, as it should.
        "--speed",
        "20",
        "--bind",
        "127.0.0.1:0",
        "--record",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&stdout(&neurostream(&[
        "info",
        file.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    let commands = json["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source_id"] == "neurostream-commands")
        .expect("a command stream");
    let total = commands["samples"].as_u64().unwrap();
    assert!(total >= 5, "{commands}");
    assert_eq!(commands["events_grouped_by"], "class");
    let counts = commands["event_counts"].as_object().unwrap();
    assert!(
        counts
            .keys()
            .all(|k| ["rest", "left", "right"].contains(&k.as_str())),
        "{counts:?}"
    );
    assert_eq!(
        counts.values().map(|v| v.as_u64().unwrap()).sum::<u64>(),
        total
    );
    let table = stdout(&neurostream(&["info", file.to_str().unwrap()]));
    assert!(table.contains(&format!("commands: {total} (")), "{table}");
    assert!(table.lines().count() < 20, "{table}");
    assert!(!table.contains("\"seq\""), "command JSON printed: {table}");
}

/// A model is refused, with both sides named, by every command that takes `--model` when the
/// pipeline's decoder kind or classes differ from the model's (before this, a CSP + LDA model
/// ran silently under a pipeline file saying `kind = "svm"`).
#[test]
fn a_model_is_refused_by_a_pipeline_with_another_decoder_or_classes() {
    let Some([r04, _, r12]) = common::imagery_runs("S007") else {
        return;
    };
    let (r04, r12) = (r04.to_str().unwrap(), r12.to_str().unwrap());
    let model = temp("refused_csp_lda.json");
    let model = model.to_str().unwrap();
    stdout(&neurostream(&[
        "train",
        "--pipeline",
        "pipelines/mi_csp_lda.toml",
        "--recording",
        r04,
        "--out",
        model,
    ]));
    // The same pipeline on the recording itself, so every command gets as far as the model.
    let lda = std::fs::read_to_string("pipelines/mi_csp_lda.toml")
        .unwrap()
        .replace("path = \"recording.edf\"", &format!("path = {r12:?}"));
    let svm = std::fs::read_to_string("pipelines/mi_csp_svm.toml")
        .unwrap()
        .replace("path = \"recording.edf\"", &format!("path = {r12:?}"));
    let renamed = lda.replace("name = \"left\"", "name = \"links\"");
    assert_ne!(renamed, lda);
    for (name, text, expected) in [
        ("svm", &svm, ["\"svm\"", "\"lda\""]),
        ("renamed", &renamed, ["\"links\"", "\"left\""]),
    ] {
        let pipeline = temp(&format!("refused_{name}.toml"));
        std::fs::write(&pipeline, text).unwrap();
        let pipeline = pipeline.to_str().unwrap();
        for command in [
            vec!["check", pipeline, "--model", model],
            vec!["replay", r12, "--pipeline", pipeline, "--model", model],
            vec!["run", "--pipeline", pipeline, "--model", model],
            vec![
                "session",
                "--pipeline",
                pipeline,
                "--model",
                model,
                "--bind",
                "127.0.0.1:0",
            ],
        ] {
            let err = failure(&neurostream(&command));
            for word in expected {
                assert!(err.contains(word), "{command:?} must name {word}: {err}");
            }
        }
    }
}
