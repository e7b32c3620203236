//! Calibrated probabilities on real EEG: on every shared subject and every decoder kind, the
//! calibrated probability ranks held-back trials exactly as well as the decoder's own decision
//! value (the sign check: Platt scaling must never flip the ranking), and the probabilities are
//! not pinned to 0 and 1.
//!
//! Needs the EEGMMIDB runs (`NEUROSTREAM_DATA`); skips with a message when they are absent,
//! unless `NEUROSTREAM_REQUIRE_DATA=1`.

mod common;

use neurostream::decoder::calibration;
use neurostream::decoder::metrics::{roc_auc, Report};
use neurostream::decoder::{AnyDecoder, Decoder};
use neurostream::evaluate;
use neurostream::io;
use neurostream::pipeline::PipelineConfig;
use neurostream::{epochs, Result};

fn pipeline(name: &str) -> PipelineConfig {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("pipelines")
        .join(name);
    PipelineConfig::from_file(&path).unwrap()
}

/// The decoder's uncalibrated decision value for class 1 (LDA: `δ₁ − δ₀`; SVM: `f(x)`; MLP:
/// the logit difference `ln p₁ − ln p₀` of its raw softmax).
fn decision_value(decoder: &mut AnyDecoder, features: &[f32]) -> f64 {
    match decoder {
        AnyDecoder::Lda(d) => {
            let mut out = [0.0; 2];
            d.decision_function(features, &mut out);
            out[1] - out[0]
        }
        AnyDecoder::Svm(d) => {
            let mut out = [0.0];
            d.decision_function(features, &mut out);
            out[0]
        }
        AnyDecoder::Mlp(d) => {
            let calibration = d.calibration().copied();
            d.set_calibration(None);
            let mut p = [0.0; 2];
            d.predict_proba(features, &mut p);
            d.set_calibration(calibration);
            p[1].ln() - p[0].ln()
        }
    }
}

/// Train on every run but `test_run`, test on it. Returns (probability AUC, decision AUC,
/// report), or `None` when the subject has no such run.
fn held_back(
    config: &PipelineConfig,
    subject: &str,
    test_run: u32,
) -> Result<Option<(f64, f64, Report)>> {
    let Some(dir) = common::data_dir() else {
        return Ok(None);
    };
    let path = |run: u32| dir.join(format!("eegmmidb/{subject}/{subject}R{run:02}.edf"));
    if !path(test_run).is_file() {
        return Ok(None);
    }
    let train: Vec<_> = [4, 8, 12]
        .into_iter()
        .filter(|&r| r != test_run && path(r).is_file())
        .map(|r| io::open(path(r)))
        .collect::<Result<_>>()?;
    let test = io::open(path(test_run))?;
    let train = epochs::cut_all(train.iter(), config)?;
    let test = epochs::cut_all([&test], config)?;
    let all: Vec<usize> = (0..train.len()).collect();
    let mut trained = evaluate::fit(config, &train, &all)?;
    assert!(
        calibration::of(&trained.decoder).is_some(),
        "{subject}: fit left the probabilities uncalibrated"
    );
    let indices: Vec<usize> = (0..test.len()).collect();
    let p = evaluate::predict(&mut trained, &test, &indices);
    let x = evaluate::feature_matrix(&mut trained.extractor, &test, &indices);
    let decisions: Vec<f64> = x
        .rows()
        .into_iter()
        .map(|row| decision_value(&mut trained.decoder, row.as_slice().unwrap()))
        .collect();
    let positives: Vec<bool> = test.labels.iter().map(|&l| l == 1).collect();
    let p1: Vec<f64> = p.column(1).to_vec();
    let report = Report::from_probabilities(&test.labels, p.view(), None)?;
    Ok(Some((
        roc_auc(&p1, &positives)?,
        roc_auc(&decisions, &positives)?,
        report,
    )))
}

#[test]
fn probability_auc_never_below_decision_auc_on_real_subjects() {
    if common::data_dir().is_none() {
        return;
    }
    let subjects = ["S001", "S003", "S004", "S007", "S024", "S042"];
    let mut checked = 0;
    for name in [
        "mi_tangent_lda.toml",
        "mi_tangent_svm.toml",
        "mi_bandpower_svm.toml",
        "mi_bandpower_mlp.toml",
    ] {
        let config = pipeline(name);
        for subject in subjects {
            // R08 is the run every shared subject has besides R04.
            let Some((probability, decision, report)) = held_back(&config, subject, 8).unwrap()
            else {
                continue;
            };
            println!(
                "{name} {subject}: AUC probability {probability:.3} decision {decision:.3}; \
                 accuracy {:.3}, brier {:.3}, log loss {:.3}, share p<.05 or >.95 {:.3}",
                report.accuracy,
                report.brier.unwrap(),
                report.log_loss.unwrap(),
                report.confident_share.unwrap()
            );
            assert!(
                probability >= decision - 1e-12,
                "{name} {subject}: calibrated probability AUC {probability} below the decision \
                 AUC {decision}"
            );
            // Calibrated probabilities cannot all sit at the extremes, and log loss stays near
            // or below chance's 0.693 rather than the 6–13 of uncalibrated LDA.
            assert!(report.confident_share.unwrap() < 0.5, "{name} {subject}");
            assert!(report.log_loss.unwrap() < 1.0, "{name} {subject}");
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} subject-pipelines found");
}
