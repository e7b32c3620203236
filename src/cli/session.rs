//! `neurostream session`: the whole closed loop for a new user, driven by the cue paradigm
//! page (`/paradigm`): calibration trials → training (CV score, chance warning) → the model
//! hot-loaded and saved → cued online trials with feedback → free mode (or the end of the
//! session with `--stop-when-done`). Cues are planned on the stream's clock and recorded as
//! markers (see `neurostream::paradigm`).
//!
//! The source is the pipeline's: a live headset (`[source] kind = "lsl"`), or the simulator,
//! which here is a *virtual subject* that follows the page's cues (`follow_cues`), so the
//! whole loop runs without a headset — the default pipeline does exactly that.

use std::path::PathBuf;

use clap::Args;
use neurostream::closed_loop::{ClosedLoop, CueSource};
use neurostream::engine::{needs_model, Engine};
use neurostream::pipeline::{PipelineConfig, SourceConfig};
use neurostream::source::Source;
use neurostream::{Error, Result};

/// The headset-free session: the virtual subject (simulator following the cues) through
/// mu/beta band power over the motor strip and shrinkage LDA, left vs right hand.
pub const SESSION_PIPELINE: &str = r#"
description = "Session: virtual subject following the paradigm page, mu/beta band power + LDA"

[source]
kind = "simulator"
seed = 7
montage = "motor16"
follow_cues = true

[preprocess]
channels = ["Fc3", "C3", "Cp3", "Cz", "Fc4", "C4", "Cp4"]
reference = "none"

[preprocess.bandpass]
low = 6.0
high = 32.0
order = 4

[features]
window_seconds = 2.0
hop_seconds = 0.25

[features.band_power]
method = "welch"
segment_seconds = 0.5
overlap = 0.5
log = true
bands = [{ name = "mu", low = 8.0, high = 13.0 }, { name = "beta", low = 16.0, high = 26.0 }]

[decoder]
kind = "lda"

[training]
classes = [{ event = "T1", name = "left" }, { event = "T2", name = "right" }]
epoch_offset = 0.5
folds = 5
seed = 42

[control]
commands = [{ class = "left", command = "turn_left" }, { class = "right", command = "turn_right" }]
threshold = 0.7
dwell = 3
refractory_seconds = 1.0

[paradigm]
cues = "page"
calibration_trials = 20
online_trials_per_class = 10
fixation_seconds = 2.0
cue_seconds = 1.25
imagery_seconds = 2.75
break_min_seconds = 1.5
break_max_seconds = 2.5
"#;

#[derive(Args)]
pub struct SessionArgs {
    /// Pipeline file (TOML). Default: the virtual subject (simulator following the cues).
    /// `[paradigm] cues` is set to "page": the session's cues come from the paradigm.
    #[arg(long, short)]
    pub pipeline: Option<PathBuf>,
    /// Start online with this model instead of calibrating.
    #[arg(long, short)]
    pub model: Option<PathBuf>,
    /// Where the calibrated model is saved (default: model-<unix time>.json here); an
    /// existing file is not overwritten.
    #[arg(long)]
    pub model_out: Option<PathBuf>,
    /// End the session once the cued online trials are done, instead of staying in free mode
    /// (no cues) until Ctrl-C.
    #[arg(long)]
    pub stop_when_done: bool,
    #[command(flatten)]
    pub serve: super::ServeArgs,
}

pub fn run(args: SessionArgs) -> Result<()> {
    let mut config = match &args.pipeline {
        Some(path) => PipelineConfig::from_file(path)?,
        None => PipelineConfig::from_toml(SESSION_PIPELINE, "the built-in session pipeline")?,
    };
    if !needs_model(&config) {
        return Err(Error::config(
            "pipeline",
            "a session calibrates a decoder, but this pipeline has no [decoder] (nor CSP or \
             tangent-space features) to calibrate",
        ));
    }
    if config.paradigm.cues != CueSource::Page {
        tracing::info!("session: cues come from the paradigm page ([paradigm] cues = \"page\")");
        config.paradigm.cues = CueSource::Page;
    }
    // The simulator is the virtual subject: it imagines what the paradigm cues.
    if let SourceConfig::Simulator(simulator) = &mut config.source {
        simulator.follow_cues = true;
    }
    config.validate()?;
    let model = args
        .model
        .as_deref()
        .map(neurostream::model::Model::load)
        .transpose()?;
    let (source, follower): (Box<dyn Source>, _) = match &config.source {
        SourceConfig::Simulator(simulator) => {
            let simulator = simulator.build()?;
            let follower = simulator.cue_follower();
            (Box::new(simulator), follower)
        }
        other => (other.build()?, None),
    };
    let info = source.stream_info().clone();
    let model_out = match model {
        Some(_) => None,
        None => Some(super::model_out_path(args.model_out.as_deref())?),
    };
    if let Some(path) = &model_out {
        tracing::info!(
            "calibrating: {} cued trials per class, then the model is saved to {} and {} \
             online trials per class run with feedback",
            config.paradigm.calibration_trials,
            path.display(),
            config.paradigm.online_trials_per_class
        );
    }
    let mut closed_loop =
        ClosedLoop::new(&config, &info, model.is_some(), model_out)?.ok_or_else(|| {
            Error::config(
                config.origin(),
                "this pipeline has no closed loop to run (add a [paradigm] table)",
            )
        })?;
    if let Some(follower) = follower {
        closed_loop.set_follower(follower);
    }
    closed_loop.set_stop_when_done(args.stop_when_done);
    let engine = Engine::build(&config, &info, model.clone())?;
    super::check_record_path(&args.serve)?;
    let mut service = args.serve.config();
    if let Some(path) = &args.serve.record {
        service.record = Some(neurostream::record::RecordConfig {
            path: path.clone(),
            session: neurostream::record::Session::new(&config, model.as_ref())?,
            overwrite: args.serve.overwrite,
        });
    }
    super::run_service(service, |service| async move {
        neurostream::service::Service::start_session(service, source, engine, Some(closed_loop))
            .await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_session_pipeline_is_valid_and_uses_page_cues() {
        let config = PipelineConfig::from_toml(SESSION_PIPELINE, "built-in").unwrap();
        config.validate().unwrap();
        config.paradigm.validate().unwrap();
        assert_eq!(config.paradigm.cues, CueSource::Page);
    }
}
