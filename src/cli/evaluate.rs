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
    /// Calibrate on each subject's first run (file-name order), then decode the later runs
    /// trial by trial, revealing each label after its trial; compare the adapting decoder with
    /// the same decoder frozen after calibration.
    #[arg(long)]
    pub online: bool,
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
    extra: String,
    /// Accuracy and AUC of the frozen copy (online mode).
    frozen: Option<(f64, Option<f64>)>,
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
        frozen: None,
        json,
    }
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
                    Row {
                        subject: subject.name.clone(),
                        accuracy: cv.accuracy,
                        auc: cv.auc,
                        kappa: cv.pooled.kappa,
                        itr: cv.pooled.itr_bits_per_minute,
                        extra,
                        frozen: None,
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
                    let first = subject.files.first().cloned().unwrap_or_default();
                    let (calibration, session) = split(subject, |f| f != first);
                    let calibration = cut(&calibration, &config, "calibration", &subject.name)?;
                    if session.is_empty() {
                        return Err(Error::Other(format!(
                            "subject {}: no later recordings for the online session",
                            subject.name
                        )));
                    }
                    let outcome = evaluate::online(&config, &calibration, &session)?;
                    let extra = format!(
                        "frozen acc {:.3}{}; {} updates",
                        outcome.frozen.accuracy,
                        outcome
                            .frozen
                            .auc
                            .map(|a| format!(" auc {a:.3}"))
                            .unwrap_or_default(),
                        outcome.updates_applied
                    );
                    let json = json!({"subject": subject.name, "online": outcome});
                    let mut row = row_from_report(&subject.name, &outcome.adaptive, extra, json);
                    row.frozen = Some((outcome.frozen.accuracy, outcome.frozen.auc));
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
        all_json.push(json!({
            "pipeline": pipeline_path,
            "decoder": config.decoder.as_ref().map(|d| d.kind()),
            "mode": mode,
            "subjects": rows.iter().map(|r| r.json.clone()).collect::<Vec<_>>(),
            "mean_accuracy": mean_acc,
            "mean_auc": mean_auc,
        }));
        tables.push((name, rows, mean_acc, mean_auc));
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
    let fmt = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
    let heading = match mode {
        "cv" => "cross-validated (mean over folds)",
        "holdout" => "held-out runs",
        _ => "online, adapting decoder (frozen copy in the last column)",
    };
    println!("{heading}");
    for (name, rows, mean_acc, mean_auc) in tables {
        println!("\n{name}");
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
        let frozen: Option<Vec<(f64, Option<f64>)>> = rows.iter().map(|r| r.frozen).collect();
        if let Some(frozen) = frozen {
            let n = frozen.len() as f64;
            let acc = frozen.iter().map(|f| f.0).sum::<f64>() / n;
            let auc: Option<f64> = frozen
                .iter()
                .map(|f| f.1)
                .sum::<Option<f64>>()
                .map(|s| s / n);
            println!(
                "  {:<8} {:>8.3} {:>8}  (the same decoder frozen after calibration)",
                "frozen",
                acc,
                fmt(auc)
            );
        }
    }
    Ok(())
}
