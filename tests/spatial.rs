//! Spatial feature extractors (CSP, tangent space) and the linear algebra under them:
//! agreement with scikit-learn / pyRiemann / MNE reference values
//! (`tests/fixtures/spatial_reference.json`, from `scripts/spatial_reference.py`), behaviour on
//! a simulated lateralised ERD problem, online re-centring, errors, serialization, and an
//! ignored timing test (`cargo test --release --test spatial -- --ignored --nocapture`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

mod common;

use neurostream::features::csp::{Csp, CspConfig, Shrinkage};
use neurostream::features::tangent_space::{TangentSpace, TangentSpaceConfig};
use neurostream::features::{FeatureExtractor, TrainableExtractor, Window};
use neurostream::linalg::{self, Mat};
use neurostream::Error;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

// ---------------------------------------------------------------------------------------------
// Allocation counter (per thread, so parallel tests do not disturb each other's counts).

struct CountingAlloc;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn allocations() -> usize {
    ALLOCS.with(|c| c.get())
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn window(data: &[f32], channels: usize) -> Window<'_> {
    Window {
        data,
        channels,
        samples: data.len() / channels,
        rate: 160.0,
        end_timestamp: 0.0,
        slide: None,
    }
}

fn windows_of(epochs: &[Vec<f32>], channels: usize) -> Vec<Window<'_>> {
    epochs.iter().map(|e| window(e, channels)).collect()
}

fn extract_all(fx: &mut dyn FeatureExtractor, windows: &[Window<'_>]) -> Vec<Vec<f32>> {
    windows
        .iter()
        .map(|w| {
            let mut out = vec![0.0; fx.names().len()];
            fx.extract(w, &mut out);
            out
        })
        .collect()
}

fn mat_from_json(v: &serde_json::Value) -> Mat {
    let rows: Vec<Vec<f64>> = serde_json::from_value(v.clone()).unwrap();
    let n = rows.len();
    Mat::from_fn(n, rows[0].len(), |i, j| rows[i][j])
}

/// max |a − b| / max |b|.
fn rel_err(a: &Mat, b: &Mat) -> f64 {
    (a - b).amax() / b.amax()
}

struct Reference {
    json: serde_json::Value,
    channels: usize,
    epochs: Vec<Vec<f32>>,
    labels: Vec<usize>,
}

fn reference() -> Reference {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/spatial_reference.json"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let channels = json["channels"].as_u64().unwrap() as usize;
    let raw: Vec<Vec<Vec<f64>>> = serde_json::from_value(json["epochs"].clone()).unwrap();
    // The generator writes small integers, exact in f32.
    let epochs = raw
        .iter()
        .map(|e| e.iter().flatten().map(|&v| v as f32).collect())
        .collect();
    let labels = serde_json::from_value(json["labels"].clone()).unwrap();
    Reference {
        json,
        channels,
        epochs,
        labels,
    }
}

// ---------------------------------------------------------------------------------------------
// Agreement with the reference stack.

#[test]
fn oas_covariance_matches_sklearn() {
    let r = reference();
    let want: Vec<Mat> = r.json["oas_covariances"]
        .as_array()
        .unwrap()
        .iter()
        .map(mat_from_json)
        .collect();
    let shrink: Vec<f64> = serde_json::from_value(r.json["oas_shrinkages"].clone()).unwrap();
    let mut ws = linalg::CovWorkspace::new();
    let mut worst = 0.0f64;
    for (i, e) in r.epochs.iter().enumerate() {
        let mut c = Mat::zeros(r.channels, r.channels);
        let s = ws.covariance(
            e,
            r.channels,
            e.len() / r.channels,
            true,
            Shrinkage::Oas,
            &mut c,
        );
        assert!(
            (s - shrink[i]).abs() <= 1e-9 * shrink[i].abs(),
            "shrinkage {s} vs {}",
            shrink[i]
        );
        worst = worst.max(rel_err(&c, &want[i]));
    }
    eprintln!("OAS covariance: max relative error vs sklearn {worst:.2e}");
    assert!(worst <= 1e-9, "OAS relative error {worst:e}");
}

#[test]
fn riemann_mean_and_matrix_functions_match_pyriemann() {
    let r = reference();
    let covs: Vec<Mat> = r.json["oas_covariances"]
        .as_array()
        .unwrap()
        .iter()
        .map(mat_from_json)
        .collect();
    let want_mean = mat_from_json(&r.json["riemann_mean"]);
    let mean = linalg::riemann_mean(&covs, 1e-8, 50).unwrap();
    let e_mean = rel_err(&mean, &want_mean);
    let d = linalg::riemann_distance(&covs[0], &mean).unwrap();
    let d_want = r.json["distance_cov0_mean"].as_f64().unwrap();
    let e_log = rel_err(
        &linalg::logm(&covs[0]).unwrap(),
        &mat_from_json(&r.json["logm_cov0"]),
    );
    let e_pow = rel_err(
        &linalg::powm(&covs[0], 0.3).unwrap(),
        &mat_from_json(&r.json["powm_cov0_0_3"]),
    );
    let e_geo = rel_err(
        &linalg::geodesic(&want_mean, &covs[0], 0.25).unwrap(),
        &mat_from_json(&r.json["geodesic_mean_cov0_0_25"]),
    );
    eprintln!(
        "vs pyRiemann: mean {e_mean:.2e}, distance {:.2e}, logm {e_log:.2e}, powm {e_pow:.2e}, \
         geodesic {e_geo:.2e} (relative)",
        (d - d_want).abs() / d_want
    );
    assert!(e_mean <= 1e-6, "Riemannian mean relative error {e_mean:e}");
    assert!((d - d_want).abs() <= 1e-9 * d_want);
    assert!(e_log <= 1e-9 && e_pow <= 1e-9 && e_geo <= 1e-9);
}

#[test]
fn tangent_space_matches_pyriemann() {
    let r = reference();
    let windows = windows_of(&r.epochs, r.channels);
    let mut ts = TangentSpace::new(TangentSpaceConfig::default());
    ts.fit(&windows, &r.labels).unwrap();
    let want_mean = mat_from_json(&r.json["riemann_mean"]);
    let e_mean = rel_err(ts.reference().unwrap(), &want_mean);
    let want: Vec<Vec<f64>> = serde_json::from_value(r.json["tangent_vectors"].clone()).unwrap();
    let got = extract_all(&mut ts, &windows);
    assert_eq!(ts.names().len(), r.channels * (r.channels + 1) / 2);
    assert_eq!(ts.names()[1], "ts0_1");
    let mut worst = 0.0f64;
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.len(), w.len());
        for (a, b) in g.iter().zip(w) {
            worst = worst.max((f64::from(*a) - b).abs());
        }
    }
    eprintln!(
        "tangent space: reference mean rel. error {e_mean:.2e}, vectors max abs error {worst:.2e}"
    );
    assert!(e_mean <= 1e-6, "reference mean relative error {e_mean:e}");
    assert!(worst <= 1e-6, "tangent vector abs error {worst:e}");
}

#[test]
fn csp_matches_mne() {
    let r = reference();
    let windows = windows_of(&r.epochs, r.channels);
    let mut csp = Csp::new(CspConfig::default()).unwrap();
    csp.fit(&windows, &r.labels).unwrap();
    assert_eq!(csp.names(), ["csp0", "csp1", "csp2", "csp3"]);
    let want: Vec<Vec<f64>> = serde_json::from_value(r.json["csp_features"].clone()).unwrap();
    let got = extract_all(&mut csp, &windows);
    let mut worst = 0.0f64;
    for (g, w) in got.iter().zip(&want) {
        for (a, b) in g.iter().zip(w) {
            worst = worst.max((f64::from(*a) - b).abs());
        }
    }
    eprintln!(
        "CSP vs MNE: log-power max abs error {worst:.2e}, eigenvalues {:?}",
        csp.eigenvalues()
    );
    assert!(worst <= 1e-5, "CSP feature abs error {worst:e}");
}

// ---------------------------------------------------------------------------------------------
// Simulated lateralised ERD.

const MOTOR_LABELS: [&str; 16] = [
    "Fz", "F3", "F4", "FC3", "FC4", "C5", "C3", "C1", "Cz", "C2", "C4", "C6", "CP3", "CP4", "Pz",
    "Oz",
];
const LEFT: usize = 0;
const RIGHT: usize = 1;

fn ch(name: &str) -> usize {
    MOTOR_LABELS.iter().position(|&l| l == name).unwrap()
}

/// 16-channel windows: background noise (independent plus a shared component) and two motor
/// rhythm sources, one over each sensorimotor cortex. Left-hand imagery desynchronises the
/// right-hemisphere rhythm (variance drops on C4/C2/C6), right-hand imagery the left one
/// (C3/C1/C5). Labels alternate LEFT, RIGHT.
fn erd_dataset(n_windows: usize, samples: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<usize>) {
    let n = MOTOR_LABELS.len();
    let mut topo_left = vec![0.0f64; n];
    let mut topo_right = vec![0.0f64; n];
    for (name, weight) in [
        ("C3", 1.0),
        ("C1", 0.6),
        ("C5", 0.6),
        ("FC3", 0.3),
        ("CP3", 0.3),
        ("Cz", 0.15),
    ] {
        topo_left[ch(name)] = weight;
    }
    for (name, weight) in [
        ("C4", 1.0),
        ("C2", 0.6),
        ("C6", 0.6),
        ("FC4", 0.3),
        ("CP4", 0.3),
        ("Cz", 0.15),
    ] {
        topo_right[ch(name)] = weight;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0, 1.0).unwrap();
    let mut epochs = Vec::new();
    let mut labels = Vec::new();
    for i in 0..n_windows {
        let label = if i % 2 == 0 { LEFT } else { RIGHT };
        let (amp_left, amp_right) = if label == LEFT {
            (3.0, 1.0)
        } else {
            (1.0, 3.0)
        };
        let mut data = vec![0.0f32; n * samples];
        for t in 0..samples {
            let mu_l = amp_left * normal.sample(&mut rng);
            let mu_r = amp_right * normal.sample(&mut rng);
            let common = 0.5 * normal.sample(&mut rng);
            for c in 0..n {
                let v =
                    normal.sample(&mut rng) + common + topo_left[c] * mu_l + topo_right[c] * mu_r;
                data[c * samples + t] = v as f32;
            }
        }
        epochs.push(data);
        labels.push(label);
    }
    (epochs, labels)
}

fn argmax_abs(v: &[f64]) -> usize {
    (0..v.len())
        .max_by(|&a, &b| v[a].abs().total_cmp(&v[b].abs()))
        .unwrap()
}

#[test]
fn csp_on_lateralised_erd_picks_the_motor_channels() {
    let (epochs, labels) = erd_dataset(40, 320, 1);
    let n = MOTOR_LABELS.len();
    let mut csp = Csp::new(CspConfig::default()).unwrap();
    csp.fit(&windows_of(&epochs, n), &labels).unwrap();
    let left_family = [ch("C3"), ch("C1"), ch("C5")];
    let right_family = [ch("C4"), ch("C2"), ch("C6")];
    let peaks: Vec<usize> = csp.patterns()[..2].iter().map(|p| argmax_abs(p)).collect();
    let names: Vec<&str> = peaks.iter().map(|&c| MOTOR_LABELS[c]).collect();
    eprintln!(
        "top CSP patterns peak at {names:?}, eigenvalues {:?}",
        csp.eigenvalues()
    );
    // The two most discriminative components are the two hemispheres' rhythms.
    assert!(peaks.iter().any(|p| left_family.contains(p)), "{names:?}");
    assert!(peaks.iter().any(|p| right_family.contains(p)), "{names:?}");
    // The filters (backward model) weight the same channel families most.
    let motor: Vec<usize> = left_family.iter().chain(&right_family).copied().collect();
    for f in &csp.filters()[..2] {
        let peak = argmax_abs(f);
        assert!(
            motor.contains(&peak),
            "filter peaks at {}",
            MOTOR_LABELS[peak]
        );
    }
    // λ near 1: more power in class LEFT (smallest label) — the intact left-hemisphere rhythm.
    let first = csp.eigenvalues()[0];
    let expected = if first > 0.5 {
        &left_family
    } else {
        &right_family
    };
    assert!(
        expected.contains(&peaks[0]),
        "λ = {first}, peak {}",
        names[0]
    );
}

/// Nearest-class-mean accuracy of features on held-out windows.
fn nearest_mean_accuracy(
    train: &[Vec<f32>],
    train_y: &[usize],
    test: &[Vec<f32>],
    test_y: &[usize],
) -> f64 {
    let dim = train[0].len();
    let mut means = vec![vec![0.0f64; dim]; 2];
    let mut counts = [0usize; 2];
    for (x, &y) in train.iter().zip(train_y) {
        counts[y] += 1;
        for (m, &v) in means[y].iter_mut().zip(x) {
            *m += f64::from(v);
        }
    }
    for (m, c) in means.iter_mut().zip(counts) {
        m.iter_mut().for_each(|v| *v /= c as f64);
    }
    let dist = |x: &[f32], m: &[f64]| -> f64 {
        x.iter()
            .zip(m)
            .map(|(&a, b)| (f64::from(a) - b).powi(2))
            .sum()
    };
    let correct = test
        .iter()
        .zip(test_y)
        .filter(|(x, &y)| {
            let pred = if dist(x, &means[0]) <= dist(x, &means[1]) {
                0
            } else {
                1
            };
            pred == y
        })
        .count();
    correct as f64 / test.len() as f64
}

#[test]
fn tangent_space_and_csp_separate_the_erd_classes() {
    let n = MOTOR_LABELS.len();
    let (train, train_y) = erd_dataset(40, 320, 2);
    let (test, test_y) = erd_dataset(40, 320, 3);
    let (train_w, test_w) = (windows_of(&train, n), windows_of(&test, n));

    let mut ts = TangentSpace::new(TangentSpaceConfig::default());
    ts.fit(&train_w, &train_y).unwrap();
    let ts_acc = nearest_mean_accuracy(
        &extract_all(&mut ts, &train_w),
        &train_y,
        &extract_all(&mut ts, &test_w),
        &test_y,
    );

    let mut csp = Csp::new(CspConfig::default()).unwrap();
    csp.fit(&train_w, &train_y).unwrap();
    let csp_acc = nearest_mean_accuracy(
        &extract_all(&mut csp, &train_w),
        &train_y,
        &extract_all(&mut csp, &test_w),
        &test_y,
    );
    eprintln!("nearest-class-mean accuracy on held-out ERD windows: tangent space {ts_acc}, CSP {csp_acc}");
    assert!(ts_acc >= 0.9, "tangent space accuracy {ts_acc}");
    assert!(csp_acc >= 0.9, "CSP accuracy {csp_acc}");
}

#[test]
fn adapt_moves_the_reference_along_the_geodesic() {
    let n = MOTOR_LABELS.len();
    let (epochs, labels) = erd_dataset(20, 320, 4);
    // Fit on LEFT windows only, then re-centre towards a RIGHT window.
    let left: Vec<Window<'_>> = windows_of(&epochs, n)
        .into_iter()
        .zip(&labels)
        .filter(|(_, &l)| l == LEFT)
        .map(|(w, _)| w)
        .collect();
    let mut ts = TangentSpace::new(TangentSpaceConfig::default());
    ts.fit(&left, &[]).unwrap();
    let target = window(&epochs[1], n);
    assert_eq!(labels[1], RIGHT);
    let c = linalg::covariance(target.data, n, target.samples, true, Shrinkage::Oas);
    let before = ts.reference().unwrap().clone();
    let d0 = linalg::riemann_distance(&c, &before).unwrap();

    // Out-of-range rates leave the reference alone.
    ts.adapt(&target, 0.0);
    ts.adapt(&target, 1.5);
    assert_eq!(ts.reference().unwrap(), &before);

    let mut norm_before = vec![0.0; ts.names().len()];
    ts.extract(&target, &mut norm_before);
    ts.adapt(&target, 0.25);
    let d1 = linalg::riemann_distance(&c, ts.reference().unwrap()).unwrap();
    // On the geodesic, a step of 0.25 leaves 0.75 of the distance.
    assert!((d1 - 0.75 * d0).abs() < 1e-6 * d0, "d0 {d0}, d1 {d1}");
    let mut norm_after = vec![0.0; ts.names().len()];
    ts.extract(&target, &mut norm_after);
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    // The tangent vector's norm is the distance to the reference.
    assert!((norm(&norm_before) - d0).abs() < 1e-4 * d0);
    assert!((norm(&norm_after) - d1).abs() < 1e-4 * d0);
    assert!(norm(&norm_after) < norm(&norm_before));

    // rate = 1 jumps onto the window's covariance.
    ts.adapt(&target, 1.0);
    assert!(linalg::riemann_distance(&c, ts.reference().unwrap()).unwrap() < 1e-6);
}

// ---------------------------------------------------------------------------------------------
// The hot path against the direct computation on real EEG.

/// Every window of a real 64-channel recording (S001R04, 160 Hz) through a windower: the
/// covariance updated over the hop, the warm-started eigensolver and the tangent vector agree
/// with the direct computation (whole-window covariance, nalgebra's solver) within 1e-5
/// relative; so does the reference after each re-centring step with the direct geodesic.
#[test]
fn hot_path_agrees_with_the_direct_computation_on_real_eeg() {
    use neurostream::features::sliding::{SlidingCovariance, Update, EXACT_EVERY};
    use neurostream::features::window::Windower;
    use neurostream::source::replay::Replay;
    use neurostream::source::{Pace, Source, SourceItem};

    let Some(path) = common::eegmmidb_file("S001", 4) else {
        return;
    };
    let recording = neurostream::io::open(&path).unwrap();
    let mut replay = Replay::new(&recording, None, 16, Pace::AsFastAsPossible).unwrap();
    let channels = replay.stream_info().channel_count();
    assert_eq!(channels, 64);
    let (length, hop) = (480, 16);
    let mut windows: Vec<Vec<f32>> = Vec::new();
    let mut slides = Vec::new();
    let mut windower = Windower::new(channels, length, hop);
    while let Some(item) = replay.next_item().unwrap() {
        if let SourceItem::Chunk(chunk) = item {
            windower.push(&chunk, 160.0, |w| {
                windows.push(w.data.to_vec());
                slides.push(w.slide);
            });
        }
    }
    assert!(
        windows.len() as u64 > EXACT_EVERY + 100,
        "{} windows",
        windows.len()
    );
    let at = |i: usize| Window {
        data: &windows[i],
        channels,
        samples: length,
        rate: 160.0,
        end_timestamp: 0.0,
        slide: slides[i],
    };
    let rel = |a: &[f32], b: &[f32]| {
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        a.iter()
            .zip(b)
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
            / scale
    };

    // Covariance and eigenvalues of the raw (unfiltered, DC-offset) signal.
    let mut sliding = SlidingCovariance::new();
    let mut solver = linalg::WarmEigen::new(channels);
    let mut cov = Mat::zeros(channels, channels);
    let (mut slid, mut exact, mut worst_cov, mut worst_eig) = (0, 0, 0.0f64, 0.0f64);
    let mut warm_sweeps = 0;
    for i in 0..windows.len() {
        let w = at(i);
        match sliding.covariance(&w, Shrinkage::Oas, &mut cov).unwrap() {
            Update::Slid => slid += 1,
            Update::Exact => exact += 1,
            Update::Same => unreachable!("every window is new"),
        }
        let direct = linalg::covariance(w.data, channels, length, true, Shrinkage::Oas);
        worst_cov = worst_cov.max(rel_err(&cov, &direct));
        if i % 7 == 0 {
            // Normalised like a whitened covariance, so the warm start sees what it sees live.
            let scaled = &cov / cov.trace() * channels as f64;
            assert!(solver.decompose(&scaled));
            if i > 0 {
                warm_sweeps = warm_sweeps.max(solver.last_sweeps());
            }
            let mut fast: Vec<f64> = (0..channels).map(|k| solver.eigenvalue(k)).collect();
            fast.sort_by(f64::total_cmp);
            let (want, _) = linalg::eigh(&scaled).unwrap();
            for (a, b) in fast.iter().zip(want.iter()) {
                worst_eig = worst_eig.max((a - b).abs() / want[channels - 1]);
            }
        }
    }
    eprintln!(
        "{} windows: {slid} slid, {exact} exact; covariance rel err {worst_cov:e}, eigenvalues \
         {worst_eig:e}, at most {warm_sweeps} sweeps per warm solve",
        windows.len()
    );
    assert_eq!(exact, 2, "the first window and one periodic recomputation");
    assert!(worst_cov < 1e-5, "covariance rel err {worst_cov}");
    assert!(worst_eig < 1e-5, "eigenvalue rel err {worst_eig}");

    // Tangent vectors, re-centring one window in 30 as the pipeline does.
    let train: Vec<Window<'_>> = (0..windows.len()).step_by(40).map(at).collect();
    let mut ts = TangentSpace::new(TangentSpaceConfig::default());
    ts.fit(&train, &[]).unwrap();
    let dim = ts.names().len();
    let (mut fast, mut direct) = (vec![0.0f32; dim], vec![0.0f32; dim]);
    let (mut worst_ts, mut worst_ref) = (0.0f32, 0.0f64);
    for i in 0..windows.len() {
        let w = at(i);
        if i % 30 == 0 {
            let before = ts.reference().unwrap().clone();
            let c = linalg::covariance(w.data, channels, length, true, Shrinkage::Oas);
            let want = linalg::geodesic(&before, &c, 0.05).unwrap();
            ts.adapt(&w, 0.05);
            worst_ref = worst_ref.max(rel_err(ts.reference().unwrap(), &want));
        }
        ts.extract(&w, &mut fast);
        ts.extract_direct(&w, &mut direct);
        assert!(fast.iter().all(|v| v.is_finite()), "window {i}");
        worst_ts = worst_ts.max(rel(&fast, &direct));
    }
    eprintln!("tangent vectors rel err {worst_ts:e}, re-centred reference {worst_ref:e}");
    assert!(worst_ts < 1e-5, "tangent vector rel err {worst_ts}");
    assert!(worst_ref < 1e-5, "reference rel err {worst_ref}");
}

/// A window that skips ahead, repeats, or comes from another windower is computed exactly,
/// and a non-finite window yields NaN without poisoning the windows after it.
#[test]
fn sliding_covariance_recomputes_when_the_sequence_breaks() {
    use neurostream::features::sliding::{SlidingCovariance, Update};
    use neurostream::features::Slide;
    let (channels, samples, hop) = (3, 40, 4);
    let signal: Vec<f32> = (0..channels * 200)
        .map(|i| ((i * 7919) % 101) as f32 - 50.0 + (i % 3) as f32 * 100.0)
        .collect();
    let total = 200;
    let make = |start: usize| -> Vec<f32> {
        (0..channels)
            .flat_map(|c| signal[c * total + start..c * total + start + samples].to_vec())
            .collect()
    };
    let mut sliding = SlidingCovariance::new();
    let mut cov = Mat::zeros(channels, channels);
    let mut check = |data: &[f32], slide: Option<Slide>, expect: Option<Update>| {
        let w = Window {
            data,
            channels,
            samples,
            rate: 1.0,
            end_timestamp: 0.0,
            slide,
        };
        let got = sliding.covariance(&w, Shrinkage::None, &mut cov);
        assert_eq!(got, expect);
        if got.is_some() {
            let want = linalg::covariance(data, channels, samples, true, Shrinkage::None);
            assert!(rel_err(&cov, &want) < 1e-10);
        }
    };
    let s = |run, index| Some(Slide { run, index, hop });
    check(&make(0), s(1, 0), Some(Update::Exact));
    check(&make(4), s(1, 1), Some(Update::Slid));
    check(&make(4), s(1, 1), Some(Update::Same));
    check(&make(8), s(1, 2), Some(Update::Slid));
    check(&make(16), s(1, 4), Some(Update::Exact)); // skipped a window
    check(&make(20), s(2, 5), Some(Update::Exact)); // another run
    check(&make(20), None, Some(Update::Exact)); // stand-alone
    let mut bad = make(24);
    bad[5] = f32::NAN;
    check(&bad, s(2, 6), None);
    check(&make(28), s(2, 7), Some(Update::Exact)); // after the NaN: exact again
    check(&make(32), s(2, 8), Some(Update::Slid));
    let mut bad = make(36);
    bad[samples - 1] = f32::INFINITY; // among the new samples of a slide
    check(&bad, s(2, 9), None);
    check(&make(40), s(2, 10), Some(Update::Exact));
}

// ---------------------------------------------------------------------------------------------
// Errors and edge cases.

/// Common average reference: every sample's channel mean removed, so covariances are singular.
fn car(epochs: &mut [Vec<f32>], channels: usize) {
    for e in epochs {
        let samples = e.len() / channels;
        for t in 0..samples {
            let mean = (0..channels).map(|c| e[c * samples + t]).sum::<f32>() / channels as f32;
            (0..channels).for_each(|c| e[c * samples + t] -= mean);
        }
    }
}

#[test]
fn csp_fit_errors() {
    let n = MOTOR_LABELS.len();
    let (mut epochs, labels) = erd_dataset(8, 100, 5);
    let mut csp = Csp::new(CspConfig::default()).unwrap();
    let w = windows_of(&epochs, n);
    let msg = |r: neurostream::Result<()>| r.unwrap_err().to_string();

    let single = msg(csp.fit(&w, &[0; 8]));
    assert!(single.contains("two classes"), "{single}");
    let few = msg(csp.fit(&w[..3], &labels[..3]));
    assert!(few.contains("class 1 has 1 window"), "{few}");
    assert!(msg(csp.fit(&[], &[])).contains("no windows"));
    assert!(msg(csp.fit(&w, &labels[..5])).contains("5 labels for 8 windows"));
    assert!(matches!(
        Csp::new(CspConfig {
            components: 0,
            ..Default::default()
        }),
        Err(Error::Config { .. })
    ));
    let mut big = Csp::new(CspConfig {
        components: 17,
        ..Default::default()
    })
    .unwrap();
    assert!(matches!(big.fit(&w, &labels), Err(Error::Config { .. })));
    assert!(!csp.is_fitted(), "failed fits leave the stage unfitted");

    let mut bad = epochs.clone();
    bad[2][5] = f32::NAN;
    let nan = msg(csp.fit(&windows_of(&bad, n), &labels));
    assert!(
        nan.contains("window 2") && nan.contains("non-finite"),
        "{nan}"
    );

    // Rank-deficient (CAR) data: singular without shrinkage, fine with OAS.
    car(&mut epochs, n);
    let w = windows_of(&epochs, n);
    let mut plain = Csp::new(CspConfig {
        components: 4,
        shrinkage: Shrinkage::None,
    })
    .unwrap();
    let singular = msg(plain.fit(&w, &labels));
    assert!(singular.contains("singular"), "{singular}");
    csp.fit(&w, &labels).unwrap();
}

#[test]
fn tangent_space_fit_errors_and_unfitted_extract() {
    let n = MOTOR_LABELS.len();
    let (mut epochs, _) = erd_dataset(6, 100, 6);
    let mut ts = TangentSpace::new(TangentSpaceConfig::default());
    assert!(ts.names().is_empty());
    let mut out = [0.0f32; 3];
    ts.extract(&window(&epochs[0], n), &mut out);
    assert!(
        out.iter().all(|v| v.is_nan()),
        "unfitted extract yields NaN"
    );
    assert!(ts.fit(&[], &[]).is_err());
    let mut bad = epochs.clone();
    bad[1][0] = f32::INFINITY;
    assert!(ts
        .fit(&windows_of(&bad, n), &[])
        .unwrap_err()
        .to_string()
        .contains("non-finite"));

    car(&mut epochs, n);
    let mut plain = TangentSpace::new(TangentSpaceConfig {
        shrinkage: Shrinkage::None,
    });
    let err = plain
        .fit(&windows_of(&epochs, n), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("positive definite"), "{err}");
    ts.fit(&windows_of(&epochs, n), &[]).unwrap();

    // A window with another channel count gives NaN, not a panic.
    let mut out = vec![0.0f32; ts.names().len()];
    ts.extract(&window(&epochs[0][..8 * 100], 8), &mut out);
    assert!(out.iter().all(|v| v.is_nan()));
}

#[test]
fn csp_one_vs_rest_for_three_classes() {
    let n = MOTOR_LABELS.len();
    let (mut epochs, mut labels) = erd_dataset(12, 200, 7);
    // Third class: both rhythms intact, extra frontal noise.
    let (more, _) = erd_dataset(6, 200, 8);
    for mut e in more {
        e[..200].iter_mut().for_each(|v| *v *= 3.0);
        epochs.push(e);
        labels.push(2);
    }
    let mut csp = Csp::new(CspConfig {
        components: 2,
        ..Default::default()
    })
    .unwrap();
    csp.fit(&windows_of(&epochs, n), &labels).unwrap();
    assert_eq!(csp.classes(), [0, 1, 2]);
    assert_eq!(csp.names().len(), 6);
    let feats = extract_all(&mut csp, &windows_of(&epochs, n));
    assert!(feats.iter().flatten().all(|v| v.is_finite()));
}

// ---------------------------------------------------------------------------------------------
// Configuration and serialization.

#[test]
fn configs_default_and_reject_unknown_keys() {
    let c: CspConfig = toml::from_str("").unwrap();
    assert_eq!(
        c,
        CspConfig {
            components: 4,
            shrinkage: Shrinkage::Oas
        }
    );
    let c: CspConfig = toml::from_str("components = 6\nshrinkage = \"none\"").unwrap();
    assert_eq!(
        c,
        CspConfig {
            components: 6,
            shrinkage: Shrinkage::None
        }
    );
    assert!(toml::from_str::<CspConfig>("component = 6").is_err());
    assert!(toml::from_str::<CspConfig>("shrinkage = \"lwf\"").is_err());
    let t: TangentSpaceConfig = toml::from_str("").unwrap();
    assert_eq!(t.shrinkage, Shrinkage::Oas);
    assert!(toml::from_str::<TangentSpaceConfig>("metric = \"riemann\"").is_err());
}

/// Largest absolute difference between two feature matrices.
fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn fitted_state_round_trips_through_serde() {
    let n = MOTOR_LABELS.len();
    let (epochs, labels) = erd_dataset(10, 200, 9);
    let w = windows_of(&epochs, n);

    let mut csp = Csp::new(CspConfig::default()).unwrap();
    csp.fit(&w, &labels).unwrap();
    let mut ts = TangentSpace::new(TangentSpaceConfig::default());
    ts.fit(&w, &labels).unwrap();
    ts.adapt(&w[3], 0.1);
    let (csp_feats, ts_feats) = (extract_all(&mut csp, &w), extract_all(&mut ts, &w));

    // TOML writes and reads f64 exactly: the restored stages are bit-identical (CSP), or equal
    // to rounding (tangent space: its eigensolver starts warm from the previous window, so the
    // last bits depend on the windows seen before, and the loaded square roots are rebuilt).
    let mut csp2: Csp = toml::from_str(&toml::to_string(&csp).unwrap()).unwrap();
    assert_eq!(csp2.names(), csp.names());
    assert_eq!(csp2.filters(), csp.filters());
    assert_eq!(extract_all(&mut csp2, &w), csp_feats);
    let mut ts2: TangentSpace = toml::from_str(&toml::to_string(&ts).unwrap()).unwrap();
    assert_eq!(ts2.names(), ts.names());
    assert_eq!(ts2.reference(), ts.reference());
    assert!(max_diff(&extract_all(&mut ts2, &w), &ts_feats) <= 1e-6);

    // serde_json without its `float_roundtrip` feature may parse an f64 one ulp off, so a
    // JSON round trip is identical only up to rounding.
    let mut csp3: Csp = serde_json::from_str(&serde_json::to_string(&csp).unwrap()).unwrap();
    assert!(max_diff(&extract_all(&mut csp3, &w), &csp_feats) <= 1e-6);
    let json = serde_json::to_string(&ts).unwrap();
    let mut ts3: TangentSpace = serde_json::from_str(&json).unwrap();
    assert!(rel_err(ts3.reference().unwrap(), ts.reference().unwrap()) <= 1e-15);
    assert!(max_diff(&extract_all(&mut ts3, &w), &ts_feats) <= 1e-6);

    let unfitted = TangentSpace::new(TangentSpaceConfig::default());
    let back: TangentSpace =
        serde_json::from_str(&serde_json::to_string(&unfitted).unwrap()).unwrap();
    assert!(!back.is_fitted());
    // A corrupted reference is refused at load time, not at the first window.
    let bad = json.replacen("[[", "[[-1e9,", 1);
    assert!(serde_json::from_str::<TangentSpace>(&bad).is_err());
}

// ---------------------------------------------------------------------------------------------
// Timing (release): 64 channels × 480 samples, the EEGMMIDB 3 s epoch.

#[test]
#[ignore = "timing; run with --release -- --ignored --nocapture"]
fn extract_time_64ch_480_samples() {
    let (channels, samples) = (64, 480);
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let normal = Normal::new(0.0f32, 1.0).unwrap();
    let mixing: Vec<f32> = (0..channels * channels)
        .map(|_| normal.sample(&mut rng))
        .collect();
    let epochs: Vec<Vec<f32>> = (0..30)
        .map(|_| {
            let s: Vec<f32> = (0..channels * samples)
                .map(|_| normal.sample(&mut rng))
                .collect();
            let mut x = vec![0.0f32; channels * samples];
            for c in 0..channels {
                for k in 0..channels {
                    let m = mixing[c * channels + k];
                    for t in 0..samples {
                        x[c * samples + t] += m * s[k * samples + t];
                    }
                }
            }
            x
        })
        .collect();
    let labels: Vec<usize> = (0..30).map(|i| i % 2).collect();
    let w = windows_of(&epochs, channels);

    let t = std::time::Instant::now();
    let mut ts = TangentSpace::new(TangentSpaceConfig::default());
    ts.fit(&w, &labels).unwrap();
    let ts_fit = t.elapsed();
    let t = std::time::Instant::now();
    let mut csp = Csp::new(CspConfig::default()).unwrap();
    csp.fit(&w, &labels).unwrap();
    let csp_fit = t.elapsed();

    let reps = 300;
    for (name, fx) in [
        ("tangent space", &mut ts as &mut dyn FeatureExtractor),
        ("CSP", &mut csp),
    ] {
        let mut out = vec![0.0f32; fx.names().len()];
        fx.extract(&w[0], &mut out); // warm-up: sizes the scratch buffers
        let a0 = allocations();
        let t = std::time::Instant::now();
        for i in 0..reps {
            fx.extract(&w[i % w.len()], &mut out);
        }
        let per = t.elapsed().as_secs_f64() / reps as f64;
        let allocs = (allocations() - a0) as f64 / reps as f64;
        eprintln!(
            "{name}: extract {:.3} ms per 64×480 window, {allocs:.1} allocations per call",
            per * 1e3
        );
    }
    let t = std::time::Instant::now();
    for i in 0..reps {
        ts.adapt(&w[i % w.len()], 0.01);
    }
    eprintln!(
        "tangent space: adapt {:.3} ms per window; fit on 30 windows: tangent space {:.0} ms, CSP {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3 / reps as f64,
        ts_fit.as_secs_f64() * 1e3,
        csp_fit.as_secs_f64() * 1e3
    );
}
