//! DSP hot path: preprocessing chain, sliding windows and band power, checked for chunk-size
//! invariance, measured frequency response, agreement with scipy, and config error messages.

mod common;

use neurostream::features::band_power::{Band, BandPowerConfig, SpectralMethod};
use neurostream::features::window::Windower;
use neurostream::features::{FeatureExtractor, Window};
use neurostream::preprocess::{BandpassConfig, NotchConfig, PreprocessConfig, Reference};
use neurostream::stream::{ChannelInfo, Chunk, StreamInfo, ValueFormat};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn stream(labels: &[&str], rate: f64) -> StreamInfo {
    StreamInfo {
        name: "test".into(),
        stream_type: "EEG".into(),
        source_id: "dsp-test".into(),
        channels: labels.iter().map(|l| ChannelInfo::new(*l, "uV")).collect(),
        nominal_rate: rate,
        format: ValueFormat::Float32,
    }
}

/// Seeded multi-channel test signal: per-channel DC offset, alpha and beta sines, 50 Hz
/// mains shared by all channels, white noise. Timestamps start at 100 s.
fn synthetic(channels: usize, samples: usize, rate: f64, seed: u64) -> Chunk {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut data = Vec::with_capacity(channels * samples);
    for c in 0..channels {
        let dc: f64 = rng.gen_range(-500.0..500.0);
        let phase: f64 = rng.gen_range(0.0..std::f64::consts::TAU);
        for s in 0..samples {
            let t = s as f64 / rate;
            let v = dc
                + 20.0 * (std::f64::consts::TAU * 10.0 * t + phase).sin()
                + 5.0 * (std::f64::consts::TAU * (18.0 + c as f64) * t).sin()
                + 30.0 * (std::f64::consts::TAU * 50.0 * t).sin()
                + rng.gen_range(-10.0..10.0);
            data.push(v as f32);
        }
    }
    let ts = (0..samples).map(|s| 100.0 + s as f64 / rate).collect();
    Chunk::from_channel_major(channels, data, ts)
}

/// Samples `start..start + len` of `chunk` as a new chunk.
fn slice(chunk: &Chunk, start: usize, len: usize) -> Chunk {
    let data = (0..chunk.channels())
        .flat_map(|c| chunk.channel(c)[start..start + len].iter().copied())
        .collect();
    Chunk::from_channel_major(
        chunk.channels(),
        data,
        chunk.timestamps()[start..start + len].to_vec(),
    )
}

/// Feed `input` through `f` in chunks of `size`, reusing one chunk buffer, and concatenate the
/// outputs channel-major.
fn run_chunked(
    input: &Chunk,
    size: usize,
    mut f: impl FnMut(&mut Chunk),
) -> (usize, Vec<f32>, Vec<f64>) {
    let mut per_channel: Vec<Vec<f32>> = Vec::new();
    let mut ts = Vec::new();
    let mut out_channels = 0;
    let mut start = 0;
    while start < input.samples() {
        let len = size.min(input.samples() - start);
        let mut chunk = slice(input, start, len);
        f(&mut chunk);
        out_channels = chunk.channels();
        per_channel.resize(out_channels, Vec::new());
        for (c, acc) in per_channel.iter_mut().enumerate() {
            acc.extend_from_slice(chunk.channel(c));
        }
        ts.extend_from_slice(chunk.timestamps());
        start += len;
    }
    (out_channels, per_channel.concat(), ts)
}

fn full_config() -> PreprocessConfig {
    PreprocessConfig {
        channels: vec![
            "c4".into(),
            "CZ".into(),
            "Fc5.".into(),
            "oz".into(),
            "C3".into(),
        ],
        bandpass: Some(BandpassConfig {
            low: 1.0,
            high: 40.0,
            order: 4,
        }),
        notch: Some(NotchConfig {
            frequency: 50.0,
            quality: 30.0,
            harmonics: false,
        }),
        reference: Reference::Average,
        max_abs_value: None,
    }
}

/// Normalised, as `StreamInfo` holds them; the config spells them in other cases and with EDF
/// dot padding.
const LABELS: [&str; 8] = ["Fc5", "C3", "Cz", "C4", "Pz", "Oz", "T7", "T8"];

#[test]
fn chunked_preprocessing_is_identical_to_one_block() {
    let rate = 160.0;
    let info = stream(&LABELS, rate);
    let input = synthetic(LABELS.len(), 20_000, rate, 7);

    let mut reference = full_config().build(&info).unwrap();
    assert_eq!(
        reference.output_info().labels().collect::<Vec<_>>(),
        vec!["C4", "Cz", "Fc5", "Oz", "C3"]
    );
    let expected = run_chunked(&input, input.samples(), |c| reference.process(c));
    assert_eq!(expected.0, 5);
    assert_eq!(expected.2, input.timestamps());

    for size in [1, 7, 512] {
        let mut pre = full_config().build(&info).unwrap();
        let got = run_chunked(&input, size, |c| pre.process(c));
        assert_eq!(got.0, expected.0, "chunk size {size}: channel count");
        assert_eq!(got.2, expected.2, "chunk size {size}: timestamps");
        // Same operations in the same order per sample: bit-identical, not just close.
        assert!(got.1 == expected.1, "chunk size {size}: samples differ");
    }

    // reset() returns to the initial state: the same input gives the same output again.
    reference.reset();
    let again = run_chunked(&input, 333, |c| reference.process(c));
    assert!(again.1 == expected.1);
}

/// Steady-state gain in dB of a single-channel chain at frequency `f`: drive it with a 20 s
/// unit sine and project the last 10 s (an integer number of periods for integer `f`) onto
/// sin/cos at `f`.
fn gain_db(config: &PreprocessConfig, rate: f64, f: f64) -> f64 {
    let info = stream(&["Cz"], rate);
    let mut pre = config.build(&info).unwrap();
    let n = (20.0 * rate) as usize;
    let data = (0..n)
        .map(|s| (std::f64::consts::TAU * f * s as f64 / rate).sin() as f32)
        .collect();
    let mut chunk = Chunk::from_channel_major(1, data, vec![0.0; n]);
    pre.process(&mut chunk);
    let settled = n / 2;
    let (mut si, mut co) = (0.0, 0.0);
    for (s, &y) in chunk.channel(0).iter().enumerate().skip(settled) {
        let phase = std::f64::consts::TAU * f * s as f64 / rate;
        si += f64::from(y) * phase.sin();
        co += f64::from(y) * phase.cos();
    }
    let amplitude = 2.0 * (si * si + co * co).sqrt() / (n - settled) as f64;
    20.0 * amplitude.log10()
}

fn bandpass(low: f64, high: f64, order: usize) -> PreprocessConfig {
    PreprocessConfig {
        bandpass: Some(BandpassConfig { low, high, order }),
        ..PreprocessConfig::default()
    }
}

#[test]
fn bandpass_8_30_frequency_response() {
    let cfg = bandpass(8.0, 30.0, 4);
    // Pass band: at least half an octave inside both edges, where an order-4 Butterworth is
    // within ~0.2 dB of unity.
    for f in [12.0, 16.0, 20.0] {
        let g = gain_db(&cfg, 160.0, f);
        assert!(g.abs() < 0.5, "8-30 Hz band-pass at {f} Hz: {g:.3} dB");
    }
    // Butterworth: -3 dB at each cut-off.
    for f in [8.0, 30.0] {
        let g = gain_db(&cfg, 160.0, f);
        assert!(
            (g + 3.01).abs() < 0.3,
            "8-30 Hz band-pass at cut-off {f} Hz: {g:.3} dB"
        );
    }
    // Stop band: two octaves below / one above.
    for f in [2.0, 60.0] {
        let g = gain_db(&cfg, 160.0, f);
        assert!(g < -30.0, "8-30 Hz band-pass at {f} Hz: {g:.3} dB");
    }
}

#[test]
fn bandpass_1_40_frequency_response() {
    let cfg = bandpass(1.0, 40.0, 4);
    for f in [4.0, 10.0, 20.0, 25.0] {
        let g = gain_db(&cfg, 160.0, f);
        assert!(g.abs() < 0.5, "1-40 Hz band-pass at {f} Hz: {g:.3} dB");
    }
    let g = gain_db(&cfg, 160.0, 70.0);
    assert!(g < -30.0, "1-40 Hz band-pass at 70 Hz: {g:.3} dB");
}

#[test]
fn notch_50_hz_frequency_response() {
    for rate in [250.0, 500.0] {
        let cfg = PreprocessConfig {
            notch: Some(NotchConfig {
                frequency: 50.0,
                quality: 30.0,
                harmonics: false,
            }),
            ..PreprocessConfig::default()
        };
        let g = gain_db(&cfg, rate, 50.0);
        assert!(
            g < -40.0,
            "50 Hz notch at {rate} Hz sampling: {g:.2} dB at 50 Hz"
        );
        // Q 30 means a ~1.7 Hz wide notch: 10 Hz away the signal is untouched.
        for f in [40.0, 60.0] {
            let g = gain_db(&cfg, rate, f);
            assert!(
                g.abs() < 0.5,
                "50 Hz notch at {rate} Hz sampling: {g:.3} dB at {f} Hz"
            );
        }
    }
}

#[test]
fn notch_harmonics_remove_100_hz() {
    let cfg = PreprocessConfig {
        notch: Some(NotchConfig {
            frequency: 50.0,
            quality: 30.0,
            harmonics: true,
        }),
        ..PreprocessConfig::default()
    };
    assert!(gain_db(&cfg, 500.0, 100.0) < -40.0);
    assert!(gain_db(&cfg, 500.0, 150.0) < -40.0);
    assert!(gain_db(&cfg, 500.0, 75.0).abs() < 0.5);
}

/// Every window (data and end timestamp) emitted for `input` fed in chunks of `size`.
fn windows(input: &Chunk, length: usize, hop: usize, size: usize) -> Vec<(Vec<f32>, f64)> {
    let mut w = Windower::new(input.channels(), length, hop);
    let mut out = Vec::new();
    let mut start = 0;
    while start < input.samples() {
        let len = size.min(input.samples() - start);
        w.push(&slice(input, start, len), 160.0, |win| {
            assert_eq!(
                (win.channels, win.samples, win.rate),
                (input.channels(), length, 160.0)
            );
            out.push((win.data.to_vec(), win.end_timestamp));
        });
        start += len;
    }
    out
}

#[test]
fn windower_is_chunk_size_invariant() {
    let n = 1000;
    let input = synthetic(3, n, 160.0, 11);
    let (length, hop) = (160, 16);
    let expected = windows(&input, length, hop, n);
    assert_eq!(expected.len(), 1 + (n - length) / hop);
    // First window: samples 0..160; its end timestamp is sample 159's.
    assert_eq!(&expected[0].0[..length], &input.channel(0)[..length]);
    assert_eq!(&expected[0].0[2 * length..], &input.channel(2)[..length]);
    assert_eq!(expected[0].1, input.timestamps()[length - 1]);
    // Window i ends at sample length - 1 + i * hop.
    for (i, (data, end)) in expected.iter().enumerate() {
        let last = length - 1 + i * hop;
        assert_eq!(*end, input.timestamps()[last]);
        assert_eq!(data[length - 1], input.channel(0)[last]);
        assert_eq!(data[0], input.channel(0)[last + 1 - length]);
    }
    for size in [1, 7, 16, 33, 159, 161, 512] {
        assert_eq!(
            windows(&input, length, hop, size),
            expected,
            "chunk size {size}"
        );
    }
}

#[test]
fn windower_reset_starts_over() {
    let input = synthetic(2, 400, 160.0, 3);
    let mut w = Windower::new(2, 160, 16);
    let mut count = 0;
    w.push(&slice(&input, 0, 150), 160.0, |_| count += 1);
    w.reset();
    w.push(&slice(&input, 150, 159), 160.0, |_| count += 1);
    assert_eq!(count, 0, "159 samples after reset are not a window yet");
    w.push(&slice(&input, 309, 1), 160.0, |win| {
        count += 1;
        assert_eq!(win.channel(0), &input.channel(0)[150..310]);
    });
    assert_eq!(count, 1);
}

fn window_of(data: &[f32], rate: f64) -> Window<'_> {
    Window {
        data,
        channels: 1,
        samples: data.len(),
        rate,
        end_timestamp: 0.0,
        slide: None,
    }
}

#[test]
fn band_power_matches_scipy_welch_fixture() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/welch_reference.json"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let rate = doc["rate"].as_f64().unwrap();
    let bands: Vec<Band> = serde_json::from_value(doc["bands"].clone()).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 12);
    let mut worst: f64 = 0.0;
    for case in cases {
        let samples: Vec<f32> = case["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let label = case["channel"].as_str().unwrap().to_string();
        for (method, key) in [
            (SpectralMethod::Welch, "powers"),
            (SpectralMethod::Periodogram, "periodogram_powers"),
        ] {
            let cfg = BandPowerConfig {
                method,
                segment_seconds: doc["segment_seconds"].as_f64().unwrap(),
                overlap: doc["overlap"].as_f64().unwrap(),
                log: false,
                bands: bands.clone(),
            };
            let mut bp = cfg
                .build(std::slice::from_ref(&label), rate, samples.len())
                .unwrap();
            if method == SpectralMethod::Welch {
                assert_eq!(
                    bp.segment_samples() as u64,
                    doc["nperseg"].as_u64().unwrap()
                );
            }
            let mut out = vec![0.0f32; bands.len()];
            bp.extract(&window_of(&samples, rate), &mut out);
            for (band, &got) in bands.iter().zip(&out) {
                let want = case[key][&band.name].as_f64().unwrap();
                let rel = (f64::from(got) - want).abs() / want;
                worst = worst.max(rel);
                assert!(
                    rel < 1e-3,
                    "{label} @ {} {method:?} {}: got {got}, scipy {want} (rel {rel:.2e})",
                    case["start_sample"],
                    band.name
                );
            }
            // log = true is ln of the same numbers.
            let mut bp_log = BandPowerConfig { log: true, ..cfg }
                .build(std::slice::from_ref(&label), rate, samples.len())
                .unwrap();
            let mut logs = vec![0.0f32; bands.len()];
            bp_log.extract(&window_of(&samples, rate), &mut logs);
            for (l, p) in logs.iter().zip(&out) {
                assert!((l - p.ln()).abs() < 1e-5, "ln: {l} vs ln({p})");
            }
        }
    }
    eprintln!("worst relative deviation from scipy: {worst:.2e}");
}

#[test]
fn ten_hz_sine_is_mu_not_beta() {
    let rate = 160.0;
    let x: Vec<f32> = (0..160)
        .map(|s| (10.0 * (std::f64::consts::TAU * 10.0 * s as f64 / rate).sin()) as f32)
        .collect();
    let mut bp = BandPowerConfig {
        log: false,
        ..BandPowerConfig::default()
    }
    .build(&["C3".to_string()], rate, 160)
    .unwrap();
    assert_eq!(bp.names(), &["C3:mu".to_string(), "C3:beta".to_string()]);
    let mut out = [0.0f32; 2];
    bp.extract(&window_of(&x, rate), &mut out);
    let (mu, beta) = (out[0], out[1]);
    // Hann leakage from 10 Hz reaches 12 Hz at most (bins are 2 Hz apart): beta gets nothing
    // to speak of. mu holds (about) the whole sine power A²/2 = 50.
    assert!(
        mu > 1e6 * beta.max(f32::MIN_POSITIVE),
        "mu {mu}, beta {beta}"
    );
    assert!((mu - 50.0).abs() / 50.0 < 0.1, "mu {mu}");

    // The full PSD helper peaks at the 10 Hz bin.
    let mut psd = vec![0.0; bp.bins()];
    bp.psd(&x, &mut psd);
    let peak = (0..psd.len())
        .max_by(|&a, &b| psd[a].total_cmp(&psd[b]))
        .unwrap();
    assert_eq!(bp.bin_frequency(peak), 10.0);
}

#[test]
fn band_power_names_are_channel_major() {
    let labels = ["C3".to_string(), "C4".to_string()];
    let bp = BandPowerConfig::default()
        .build(&labels, 160.0, 160)
        .unwrap();
    assert_eq!(bp.names(), &["C3:mu", "C3:beta", "C4:mu", "C4:beta"]);
}

fn err_text<T: std::fmt::Debug>(r: neurostream::Result<T>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn unknown_keys_are_rejected() {
    let e = toml::from_str::<PreprocessConfig>("channels = [\"C3\"]\nnotchh = 50\n").unwrap_err();
    assert!(e.to_string().contains("notchh"), "{e}");
    let e = toml::from_str::<PreprocessConfig>("[bandpass]\nlow = 1\nhigh = 40\nordr = 4\n")
        .unwrap_err();
    assert!(e.to_string().contains("ordr"), "{e}");
    let e = toml::from_str::<BandPowerConfig>("segment_seconds = 0.5\nwindow = \"hann\"\n")
        .unwrap_err();
    assert!(e.to_string().contains("window"), "{e}");
    let e = toml::from_str::<BandPowerConfig>("[[bands]]\nname = \"mu\"\nlow = 8\nhi = 12\n")
        .unwrap_err();
    assert!(e.to_string().contains("hi"), "{e}");
    let e = toml::from_str::<PreprocessConfig>("reference = \"median\"\n").unwrap_err();
    assert!(e.to_string().contains("median"), "{e}");
}

#[test]
fn toml_defaults_and_integers() {
    let cfg: PreprocessConfig = toml::from_str(
        "channels = [\"C3\", \"Cz\"]\nreference = \"average\"\n[bandpass]\nlow = 1\nhigh = 40\n\
         [notch]\nfrequency = 50\n",
    )
    .unwrap();
    assert_eq!(cfg.bandpass.as_ref().unwrap().order, 4);
    assert_eq!(cfg.notch.as_ref().unwrap().quality, 30.0);
    assert_eq!(cfg.reference, Reference::Average);
    let bp: BandPowerConfig = toml::from_str("").unwrap();
    assert_eq!(bp, BandPowerConfig::default());
    assert_eq!(bp.method, SpectralMethod::Welch);
    assert!(bp.log);
}

#[test]
fn config_errors_name_key_and_value() {
    let info = stream(&LABELS, 160.0);

    let e = err_text(bandpass(1.0, 90.0, 4).build(&info));
    assert!(e.contains("preprocess.bandpass.high = 90"), "{e}");
    assert!(
        e.contains("below Nyquist, 80 Hz for a 160 Hz stream"),
        "{e}"
    );

    let e = err_text(bandpass(1.0, 40.0, 5).build(&info));
    assert!(e.contains("preprocess.bandpass.order = 5"), "{e}");
    let e = err_text(bandpass(1.0, 40.0, 10).build(&info));
    assert!(e.contains("preprocess.bandpass.order = 10"), "{e}");
    let e = err_text(bandpass(30.0, 8.0, 4).build(&info));
    assert!(
        e.contains("preprocess.bandpass.high = 8") && e.contains("preprocess.bandpass.low (30)"),
        "{e}"
    );

    let mut cfg = PreprocessConfig {
        notch: Some(NotchConfig {
            frequency: 55.0,
            quality: 30.0,
            harmonics: false,
        }),
        ..PreprocessConfig::default()
    };
    let e = err_text(cfg.build(&info));
    assert!(
        e.contains("preprocess.notch.frequency = 55") && e.contains("50 or 60"),
        "{e}"
    );
    cfg.notch.as_mut().unwrap().frequency = 60.0;
    let e = err_text(cfg.build(&stream(&["C3"], 100.0)));
    assert!(
        e.contains("preprocess.notch.frequency = 60") && e.contains("Nyquist"),
        "{e}"
    );

    let cfg = PreprocessConfig {
        channels: vec!["C3".into(), "Xyz".into()],
        ..PreprocessConfig::default()
    };
    let e = err_text(cfg.build(&info));
    assert!(e.contains("preprocess.channels[1] = \"Xyz\""), "{e}");
    assert!(
        e.contains("available: Fc5, C3, Cz, C4, Pz, Oz, T7, T8"),
        "{e}"
    );

    let cfg = PreprocessConfig {
        channels: vec!["C3".into(), "c3".into()],
        ..PreprocessConfig::default()
    };
    assert!(err_text(cfg.build(&info)).contains("preprocess.channels[1]"));

    let bp = BandPowerConfig {
        bands: vec![Band::new("mu", 8.0, 12.0), Band::new("gamma", 30.0, 90.0)],
        ..BandPowerConfig::default()
    };
    let e = err_text(bp.build(&["C3".to_string()], 160.0, 160));
    assert!(e.contains("features.band_power.bands[1].high = 90"), "{e}");
    let bp = BandPowerConfig {
        bands: vec![Band::new("mu", 8.0, 12.0), Band::new("mu", 13.0, 30.0)],
        ..BandPowerConfig::default()
    };
    let e = err_text(bp.build(&["C3".to_string()], 160.0, 160));
    assert!(
        e.contains("features.band_power.bands[1].name = \"mu\""),
        "{e}"
    );
    let bp = BandPowerConfig {
        segment_seconds: 2.0,
        ..BandPowerConfig::default()
    };
    let e = err_text(bp.build(&["C3".to_string()], 160.0, 160));
    assert!(e.contains("features.band_power.segment_seconds = 2"), "{e}");
}

/// Throughput of the hot path at the benchmark's shape: 64 channels, 160 Hz, band-pass 1–40
/// and notch 50, 1 s window, 0.1 s hop, Welch band power. Informational; run with
/// `cargo test --release --test dsp -- --ignored --nocapture throughput`.
#[test]
#[ignore]
fn throughput() {
    let labels: Vec<String> = (0..64).map(|c| format!("E{c}")).collect();
    let label_refs: Vec<&str> = labels.iter().map(|s| s.as_str()).collect();
    let rate = 160.0;
    let info = stream(&label_refs, rate);
    let mut pre = PreprocessConfig {
        bandpass: Some(BandpassConfig {
            low: 1.0,
            high: 40.0,
            order: 4,
        }),
        notch: Some(NotchConfig {
            frequency: 50.0,
            quality: 30.0,
            harmonics: false,
        }),
        ..PreprocessConfig::default()
    }
    .build(&info)
    .unwrap();
    let mut windower = Windower::new(64, 160, 16);
    let mut bp = BandPowerConfig::default()
        .build(&labels, rate, 160)
        .unwrap();
    let mut features = vec![0.0f32; bp.names().len()];
    let input = synthetic(64, 16 * 160, rate, 1);
    let chunks: Vec<Chunk> = (0..input.samples() / 16)
        .map(|i| slice(&input, i * 16, 16))
        .collect();
    let mut work = Chunk::empty(64);
    let mut total = 0usize;
    let mut checksum = 0.0f32;
    let started = std::time::Instant::now();
    for _ in 0..5 {
        for chunk in &chunks {
            work.clone_from(chunk);
            pre.process(&mut work);
            windower.push(&work, rate, |w| {
                bp.extract(w, &mut features);
                checksum += features[0];
            });
            total += 64 * work.samples();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{total} channel-samples in {secs:.3} s = {:.1} M channel-samples/s (checksum {checksum})",
        total as f64 / secs / 1e6
    );
}
