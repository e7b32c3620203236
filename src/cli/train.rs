//! `neurostream train --pipeline P --recording FILES... --out MODEL`: calibrate a decoder.
//!
//! `--population` builds a population prior instead (recordings grouped into people by their
//! parent folder); `--prior FILE` trains a person's model from a prior and their own
//! calibration (see `neurostream::population`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use neurostream::epochs::{ClassSpec, Epochs};
use neurostream::pipeline::PipelineConfig;
use neurostream::population::{self, PopulationPrior};
use neurostream::{epochs, evaluate, io, Error, Result};

#[derive(Args)]
pub struct TrainArgs {
    /// Pipeline file with [features], [decoder] and [training] tables.
    #[arg(long, short)]
    pub pipeline: PathBuf,
    /// Calibration recordings (same montage and rate), e.g. S001R04.edf S001R08.edf.
    #[arg(long, short, num_args = 1.., required = true)]
    pub recording: Vec<PathBuf>,
    /// Where to write the model (JSON), or the prior with --population.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Build a population prior from many people's recordings (grouped into people by their
    /// parent folder, e.g. .../S001/S001R04.edf); needs [features.tangent_space].
    #[arg(long, conflicts_with = "prior")]
    pub population: bool,
    /// Source and licence of the recordings, stored in the prior (with --population).
    #[arg(long, requires = "population")]
    pub source: Option<String>,
    /// Train this person from a population prior plus their own calibration.
    #[arg(long)]
    pub prior: Option<PathBuf>,
    /// With --prior: labelled trials per class to use (the first N of each class, in
    /// recording order); 0 = the population decoder on the person's own mean. Default: all.
    #[arg(long, requires = "prior")]
    pub labelled_per_class: Option<usize>,
    /// With --prior: weight τ of the prior, in trials (the person's statistics get
    /// n/(n + τ)).
    #[arg(long, requires = "prior", default_value_t = population::DEFAULT_STRENGTH)]
    pub prior_strength: f64,
    /// With --prior: estimate the person's own mean from the windows after this (unlabelled)
    /// event, e.g. T0 = rest, instead of from the calibration cues without their labels.
    #[arg(long, requires = "prior")]
    pub rest_event: Option<String>,
}

/// Recordings grouped into people by their parent folder, in name order.
pub fn group_by_person(files: &[PathBuf]) -> BTreeMap<String, Vec<PathBuf>> {
    let mut groups: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for f in files {
        let person = f
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| ".".into());
        groups.entry(person).or_default().push(f.clone());
    }
    for files in groups.values_mut() {
        files.sort();
    }
    groups
}

/// Each person's labelled epochs.
pub fn people_epochs(config: &PipelineConfig, files: &[PathBuf]) -> Result<Vec<(String, Epochs)>> {
    group_by_person(files)
        .into_iter()
        .map(|(person, files)| {
            let recordings = files.iter().map(io::open).collect::<Result<Vec<_>>>()?;
            let epochs = epochs::cut_all(&recordings, config)
                .map_err(|e| Error::Data(format!("{person}: {e}")))?;
            Ok((person, epochs))
        })
        .collect()
}

fn names(files: &[PathBuf]) -> Vec<String> {
    files.iter().map(|p| p.display().to_string()).collect()
}

pub fn run(args: TrainArgs) -> Result<()> {
    let config = PipelineConfig::load(&args.pipeline)?;
    if args.population {
        return build_population(&config, &args);
    }
    if let Some(prior) = &args.prior {
        return train_with_prior(&config, prior, &args);
    }
    let recordings = args
        .recording
        .iter()
        .map(io::open)
        .collect::<Result<Vec<_>>>()?;
    let epochs = epochs::cut_all_named(
        args.recording.iter().map(|p| p.as_path()).zip(&recordings),
        &config,
    )?;
    let model = evaluate::train(&config, &epochs, names(&args.recording))?;
    model.save(&args.out)?;
    let mut counts = vec![0usize; config.training.classes.len()];
    for &l in &epochs.labels {
        counts[l] += 1;
    }
    let per_class: Vec<String> = config
        .training
        .classes
        .iter()
        .zip(&counts)
        .map(|(c, n)| format!("{} ({}) ×{n}", c.name, c.event))
        .collect();
    println!(
        "trained {} on {} epoch(s) [{}], {} channel(s) × {} samples → {}",
        config.decoder.as_ref().map_or("?", |d| d.kind()),
        epochs.len(),
        per_class.join(", "),
        epochs.channels,
        epochs.samples,
        args.out.display()
    );
    match (&model.calibration, &model.operating_point) {
        (Some(calibration), Some(op)) => println!(
            "calibrated on {} out-of-fold epoch(s) ({:?}{}); operating point: threshold {:.3}, \
             expected precision {:.3} (target {}{}), commands on {:.0} % of windows{}",
            calibration.fitted_on,
            calibration.map,
            if calibration.refused_slope.is_some() {
                ", wrong-sign fit refused"
            } else {
                ""
            },
            op.threshold,
            op.expected_precision,
            op.target_precision,
            if op.reached_target {
                ""
            } else {
                ", not reached: near chance"
            },
            100.0 * op.expected_command_share,
            match config.control.threshold {
                Some(t) => format!("; [control] threshold = {t} overrides it"),
                None => String::new(),
            }
        ),
        _ => println!("not calibrated (too few epochs per class for cross-validation)"),
    }
    Ok(())
}

fn build_population(config: &PipelineConfig, args: &TrainArgs) -> Result<()> {
    let people = people_epochs(config, &args.recording)?;
    let source = args.source.clone().unwrap_or_default();
    let prior = population::build_prior(config, &people, source)?;
    prior.save(&args.out)?;
    println!(
        "population prior from {} people ({} trials), {} channel(s), {} features → {}",
        people.len(),
        people.iter().map(|(_, e)| e.len()).sum::<usize>(),
        prior.fingerprint.channels.len(),
        prior.dim(),
        args.out.display()
    );
    Ok(())
}

fn train_with_prior(config: &PipelineConfig, prior_path: &Path, args: &TrainArgs) -> Result<()> {
    let prior = PopulationPrior::load(prior_path)?;
    let recordings = args
        .recording
        .iter()
        .map(io::open)
        .collect::<Result<Vec<_>>>()?;
    let epochs = epochs::cut_all(&recordings, config)?;
    let classes = config.training.classes.len();
    let mut labelled = Vec::new();
    for c in 0..classes {
        let of_class = (0..epochs.len()).filter(|&i| epochs.labels[i] == c);
        match args.labelled_per_class {
            Some(k) => labelled.extend(of_class.take(k)),
            None => labelled.extend(of_class),
        }
    }
    labelled.sort_unstable();
    let (reference, mean_windows) = match &args.rest_event {
        Some(event) => {
            // The rest event as an extra class 0 (a pipeline needs two classes); only its
            // windows are used, without labels.
            let mut rest_config = config.clone();
            rest_config.training.classes.insert(
                0,
                ClassSpec {
                    event: event.clone(),
                    name: "rest".into(),
                },
            );
            let cut = epochs::cut_all(&recordings, &rest_config)?;
            let rest: Vec<usize> = (0..cut.len()).filter(|&i| cut.labels[i] == 0).collect();
            if rest.is_empty() {
                return Err(Error::Data(format!(
                    "no windows after event {event:?} in the recordings to estimate the person's mean"
                )));
            }
            (population::own_mean(config, &cut, &rest)?, rest.len())
        }
        None => {
            let all: Vec<usize> = (0..epochs.len()).collect();
            (population::own_mean(config, &epochs, &all)?, epochs.len())
        }
    };
    let model = population::person_model(
        config,
        &prior,
        &epochs,
        &labelled,
        reference,
        args.prior_strength,
        names(&args.recording),
    )?;
    model.save(&args.out)?;
    println!(
        "trained lda from the population prior ({} people) + {} labelled trial(s) of {} (τ = {}), own mean from {} {} window(s) → {}",
        prior.subjects.len(),
        labelled.len(),
        epochs.len(),
        args.prior_strength,
        mean_windows,
        args.rest_event.as_deref().unwrap_or("calibration (labels unused)"),
        args.out.display()
    );
    Ok(())
}

/// `evaluate --population`: leave-one-subject-out with the prior, beside person-only.
pub fn evaluate_population(pipeline: &Path, recordings: &[PathBuf], json: bool) -> Result<()> {
    let config = PipelineConfig::load(pipeline)?;
    let people = people_epochs(&config, recordings)?;
    let bar = super::progress_bar(
        people.len() as u64 * (config.training.folds as u64 + 2),
        "steps",
    );
    // τ = 20 was fixed before the 35-subject run; τ = 80 was added after the Python prototype's
    // first subjects showed the prior alone doing well (exploratory, reported as such).
    let strengths = [population::DEFAULT_STRENGTH, 80.0];
    let report = population::loso(&config, &people, &[5, 10], &strengths, |m| {
        bar.set_message(m.to_owned());
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| Error::Internal(e.to_string()))?
        );
        return Ok(());
    }
    print!("{}", population::render(&report));
    Ok(())
}
