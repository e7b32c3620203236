//! `neurostream evaluate --pipeline P... --recording FILES...`: cross-validated, held-out or
//! online accuracy per subject, as a table or JSON, with the quality of the probabilities
//! (Brier score, log loss, expected calibration error, share of saturated windows) next to
//! accuracy and AUC. Held-out probabilities are calibrated (fitted out of fold on the
//! training runs), and the table also shows the AUC of the raw decision value and the
//! operating point: its expected precision on the training runs and what it did on the test
//! runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use neurostream::decoder::metrics::Report;
use neurostream::epochs::Epochs;
use neurostream::io::Recording;
use neurostream::pipeline::PipelineConfig;
use neurostream::{epochs, evaluate, io, Error, Result};
use serde_json::json;

#[derive(Args)]
pub struct EvaluateArgs {
    /// Pipeline file(s) with a [decoder] table; several give a side-by-side comparison.
    #[arg(long, short, num_args = 1.., required = true)]
    pub pipeline: Vec<PathBuf>,
    /// Recordings; grouped into subjects by their parent folder (e.g. .../S001/S001R04.edf).
    #[arg(long, short, num_args = 1.., required = true)]
    pub recording: Vec<PathBuf>,
    /// Train on the other runs of each subject and test on the runs whose file name contains
    /// this text (e.g. R12), instead of k-fold cross-validation.
    #[arg(long, conflicts_with = "online")]
    pub holdout: Option<String>,
    /// Calibrate on each subject's first run(s) (file-name order, see --calibration-runs), then
    /// decode the later runs trial by trial, revealing each label after its trial; compare the
    /// same calibrated decoder frozen, with unsupervised adaptation only, and with unsupervised
    /// adaptation plus a supervised step per revealed label, with paired tests over subjects.
    #[arg(long)]
    pub online: bool,
    /// With --online: how many of each subject's first runs calibrate (1: R04 → R08+R12;
    /// 2: R04+R08 → R12).
    #[arg(long, default_value_t = 1, requires = "online")]
    pub calibration_runs: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Leave-one-subject-out with a re-centred population prior (0, 5, 10 and all labelled
    /// calibration trials per class) beside the person-only decoder, on the same folds;
    /// recordings grouped into subjects by their parent folder. Uses the first pipeline.
    #[arg(long, conflicts_with_all = ["online", "holdout"])]
    pub population: bool,
}

struct Subject {
    name: String,
    files: Vec<PathBuf>,
    recordings: Vec<Recording>,
}

fn subject_of(path: &Path) -> String {
    path.parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| ".".into())
}

fn load_subjects(files: &[PathBuf]) -> Result<Vec<Subject>> {
    let mut groups: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for f in files {
        groups.entry(subject_of(f)).or_default().push(f.clone());
    }
    groups
        .into_iter()
        .map(|(name, mut files)| {
            files.sort_by_key(|f| f.file_name().map(|n| n.to_owned()));
            let recordings = files.iter().map(io::open).collect::<Result<Vec<_>>>()?;
            Ok(Subject {
                name,
                files,
                recordings,
            })
        })
        .collect()
}

fn split(subject: &Subject, is_test: impl Fn(&Path) -> bool) -> (Vec<&Recording>, Vec<&Recording>) {
    let mut train = Vec::new();
    let mut test = Vec::new();
    for (file, recording) in subject.files.iter().zip(&subject.recordings) {
        if is_test(file) {
            test.push(recording);
        } else {
            train.push(recording);
        }
    }
    (train, test)
}

fn cut(
    recordings: &[&Recording],
    config: &PipelineConfig,
    what: &str,
    subject: &str,
) -> Result<Epochs> {
    if recordings.is_empty() {
        return Err(Error::Other(format!(
            "subject {subject}: no {what} recordings"
        )));
    }
    epochs::cut_all(recordings.iter().copied(), config)
}

/// One row of the results: a subject under one pipeline.
struct Row {
    subject: String,
    accuracy: f64,
    auc: Option<f64>,
    kappa: f64,
    itr: Option<f64>,
    brier: Option<f64>,
    log_loss: Option<f64>,
    ece: Option<f64>,
    saturated: Option<f64>,
    decision_auc: Option<f64>,
    extra: String,
    /// Frozen, unsupervised-only and adaptive scores (online mode).
    arms: Option<[evaluate::ArmScore; 3]>,
    json: serde_json::Value,
}

fn row_from_report(subject: &str, report: &Report, extra: String, json: serde_json::Value) -> Row {
    Row {
        subject: subject.to_owned(),
        accuracy: report.accuracy,
        auc: report.auc,
        kappa: report.kappa,
        itr: report.itr_bits_per_minute,
        brier: report.brier,
        log_loss: report.log_loss,
        ece: report.ece,
        saturated: report.saturated,
        decision_auc: report.decision_auc,
        extra,
        arms: None,
        json,
    }
}

/// Mean of a column, `None` if any row lacks it.
fn mean_of(rows: &[Row], f: impl Fn(&Row) -> Option<f64>) -> Option<f64> {
    let values: Option<Vec<f64>> = rows.iter().map(f).collect();
    values.map(|v| v.iter().sum::<f64>() / v.len() as f64)
}

pub fn run(args: EvaluateArgs) -> Result<()> {
    if args.population {
        return super::train::evaluate_population(&args.pipeline[0], &args.recording, args.json);
    }
    // Every pipeline is checked before the first recording is read.
    let configs = args
        .pipeline
        .iter()
        .map(|path| PipelineConfig::load(path))
        .collect::<Result<Vec<_>>>()?;
    let subjects = load_subjects(&args.recording)?;
    let mode = if args.online {
        "online"
    } else if args.holdout.is_some() {
        "holdout"
    } else {
        "cv"
    };
    let mut all_json = Vec::new();
    let bar = super::progress_bar(
        (args.pipeline.len() * subjects.len()) as u64,
        "subject-pipelines",
    );
    let mut tables = Vec::new();
    for (pipeline_path, config) in args.pipeline.iter().zip(configs) {
        let name = pipeline_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut rows = Vec::new();
        for subject in &subjects {
            bar.set_message(format!("{name} / {}", subject.name));
            let row = match mode {
                "cv" => {
                    let refs: Vec<&Recording> = subject.recordings.iter().collect();
                    let epochs = cut(&refs, &config, "", &subject.name)?;
                    let cv = evaluate::cross_validate(&config, &epochs)?;
                    let extra = format!("{} trials, {}-fold", epochs.len(), cv.folds);
                    let json = json!({"subject": subject.name, "trials": epochs.len(), "cv": cv});
                    let mut row = row_from_report(&subject.name, &cv.pooled, extra, json);
                    // Mean over folds, as scikit-learn's cross_val_score.
                    row.accuracy = cv.accuracy;
                    row.auc = cv.auc;
                    row
                }
                "holdout" => {
                    let pattern = args.holdout.as_deref().unwrap_or_default();
                    let contains = |f: &Path| {
                        f.file_name()
                            .is_some_and(|n| n.to_string_lossy().contains(pattern))
                    };
                    let (train, test) = split(subject, contains);
                    let train_epochs = cut(&train, &config, "training", &subject.name)?;
                    let test_epochs = cut(
                        &test,
                        &config,
                        &format!("held-out ({pattern})"),
                        &subject.name,
                    )?;
                    let outcome = evaluate::holdout_detailed(&config, &train_epochs, &test_epochs)?;
                    let fmt =
                        |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
                    let extra = format!(
                        "train {} / test {} trials{}",
                        train_epochs.len(),
                        test_epochs.len(),
                        outcome
                            .operating_point
                            .as_ref()
                            .map(|op| format!(
                                "; threshold {:.3}: precision expected {:.2} / test {}, \
                                 command share expected {:.2} / test {}",
                                op.threshold,
                                op.expected_precision,
                                fmt(outcome.test_precision),
                                op.expected_command_share,
                                fmt(outcome.test_command_share)
                            ))
                            .unwrap_or_default()
                    );
                    let json = json!({"subject": subject.name, "train_trials": train_epochs.len(), "report": outcome.report, "operating_point": outcome.operating_point, "test_precision": outcome.test_precision, "test_command_share": outcome.test_command_share});
                    row_from_report(&subject.name, &outcome.report, extra, json)
                }
                _ => {
                    let runs = args.calibration_runs;
                    if runs == 0 || subject.files.len() <= runs {
                        return Err(Error::Other(format!(
                            "subject {}: {} recording(s), --calibration-runs {runs}: need at \
                             least one calibration run and one later run for the online session",
                            subject.name,
                            subject.files.len()
                        )));
                    }
                    let calibration_files = &subject.files[..runs];
                    let (calibration, session) =
                        split(subject, |f| !calibration_files.iter().any(|c| c == f));
                    let calibration = cut(&calibration, &config, "calibration", &subject.name)?;
                    let outcome = evaluate::online(&config, &calibration, &session)?;
                    let score = |r: &Report| evaluate::ArmScore {
                        accuracy: r.accuracy,
                        auc: r.auc,
                    };
                    let arms = [
                        score(&outcome.frozen),
                        score(&outcome.unsupervised),
                        score(&outcome.adaptive),
                    ];
                    let extra = format!(
                        "{} calibration / {} online trials; {} updates",
                        outcome.calibration_trials, outcome.online_trials, outcome.updates_applied
                    );
                    let json = json!({"subject": subject.name, "online": outcome});
                    let mut row = row_from_report(&subject.name, &outcome.adaptive, extra, json);
                    row.arms = Some(arms);
                    row
                }
            };
            rows.push(row);
            bar.inc(1);
        }
        let n = rows.len() as f64;
        let mean_acc = rows.iter().map(|r| r.accuracy).sum::<f64>() / n;
        let mean_auc = mean_of(&rows, |r| r.auc);
        let max_auc_gap = rows
            .iter()
            .filter_map(|r| Some((r.auc? - r.decision_auc?).abs()))
            .fold(None, |m: Option<f64>, g| Some(m.map_or(g, |m| m.max(g))));
        let arms: Option<Vec<[evaluate::ArmScore; 3]>> = rows.iter().map(|r| r.arms).collect();
        let online = arms.map(|arms| {
            let arm = |i: usize| arms.iter().map(|a| a[i]).collect::<Vec<_>>();
            let (frozen, unsup, both) = (arm(0), arm(1), arm(2));
            let means = [&frozen, &unsup, &both].map(|a| {
                let acc = a.iter().map(|s| s.accuracy).sum::<f64>() / n;
                let auc = a.iter().map(|s| s.auc).sum::<Option<f64>>().map(|s| s / n);
                evaluate::ArmScore { accuracy: acc, auc }
            });
            let tests = evaluate::compare_arms([
                ("frozen", &frozen),
                ("unsupervised", &unsup),
                ("unsupervised+supervised", &both),
            ]);
            (means, tests)
        });
        let mut entry = json!({
            "mean_brier": mean_of(&rows, |r| r.brier),
            "mean_log_loss": mean_of(&rows, |r| r.log_loss),
            "mean_ece": mean_of(&rows, |r| r.ece),
            "mean_saturated": mean_of(&rows, |r| r.saturated),
            "mean_decision_auc": mean_of(&rows, |r| r.decision_auc),
            "max_auc_gap": max_auc_gap,
            "pipeline": pipeline_path,
            "decoder": config.decoder.as_ref().map(|d| d.kind()),
            "mode": mode,
            "subjects": rows.iter().map(|r| r.json.clone()).collect::<Vec<_>>(),
            "mean_accuracy": mean_acc,
            "mean_auc": mean_auc,
        });
        if let Some((means, tests)) = &online {
            entry["calibration_runs"] = json!(args.calibration_runs);
            entry["mean"] = json!({
                "frozen": means[0],
                "unsupervised": means[1],
                "unsupervised_supervised": means[2],
            });
            entry["paired_tests"] = json!(tests);
        }
        all_json.push(entry);
        tables.push((name, rows, mean_acc, mean_auc, max_auc_gap, online));
    }
    bar.finish_and_clear();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"mode": mode, "results": all_json}))
                .expect("json")
        );
        return Ok(());
    }
    let heading = match mode {
        "cv" => "cross-validated (mean over folds)".to_owned(),
        "holdout" => "held-out runs".to_owned(),
        _ => format!(
            "online: calibrate on each subject's first {} run(s), decode the rest trial by trial \
             (label revealed after each trial)",
            args.calibration_runs
        ),
    };
    println!("{heading}");
    let pct = |v: Option<f64>| {
        v.map(|v| format!("{:.1}%", 100.0 * v))
            .unwrap_or_else(|| "-".into())
    };
    for (name, rows, mean_acc, mean_auc, max_auc_gap, online) in tables {
        println!("\n{name}");
        if let Some((means, tests)) = online {
            print_online(&rows, &means, &tests);
            continue;
        }
        println!(
            "  {:<8} {:>8} {:>8} {:>8} {:>8} {:>10} {:>7} {:>8} {:>7} {:>7}  notes",
            "subject",
            "accuracy",
            "roc-auc",
            "dec-auc",
            "kappa",
            "itr b/min",
            "brier",
            "log-loss",
            "ece",
            "sat"
        );
        for r in &rows {
            println!(
                "  {:<8} {:>8.3} {:>8} {:>8} {:>8.3} {:>10} {:>7} {:>8} {:>7} {:>7}  {}",
                r.subject,
                r.accuracy,
                fmt(r.auc),
                fmt(r.decision_auc),
                r.kappa,
                fmt(r.itr),
                fmt(r.brier),
                fmt(r.log_loss),
                fmt(r.ece),
                pct(r.saturated),
                r.extra
            );
        }
        println!(
            "  {:<8} {:>8.3} {:>8} {:>8} {:>8} {:>10} {:>7} {:>8} {:>7} {:>7}  {}",
            "mean",
            mean_acc,
            fmt(mean_auc),
            fmt(mean_of(&rows, |r| r.decision_auc)),
            "",
            "",
            fmt(mean_of(&rows, |r| r.brier)),
            fmt(mean_of(&rows, |r| r.log_loss)),
            fmt(mean_of(&rows, |r| r.ece)),
            pct(mean_of(&rows, |r| r.saturated)),
            max_auc_gap
                .map(|g| format!("largest |roc-auc − dec-auc| {g:.4}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// A p-value with four decimals, or two significant digits below 0.001.
fn fmt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into())
}

/// The online table: per subject accuracy / AUC of the three arms, the means, and the paired
/// tests between each pair of arms.
fn print_online(rows: &[Row], means: &[evaluate::ArmScore; 3], tests: &[evaluate::ArmComparison]) {
    println!(
        "  {:<8} {:>15} {:>15} {:>15}  notes",
        "", "frozen", "unsupervised", "unsup+sup"
    );
    println!(
        "  {:<8} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "subject", "acc", "auc", "acc", "auc", "acc", "auc"
    );
    for r in rows {
        let Some(arms) = r.arms else { continue };
        println!(
            "  {:<8} {:>7.3} {:>7} {:>7.3} {:>7} {:>7.3} {:>7}  {}",
            r.subject,
            arms[0].accuracy,
            fmt(arms[0].auc),
            arms[1].accuracy,
            fmt(arms[1].auc),
            arms[2].accuracy,
            fmt(arms[2].auc),
            r.extra
        );
    }
    println!(
        "  {:<8} {:>7.3} {:>7} {:>7.3} {:>7} {:>7.3} {:>7}",
        "mean",
        means[0].accuracy,
        fmt(means[0].auc),
        means[1].accuracy,
        fmt(means[1].auc),
        means[2].accuracy,
        fmt(means[2].auc),
    );
    println!("  paired tests over subjects (two-sided; better/worse/tied subjects):");
    for row in tests.iter().flat_map(|t| t.rows()) {
        println!("{row}");
    }
}
