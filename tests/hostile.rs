//! Hostile inputs through the built binary, as an attacker would hand them over: recordings
//! whose headers claim absurd rates, channel counts or sizes, malformed model files, and a
//! recording torn mid-chunk. Every refusal must be a clear error (exit 1 or 2, the file and the
//! field named), never a panic (exit 101) or an abort, and the reads run under a 1 GiB
//! address-space cap so that a header-driven allocation fails the test instead of the machine.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Address-space cap for every run: far below what an absurd header would allocate, well above
/// what the binary needs for the small files here.
const MEMORY_CAP: &str = "--as=1073741824";

/// The shipped recording (16 channels at 160 Hz, left/right cues) every model is trained on.
const DEMO: &str = "recordings/demo.xdf";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `neurostream ARGS` under the memory cap.
fn capped(args: &[&str]) -> Output {
    Command::new("prlimit")
        .arg(MEMORY_CAP)
        .arg(env!("CARGO_BIN_EXE_neurostream"))
        .args(args)
        .current_dir(root())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run prlimit (util-linux) with neurostream")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("neurostream-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Asserts a refusal: exit code 1 or 2 (not 101 = panic, not a signal), and stderr containing
/// every one of `needles`. Returns stderr.
fn refused(output: &Output, what: &str, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        matches!(output.status.code(), Some(1 | 2)),
        "{what}: expected exit 1 or 2, got {:?}\nstderr: {stderr}",
        output.status
    );
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{what}: no {needle:?} in: {stderr}"
        );
    }
    stderr
}

fn succeeded(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what}: {:?}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

// ---------------------------------------------------------------------------------------
// Hostile recordings.

fn field(out: &mut Vec<u8>, text: &str, len: usize) {
    let mut bytes = text.as_bytes().to_vec();
    bytes.resize(len, b' ');
    out.extend_from_slice(&bytes);
}

/// A one-signal EDF ("C3", 16-bit) with `records` declared records of `spr` samples each, a
/// record duration of `duration` (header text), and `data` bytes of samples.
fn edf(duration: &str, spr: &str, records: &str, data: usize) -> Vec<u8> {
    let mut out = Vec::new();
    field(&mut out, "0", 8);
    field(&mut out, "hostile", 80);
    field(&mut out, "test", 80);
    field(&mut out, "01.01.26", 8);
    field(&mut out, "00.00.00", 8);
    field(&mut out, "512", 8);
    field(&mut out, "", 44);
    field(&mut out, records, 8);
    field(&mut out, duration, 8);
    field(&mut out, "1", 4);
    for (text, len) in [
        ("C3", 16),
        ("", 80),
        ("uV", 8),
        ("-100", 8),
        ("100", 8),
        ("-32768", 8),
        ("32767", 8),
        ("", 80),
        (spr, 8),
        ("", 32),
    ] {
        field(&mut out, text, len);
    }
    out.resize(out.len() + data, 0);
    out
}

fn xdf_chunk(out: &mut Vec<u8>, tag: u16, content: &[u8]) {
    out.push(4);
    out.extend_from_slice(&(content.len() as u32 + 2).to_le_bytes());
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(content);
}

/// An XDF with one stream header per `(channel_count, nominal_srate)` and no samples.
fn xdf(streams: &[(&str, &str)]) -> Vec<u8> {
    let mut out = b"XDF:".to_vec();
    xdf_chunk(
        &mut out,
        1,
        b"<?xml version=\"1.0\"?><info><version>1.0</version></info>",
    );
    for (id, (channels, rate)) in streams.iter().enumerate() {
        let mut content = (id as u32).to_le_bytes().to_vec();
        content.extend_from_slice(
            format!(
                "<info><name>s{id}</name><type>EEG</type><channel_count>{channels}</channel_count>\
                 <nominal_srate>{rate}</nominal_srate><channel_format>float32</channel_format></info>"
            )
            .as_bytes(),
        );
        xdf_chunk(&mut out, 2, &content);
    }
    out
}

#[test]
fn hostile_headers_are_refused_under_a_memory_cap() {
    let big = "4194304";
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        // Record durations that make 1e9 and 1e300 Hz from 1 sample per record.
        (
            "rate-1e-9.edf",
            edf("1e-9", "1", "1", 2),
            vec!["duration of a data record", "allowed range"],
        ),
        (
            "rate-1e-300.edf",
            edf("1e-300", "1", "1", 2),
            vec!["duration of a data record", "allowed range"],
        ),
        // 99 999 999 samples per record at a plausible rate, 99 999 999 records, no data.
        (
            "size.edf",
            edf("1000", "99999999", "99999999", 0),
            vec!["file size is", "truncated"],
        ),
        (
            "rate-1e300.xdf",
            xdf(&[("1", "1e300")]),
            vec!["nominal_srate", "allowed range"],
        ),
        // ~1 KB that declares 4 × 4 194 304 channels.
        (
            "channels.xdf",
            xdf(&[(big, "100"), (big, "100"), (big, "100"), (big, "100")]),
            vec!["channel_count", "more than this file can describe"],
        ),
    ];
    for (name, bytes, needles) in &cases {
        let path = scratch(name);
        std::fs::write(&path, bytes).unwrap();
        let p = path.to_str().unwrap();
        let mut needles = needles.clone();
        needles.push(name);
        for args in [
            vec!["info", p],
            vec!["check", "pipelines/demo.toml", "--recording", p],
            vec!["replay", p],
        ] {
            refused(&capped(&args), &format!("{args:?}"), &needles);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Malformed models.

fn train(pipeline: &str, out: &Path) -> Value {
    succeeded(
        &capped(&[
            "train",
            "--pipeline",
            pipeline,
            "--recording",
            DEMO,
            "--out",
            out.to_str().unwrap(),
        ]),
        pipeline,
    );
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

/// The array at `pointer` (JSON pointer) of `model`, changed by `change`.
fn with_array(model: &Value, pointer: &str, change: impl FnOnce(&mut Vec<Value>)) -> Value {
    let mut model = model.clone();
    let array = model
        .pointer_mut(pointer)
        .and_then(Value::as_array_mut)
        .unwrap_or_else(|| panic!("no array at {pointer}"));
    change(array);
    model
}

/// Every way of breaking the array at `pointer`: one short, doubled, empty, 1e308, NaN.
fn broken_arrays(model: &Value, pointer: &str) -> Vec<(String, String)> {
    let text = |v: &Value| serde_json::to_string(v).unwrap();
    let huge = with_array(model, pointer, |a| a[0] = Value::from(1e308));
    let mut cases = vec![
        (
            format!("{pointer} one short"),
            text(&with_array(model, pointer, |a| {
                a.pop();
            })),
        ),
        (
            format!("{pointer} doubled"),
            text(&with_array(model, pointer, |a| {
                let copy = a.clone();
                a.extend(copy);
            })),
        ),
        (
            format!("{pointer} empty"),
            text(&with_array(model, pointer, Vec::clear)),
        ),
        (format!("{pointer} 1e308"), text(&huge)),
    ];
    // JSON has no NaN; Python's json module writes the bare token, so that is what a hostile
    // file would hold.
    let nan = text(&huge).replacen("1e308", "NaN", 1);
    cases.push((format!("{pointer} NaN"), nan));
    cases
}

fn assert_model_refused(pipeline: &str, name: &str, json: &str, tag: usize) {
    let path = scratch(&format!("model-{tag}.json"));
    std::fs::write(&path, json).unwrap();
    let m = path.to_str().unwrap();
    let needles = ["model", m];
    refused(
        &capped(&["check", pipeline, "--recording", DEMO, "--model", m]),
        &format!("check --model ({name})"),
        &needles,
    );
    refused(
        &capped(&["replay", DEMO, "-p", pipeline, "-m", m]),
        &format!("replay -m ({name})"),
        &needles,
    );
}

#[test]
fn malformed_models_are_refused_by_check_and_replay() {
    let lda = train("pipelines/demo.toml", &scratch("lda.json"));
    let svm = train("pipelines/mi_tangent_svm.toml", &scratch("svm.json"));
    let mlp = train("pipelines/mi_tangent_mlp.toml", &scratch("mlp.json"));
    let csp = train("pipelines/mi_csp_lda.toml", &scratch("csp.json"));

    let mut cases: Vec<(&str, String, String)> = Vec::new();
    let mut add = |pipeline: &'static str, model: &Value, pointers: &[&str]| {
        for pointer in pointers {
            for (name, json) in broken_arrays(model, pointer) {
                cases.push((pipeline, name, json));
            }
        }
    };
    add(
        "pipelines/demo.toml",
        &lda,
        &[
            "/decoder/coef",
            "/decoder/means",
            "/decoder/intercept",
            "/decoder/priors",
        ],
    );
    add(
        "pipelines/mi_tangent_svm.toml",
        &svm,
        &["/decoder/weights", "/decoder/bias", "/decoder/scale"],
    );
    add(
        "pipelines/mi_tangent_mlp.toml",
        &mlp,
        &["/decoder/params", "/decoder/normalizer/mean"],
    );
    add(
        "pipelines/mi_csp_lda.toml",
        &csp,
        &[
            "/extractor/filters/0",
            "/extractor/filters",
            "/extractor/eigenvalues",
        ],
    );
    // A decoder of the wrong kind: LDA fields under the SVM tag, and an unknown kind.
    for kind in ["svm", "forest"] {
        let mut wrong = lda.clone();
        wrong["decoder"]["kind"] = Value::from(kind);
        cases.push((
            "pipelines/demo.toml",
            format!("decoder kind {kind}"),
            wrong.to_string(),
        ));
    }
    // A valid model for the wrong feature dimension: n_features one short with matching arrays.
    let mut narrow = lda.clone();
    let d = narrow["decoder"]["n_features"].as_u64().unwrap() as usize;
    narrow["decoder"]["n_features"] = Value::from(d - 1);
    for key in ["means", "coef"] {
        let rows: Vec<Value> = narrow["decoder"][key]
            .as_array()
            .unwrap()
            .chunks(d)
            .flat_map(|row| row[..d - 1].to_vec())
            .collect();
        narrow["decoder"][key] = Value::from(rows);
    }
    cases.push((
        "pipelines/demo.toml",
        "n_features one short".into(),
        narrow.to_string(),
    ));

    for (tag, (pipeline, name, json)) in cases.iter().enumerate() {
        assert_model_refused(pipeline, name, json, tag);
    }

    // The untouched models are accepted: the refusals above are about the damage.
    for (pipeline, model) in [
        ("pipelines/demo.toml", "lda.json"),
        ("pipelines/mi_tangent_svm.toml", "svm.json"),
        ("pipelines/mi_tangent_mlp.toml", "mlp.json"),
        ("pipelines/mi_csp_lda.toml", "csp.json"),
    ] {
        let m = scratch(model);
        succeeded(
            &capped(&[
                "check",
                pipeline,
                "--recording",
                DEMO,
                "--model",
                m.to_str().unwrap(),
            ]),
            model,
        );
    }
}

// ---------------------------------------------------------------------------------------
// A recording torn mid-chunk.

/// Byte offsets where the chunks of an XDF file start, after the magic.
fn chunk_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut pos = 4;
    while pos < bytes.len() {
        starts.push(pos);
        let (len, header) = match bytes[pos] {
            1 => (bytes[pos + 1] as usize, 2),
            4 => (
                u32::from_le_bytes(bytes[pos + 1..pos + 5].try_into().unwrap()) as usize,
                5,
            ),
            8 => (
                u64::from_le_bytes(bytes[pos + 1..pos + 9].try_into().unwrap()) as usize,
                9,
            ),
            other => panic!("length byte {other} at {pos}"),
        };
        pos += header + len;
    }
    starts
}

fn samples_of(info_json: &str) -> Vec<u64> {
    let doc: Value = serde_json::from_str(info_json).unwrap();
    doc["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["samples"].as_u64().unwrap())
        .collect()
}

#[test]
fn torn_recording_is_read_up_to_its_last_whole_chunk() {
    let bytes = std::fs::read(root().join("recordings/demo.xdf")).unwrap();
    let starts = chunk_starts(&bytes);
    // Cut in the middle of a chunk two thirds into the file, as a full disk would.
    let k = starts.len() * 2 / 3;
    let (start, next) = (starts[k], starts[k + 1]);
    let cut = start + (next - start) / 2;
    let torn = scratch("torn.xdf");
    std::fs::write(&torn, &bytes[..cut]).unwrap();
    let whole = scratch("whole.xdf");
    std::fs::write(&whole, &bytes[..start]).unwrap();
    let (torn, whole) = (torn.to_str().unwrap(), whole.to_str().unwrap());

    let table = succeeded(&capped(&["info", torn]), "info on the torn file");
    let dropped = cut - start;
    assert!(
        table.contains(&format!(
            "torn tail: {dropped} bytes after the last whole chunk ignored"
        )),
        "{table}"
    );
    // Exactly what the file up to its last whole chunk holds, and less than the whole file.
    let torn_samples = samples_of(&succeeded(
        &capped(&["info", torn, "--json"]),
        "info --json",
    ));
    let whole_samples = samples_of(&succeeded(
        &capped(&["info", whole, "--json"]),
        "info --json",
    ));
    let full = root().join("recordings/demo.xdf");
    let full_samples = samples_of(&succeeded(
        &capped(&["info", full.to_str().unwrap(), "--json"]),
        "info --json",
    ));
    assert_eq!(torn_samples, whole_samples);
    assert!(
        torn_samples[0] > 0 && torn_samples[0] < full_samples[0],
        "{torn_samples:?}"
    );

    // replay runs on it, with as many windows as on the file cut at the chunk boundary.
    let torn_rows = succeeded(&capped(&["replay", torn]), "replay on the torn file");
    let whole_rows = succeeded(&capped(&["replay", whole]), "replay on the cut file");
    assert!(torn_rows.lines().count() > 1);
    assert_eq!(torn_rows, whole_rows);
}

/// `demo.xdf` with one more marker stream holding `count` `T1` cues spread over 1..110 s.
fn flooded_with_cues(count: usize) -> Vec<u8> {
    let mut out = std::fs::read(root().join("recordings/demo.xdf")).unwrap();
    let id = 77u32;
    let mut header = id.to_le_bytes().to_vec();
    header.extend_from_slice(
        b"<info><name>flood</name><type>Markers</type><channel_count>1</channel_count>\
          <nominal_srate>0</nominal_srate><channel_format>string</channel_format></info>",
    );
    xdf_chunk(&mut out, 2, &header);
    let mut samples = id.to_le_bytes().to_vec();
    samples.push(4);
    samples.extend_from_slice(&(count as u32).to_le_bytes());
    for k in 0..count {
        samples.push(8);
        let onset = 1.0 + 109.0 * k as f64 / count as f64;
        samples.extend_from_slice(&onset.to_le_bytes());
        samples.extend_from_slice(&[1, 2]);
        samples.extend_from_slice(b"T1");
    }
    xdf_chunk(&mut out, 3, &samples);
    out
}

#[test]
fn a_flood_of_cue_markers_is_refused_under_a_memory_cap() {
    // 1,000,000 cues (13 MB): cutting one 3-channel epoch per cue would take 1.8 GiB.
    let path = scratch("cue-flood.xdf");
    std::fs::write(&path, flooded_with_cues(1_000_000)).unwrap();
    let p = path.to_str().unwrap();
    let out = scratch("cue-flood.model.json");
    let o = out.to_str().unwrap();
    for args in [
        vec![
            "train",
            "--pipeline",
            "pipelines/demo.toml",
            "--recording",
            p,
            "--out",
            o,
        ],
        vec![
            "evaluate",
            "--pipeline",
            "pipelines/demo.toml",
            "--recording",
            p,
        ],
    ] {
        refused(
            &capped(&args),
            &format!("{args:?}"),
            &[
                "1000029 labelled cues",
                "times over",
                "check the marker stream",
            ],
        );
    }
    assert!(!out.exists(), "no model from a refused recording");
    // train names the file.
    let stderr = refused(
        &capped(&["train", "-p", "pipelines/demo.toml", "-r", p, "-o", o]),
        "train",
        &["cue-flood.xdf"],
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The markers themselves are read (info lists them) within the cap.
    let table = succeeded(&capped(&["info", p]), "info on the flooded file");
    assert!(table.contains("1000000"), "{table}");
}
