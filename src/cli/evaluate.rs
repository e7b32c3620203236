//! `neurostream evaluate --pipeline P... --recording FILES...`: cross-validated, held-out or
//! online accuracy per subject, as a table or JSON.

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
        extra,
        arms: None,
        json,
    }
}

pub fn run(args: EvaluateArgs) -> Result<()> {
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
                    Row {
                        subject: subject.name.clone(),
                        accuracy: cv.accuracy,
                        auc: cv.auc,
                        kappa: cv.pooled.kappa,
                        itr: cv.pooled.itr_bits_per_minute,
                        extra,
                        arms: None,
                        json,
                    }
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
                    let report = evaluate::holdout(&config, &train_epochs, &test_epochs)?;
                    let extra = format!(
                        "train {} / test {} trials",
                        train_epochs.len(),
                        test_epochs.len()
                    );
                    let json = json!({"subject": subject.name, "train_trials": train_epochs.len(), "report": report});
                    row_from_report(&subject.name, &report, extra, json)
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
        let aucs: Option<Vec<f64>> = rows.iter().map(|r| r.auc).collect();
        let mean_auc = aucs.map(|a| a.iter().sum::<f64>() / n);
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
        tables.push((name, rows, mean_acc, mean_auc, online));
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
    for (name, rows, mean_acc, mean_auc, online) in tables {
        println!("\n{name}");
        if let Some((means, tests)) = online {
            print_online(&rows, &means, &tests);
            continue;
        }
        println!(
            "  {:<8} {:>8} {:>8} {:>8} {:>10}  notes",
            "subject", "accuracy", "roc-auc", "kappa", "itr b/min"
        );
        for r in &rows {
            println!(
                "  {:<8} {:>8.3} {:>8} {:>8.3} {:>10}  {}",
                r.subject,
                r.accuracy,
                fmt(r.auc),
                r.kappa,
                fmt(r.itr),
                r.extra
            );
        }
        println!("  {:<8} {:>8.3} {:>8}", "mean", mean_acc, fmt(mean_auc));
    }
    Ok(())
}

/// A p-value with four decimals, or two significant digits below 0.001.
fn p_value(p: f64) -> String {
    if p < 1e-3 {
        format!("{p:.1e}")
    } else {
        format!("{p:.4}")
    }
}

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
    for t in tests {
        for (metric, test) in [("accuracy", &t.accuracy), ("auc", &t.auc)] {
            if let Some(x) = test {
                println!(
                    "    {:<40} {:<8} diff {:+.3}  {:>2}/{:>2}/{:>2}  wilcoxon p {}{}  sign p {}",
                    t.pair,
                    metric,
                    x.mean_difference,
                    x.better,
                    x.worse,
                    x.ties,
                    p_value(x.wilcoxon_p),
                    if x.exact { "" } else { " (normal approx.)" },
                    p_value(x.sign_p)
                );
            }
        }
    }
}
