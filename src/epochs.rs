//! Labelled epochs for calibration: the recording runs through the same causal preprocessing
//! as the live pipeline (a [`Replay`] in chunks into the pipeline's [`Preprocessor`](crate::preprocess::Preprocessor)), then one
//! window of the pipeline's window length is cut after each cue. The feature stage then sees
//! exactly what it would see live at the moment the window completes.

use std::path::Path;

pub use crate::config::training::{ClassSpec, TrainingConfig};
use crate::config::PipelineConfig;
use crate::error::{Error, Result};
use crate::features::Window;
use crate::io::Recording;
use crate::source::replay::Replay;
use crate::source::{Pace, Source, SourceItem};
use crate::stream::StreamInfo;

/// Epochs of one or more recordings: `len() × channels × samples`, each epoch channel-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Epochs {
    pub channels: usize,
    pub samples: usize,
    pub rate: f64,
    /// The preprocessed stream (selected channels), as the feature stage sees it.
    pub info: StreamInfo,
    data: Vec<f32>,
    /// Class index per epoch.
    pub labels: Vec<usize>,
    /// Cue onset per epoch (seconds, the recording's clock).
    pub onsets: Vec<f64>,
    /// Index of the recording each epoch came from (order of [`Epochs::append`]).
    pub recording: Vec<usize>,
}

impl Epochs {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn window(&self, i: usize) -> Window<'_> {
        let size = self.channels * self.samples;
        Window {
            data: &self.data[i * size..(i + 1) * size],
            channels: self.channels,
            samples: self.samples,
            rate: self.rate,
            end_timestamp: self.onsets[i],
            slide: None,
        }
    }

    pub fn windows(&self, indices: &[usize]) -> Vec<Window<'_>> {
        indices.iter().map(|&i| self.window(i)).collect()
    }

    /// Concatenate `other` (same channels, rate and length), renumbering its recordings.
    pub fn append(&mut self, other: Epochs) -> Result<()> {
        if other.channels != self.channels
            || other.samples != self.samples
            || other.rate != self.rate
        {
            return Err(Error::Stream(format!(
                "epochs of different shapes cannot be pooled: {} ch × {} samples at {} Hz vs {} ch × {} samples at {} Hz",
                self.channels, self.samples, self.rate, other.channels, other.samples, other.rate
            )));
        }
        let offset = self.recording.iter().max().map_or(0, |m| m + 1);
        self.data.extend_from_slice(&other.data);
        self.labels.extend_from_slice(&other.labels);
        self.onsets.extend_from_slice(&other.onsets);
        self.recording
            .extend(other.recording.iter().map(|r| r + offset));
        Ok(())
    }

    /// Epochs with the given indices, in that order.
    pub fn subset(&self, indices: &[usize]) -> Epochs {
        let size = self.channels * self.samples;
        let mut data = Vec::with_capacity(indices.len() * size);
        for &i in indices {
            data.extend_from_slice(&self.data[i * size..(i + 1) * size]);
        }
        Epochs {
            data,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            onsets: indices.iter().map(|&i| self.onsets[i]).collect(),
            recording: indices.iter().map(|&i| self.recording[i]).collect(),
            info: self.info.clone(),
            ..*self
        }
    }
}

/// Cut the labelled epochs of `recording` with the pipeline's preprocessing, window length and
/// `[training]` classes. Cues whose window would run past the end of the recording are
/// skipped (and logged).
pub fn cut(recording: &Recording, config: &PipelineConfig) -> Result<Epochs> {
    config.training.validate()?;
    let mut replay = Replay::new(recording, None, 32, Pace::AsFastAsPossible)?;
    let input = replay.stream_info().clone();
    let mut preprocess = config.preprocess.build(&input)?;
    let info = preprocess.output_info().clone();
    let rate = input.nominal_rate;
    let (window, _) = config.features.window_and_hop(rate)?;
    let channels = info.channel_count();

    let total = replay.total_samples();
    let mut filtered = vec![0.0f32; channels * total];
    let mut timestamps = Vec::with_capacity(total);
    let mut events = Vec::new();
    let mut position = 0;
    while let Some(item) = replay.next_item()? {
        match item {
            SourceItem::Chunk(mut chunk) => {
                preprocess.process(&mut chunk);
                let n = chunk.samples();
                for c in 0..channels {
                    filtered[c * total + position..c * total + position + n]
                        .copy_from_slice(chunk.channel(c));
                }
                timestamps.extend_from_slice(chunk.timestamps());
                position += n;
            }
            SourceItem::Events(batch) => events.extend(batch),
            SourceItem::Status(_) => {}
        }
    }

    let labelled = events
        .iter()
        .filter(|e| config.training.classes.iter().any(|c| c.event == e.label))
        .count();
    check_cue_density(labelled, window, channels, total)?;

    let half_sample = 0.5 / rate;
    let mut epochs = Epochs {
        channels,
        samples: window,
        rate,
        info,
        data: Vec::new(),
        labels: Vec::new(),
        onsets: Vec::new(),
        recording: Vec::new(),
    };
    epochs.data.reserve_exact(labelled * channels * window);
    let excluded = excluded_onsets(recording);
    let mut skipped = 0;
    let mut left_out = 0;
    for event in &events {
        if excluded
            .iter()
            .any(|&t| (t - event.onset).abs() < half_sample)
        {
            left_out += 1;
            continue;
        }
        let Some(class) = config
            .training
            .classes
            .iter()
            .position(|c| c.event == event.label)
        else {
            continue;
        };
        let start_time = event.onset + config.training.epoch_offset;
        let start = timestamps.partition_point(|&t| t < start_time - half_sample);
        if start + window > total {
            skipped += 1;
            continue;
        }
        for c in 0..channels {
            epochs
                .data
                .extend_from_slice(&filtered[c * total + start..c * total + start + window]);
        }
        epochs.labels.push(class);
        epochs.onsets.push(event.onset);
        epochs.recording.push(0);
    }
    if skipped > 0 {
        tracing::warn!(
            "{skipped} cue(s) too close to the end of the recording for a full window; skipped"
        );
    }
    if left_out > 0 {
        tracing::info!(
            "{left_out} cue(s) left out: the session recorded that nobody saw them \
             (trial_excluded)"
        );
    }
    Ok(epochs)
}

/// Onsets of the cued trials a recorded session left out (`trial_excluded` session events).
fn excluded_onsets(recording: &Recording) -> Vec<f64> {
    let mut onsets = Vec::new();
    for stream in &recording.streams {
        if stream.info.source_id != crate::record::SESSION_STREAM {
            continue;
        }
        let crate::io::StreamData::Markers(events) = &stream.data else {
            continue;
        };
        for event in events {
            if let Ok(crate::engine::SessionEvent::TrialExcluded { onset, .. }) =
                serde_json::from_str(&event.label)
            {
                onsets.push(onset);
            }
        }
    }
    onsets
}

/// How many times over the labelled epochs of a recording may copy its samples. Trials in a
/// real paradigm are seconds apart and their windows overlap little (calibration cues every
/// 4–8 s with 1–4 s windows copy the recording less than once); cues so dense that the epochs
/// would hold the recording more than this many times over are a broken or hostile marker
/// stream, and cutting them would need memory in proportion (1,000,000 cues of 3 channels ×
/// 160 samples: 1.8 GiB from a 13 MB file).
pub const MAX_EPOCH_COVERAGE: usize = 16;

/// Refuses `labelled` epochs of `window` samples from a recording of `total` samples when they
/// would copy it more than [`MAX_EPOCH_COVERAGE`] times over, before anything is allocated.
fn check_cue_density(labelled: usize, window: usize, channels: usize, total: usize) -> Result<()> {
    let budget = MAX_EPOCH_COVERAGE.saturating_mul(total.max(window));
    let needed = labelled.saturating_mul(window);
    if needed <= budget {
        return Ok(());
    }
    let mib = needed as f64 * channels as f64 * 4.0 / (1024.0 * 1024.0);
    Err(Error::Stream(format!(
        "{labelled} labelled cues with a {window}-sample window would copy the {total}-sample \
         recording {:.0} times over ({mib:.0} MiB of epochs); at most {MAX_EPOCH_COVERAGE} times \
         is allowed: cues this dense are not trials, check the marker stream",
        needed as f64 / total.max(1) as f64
    )))
}

/// Cut and pool the epochs of several recordings (same montage and rate).
pub fn cut_all<'a>(
    recordings: impl IntoIterator<Item = &'a Recording>,
    config: &PipelineConfig,
) -> Result<Epochs> {
    cut_all_named(recordings.into_iter().map(|r| (Path::new(""), r)), config)
}

/// [`cut_all`], with each recording's file: an error cutting one names it.
pub fn cut_all_named<'a>(
    recordings: impl IntoIterator<Item = (&'a Path, &'a Recording)>,
    config: &PipelineConfig,
) -> Result<Epochs> {
    let mut pooled: Option<Epochs> = None;
    for (path, recording) in recordings {
        let epochs = cut(recording, config).map_err(|e| {
            if path.as_os_str().is_empty() {
                e
            } else {
                Error::Data(format!("{}: {e}", path.display()))
            }
        })?;
        match &mut pooled {
            None => pooled = Some(epochs),
            Some(p) => p.append(epochs)?,
        }
    }
    pooled.ok_or_else(|| Error::Data("no recordings given".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cue_density_is_bounded_before_allocating() {
        // A 60 s recording at 160 Hz, 1 s windows: 960 cues cover it 16 times, 961 do not.
        assert!(check_cue_density(960, 160, 3, 9600).is_ok());
        assert!(check_cue_density(961, 160, 3, 9600).is_err());
        assert!(check_cue_density(0, 160, 3, 0).is_ok());
        let err = check_cue_density(1_000_000, 160, 3, 9600)
            .unwrap_err()
            .to_string();
        assert!(err.contains("1000000 labelled cues"), "{err}");
        assert!(err.contains("16667 times over"), "{err}");
        assert!(err.contains("check the marker stream"), "{err}");
        assert!(check_cue_density(usize::MAX, 160, 3, 9600).is_err());
    }
}
