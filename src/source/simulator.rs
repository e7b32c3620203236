//! Synthetic motor-imagery EEG with cue markers: the headset-free default for demos and tests.
//!
//! The output is meant to be *plausible*, not a biophysical model: close enough to the PhysioNet
//! EEG Motor Movement/Imagery Database (EEGMMIDB) that the same pipelines run on both (160 Hz,
//! µV, the same channel labels and the same `T0`/`T1`/`T2` cue labels), and that a
//! motor-imagery decoder (band power, CSP) trained on it learns the textbook thing: mu/beta
//! power over the hemisphere contralateral to the imagined hand drops.
//!
//! # Signal model
//!
//! Every channel, in µV, is the sum of:
//!
//! - **Background**, RMS `noise_uv`: pink ("1/f") noise, because resting EEG power falls with
//!   frequency roughly as 1/f^α (α ≈ 1–2). Each noise generator is white Gaussian noise through
//!   a cascade of four first-order pole/zero sections whose corners alternate on a logarithmic
//!   frequency axis (poles at 0.5, 2, 8, 32 Hz, each zero 2^α above its pole): the magnitude
//!   response is a staircase that averages to 1/f^α with α = [`PINK_ALPHA`]. It costs a few
//!   multiply-adds per sample; no FFT. Half the background variance is channel-private and half
//!   comes from nine shared pink sources on a coarse grid over the scalp, mixed in with
//!   Gaussian weights of distance: neighbouring electrodes are correlated, as volume conduction
//!   makes them in real EEG, which matters for spatial filters (CAR, CSP) to have something
//!   realistic to do.
//! - **Occipital alpha** (9.5–10.5 Hz, strongest at O1/Oz/O2, spreading to parietal sites).
//! - **Sensorimotor mu** (10–12 Hz) and **beta** (18–22 Hz), one generator per hemisphere
//!   centred on C3 and C4 with neighbours (Fc3, C1, C5, Cp3...) at smaller weight.
//!
//! Each rhythm is a *stochastic* oscillator: white noise through a two-pole resonator
//! (bandwidth 1.5–3 Hz), times a slow log-normal envelope (≈1.5 s time constant). That gives
//! the waxing and waning, and the amplitude and phase wander, of real rhythms; a pure sine
//! would be trivially separable and would make every spectral test meaningless. Peak
//! frequencies are drawn once from the seed, so different "subjects" differ slightly.
//!
//! # Trials
//!
//! Cues follow the EEGMMIDB imagery runs: rest `T0` for `trial.rest_seconds` (4.2 s), then a
//! cue for `trial.cue_seconds` (4.1 s), `T1` = imagine the LEFT fist, `T2` = the RIGHT fist,
//! repeating. Classes come in shuffled blocks of four (two of each) from the seeded RNG, so any
//! stretch of recording is balanced within a trial or two yet the order is unpredictable.
//! During a cue, the mu and beta generators of the hemisphere *contralateral* to the imagined
//! hand (T1 → right, T2 → left) are scaled by `1 − erd_depth` (event-related
//! desynchronisation). The gain glides there through two cascaded one-pole smoothers
//! (τ = 0.12 s: ~90 % of the drop after 0.5 s, and continuous in slope), and glides back after
//! the cue, because a step would put a broadband transient in every window that straddles an
//! onset. The 10-10 convention places odd-numbered electrodes on the left, even on the right,
//! `z` on the midline; electrode positions here are a flat grid derived from the labels (see
//! [`grid_position`]), enough for "near" and "far".
//!
//! # Determinism
//!
//! Output depends only on the configuration and the seed, bit for bit. Samples are generated
//! one at a time from a ChaCha8 stream, drawing random numbers in a fixed order per sample, so
//! `chunk_samples`, `speed` and `duration_seconds` change how the samples are cut and paced,
//! never their values. Cue classes and per-"subject" parameters use their own ChaCha streams,
//! so they cannot shift the signal's random sequence either.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use super::{Pace, Pacer, Source, SourceItem};
use crate::error::{Error, Result};
use crate::io::{RecordedStream, Recording, StreamData};
use crate::source::cues::{CueFollower, Imagery};
use crate::stream::{ChannelInfo, Chunk, Event, StreamInfo, ValueFormat, IRREGULAR_RATE};
use crate::validate::Problems;

/// Lowest and highest accepted sampling rates (Hz). The 18–22 Hz beta rhythm needs a Nyquist
/// frequency comfortably above it; above 16 kHz nothing about EEG changes, only the cost.
pub const MIN_RATE: f64 = 64.0;
pub const MAX_RATE: f64 = 16384.0;

/// Spectral exponent of the background: power ∝ 1/f^PINK_ALPHA between 0.5 Hz and ~30 Hz.
pub const PINK_ALPHA: f64 = 1.5;

/// Error origin for configuration problems: the simulator settings, wherever they came from.
const ORIGIN: &str = "simulator";

/// Electrode layout of the simulated headset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Montage {
    /// 16 channels over the sensorimotor strip plus three occipital ones: enough for a
    /// motor-imagery decoder and for alpha, cheap enough for demos.
    #[default]
    Motor16,
    /// The 64 EEGMMIDB channels in PhysioNet's file order, so recordings line up with the real
    /// data channel for channel.
    Eegmmidb64,
}

const MOTOR16: [&str; 16] = [
    "Fc3", "Fcz", "Fc4", "C5", "C3", "C1", "Cz", "C2", "C4", "C6", "Cp3", "Cpz", "Cp4", "O1", "Oz",
    "O2",
];

const EEGMMIDB64: [&str; 64] = [
    "Fc5", "Fc3", "Fc1", "Fcz", "Fc2", "Fc4", "Fc6", "C5", "C3", "C1", "Cz", "C2", "C4", "C6",
    "Cp5", "Cp3", "Cp1", "Cpz", "Cp2", "Cp4", "Cp6", "Fp1", "Fpz", "Fp2", "Af7", "Af3", "Afz",
    "Af4", "Af8", "F7", "F5", "F3", "F1", "Fz", "F2", "F4", "F6", "F8", "Ft7", "Ft8", "T7", "T8",
    "T9", "T10", "Tp7", "Tp8", "P7", "P5", "P3", "P1", "Pz", "P2", "P4", "P6", "P8", "Po7", "Po3",
    "Poz", "Po4", "Po8", "O1", "Oz", "O2", "Iz",
];

impl Montage {
    /// Channel labels in stream order (10-10 names, EEGMMIDB capitalisation).
    pub fn labels(self) -> &'static [&'static str] {
        match self {
            Montage::Motor16 => &MOTOR16,
            Montage::Eegmmidb64 => &EEGMMIDB64,
        }
    }
}

/// Timing of the cued trials (EEGMMIDB imagery runs: 4.2 s rest, 4.1 s cue).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrialConfig {
    /// Length of each rest period (`T0`), seconds.
    pub rest_seconds: f64,
    /// Length of each imagery cue (`T1` / `T2`), seconds.
    pub cue_seconds: f64,
}

impl Default for TrialConfig {
    fn default() -> Self {
        TrialConfig {
            rest_seconds: 4.2,
            cue_seconds: 4.1,
        }
    }
}

/// Settings of the simulated headset (the `[source]` table of a pipeline file when the source
/// is the simulator). Every field has a default, so an empty table is a valid configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatorConfig {
    /// Seed of every random choice; same seed and settings → bit-identical output.
    pub seed: u64,
    /// Samples per second (EEGMMIDB: 160).
    pub rate: f64,
    pub montage: Montage,
    /// Samples per emitted chunk (16 at 160 Hz = 100 ms, a typical LSL chunk).
    pub chunk_samples: usize,
    /// Stop after this many seconds; `None` runs forever.
    pub duration_seconds: Option<f64>,
    /// 1.0 = real time, 2.0 twice as fast, `<= 0` as fast as the consumer takes chunks.
    pub speed: f64,
    pub trial: TrialConfig,
    /// Fraction of the mu/beta amplitude suppressed over the contralateral hemisphere during
    /// imagery cues (0 = no effect, 1 = complete suppression).
    pub erd_depth: f64,
    /// RMS of the background (pink) noise per channel, µV. With the rhythms on top, channel
    /// standard deviations land at 25–30 µV by default, the scale of EEGMMIDB.
    pub noise_uv: f64,
    /// A virtual subject: instead of its own rest/cue schedule (and markers), imagine what
    /// the service's paradigm cues, live, through [`Simulator::cue_follower`] (see
    /// [`crate::paradigm`]). Without a paradigm writing to it, the subject rests throughout.
    pub follow_cues: bool,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            seed: 42,
            rate: 160.0,
            montage: Montage::Motor16,
            chunk_samples: 16,
            duration_seconds: None,
            speed: 1.0,
            trial: TrialConfig::default(),
            erd_depth: 0.5,
            noise_uv: 25.0,
            follow_cues: false,
        }
    }
}

impl SimulatorConfig {
    /// Every range of a simulator `[source]` into `problems`; keys are `source.…`.
    pub fn check(&self, problems: &mut Problems) {
        problems.closed(
            "source.rate",
            self.rate,
            MIN_RATE,
            MAX_RATE,
            &format!("{MIN_RATE} <= rate <= {MAX_RATE} samples per second"),
        );
        problems.require(
            (1..=1 << 20).contains(&self.chunk_samples),
            "source.chunk_samples",
            self.chunk_samples,
            format!("1 <= chunk_samples <= {}", 1 << 20),
        );
        if let Some(d) = self.duration_seconds {
            problems.require(
                d.is_finite() && d > 0.0,
                "source.duration_seconds",
                d,
                "a finite number of seconds > 0 (leave it out to run forever)",
            );
        }
        problems.require(
            self.speed.is_finite(),
            "source.speed",
            self.speed,
            "a finite number (1 = real time, <= 0 = as fast as possible)",
        );
        // At least 0.5 s so the ERD glide fits inside a cue; an hour is far beyond any paradigm.
        problems.closed(
            "source.trial.rest_seconds",
            self.trial.rest_seconds,
            0.5,
            3600.0,
            "0.5 to 3600 seconds",
        );
        problems.closed(
            "source.trial.cue_seconds",
            self.trial.cue_seconds,
            0.5,
            3600.0,
            "0.5 to 3600 seconds",
        );
        problems.closed(
            "source.erd_depth",
            self.erd_depth,
            0.0,
            1.0,
            "0 to 1 (fraction of mu/beta amplitude)",
        );
        problems.closed(
            "source.noise_uv",
            self.noise_uv,
            0.0,
            1000.0,
            "0 to 1000 µV RMS",
        );
    }

    /// [`SimulatorConfig::check`] as a `Result` listing every problem.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Problems::new();
        self.check(&mut problems);
        problems.into_result(ORIGIN)
    }

    /// Validate and build the source.
    pub fn build(&self) -> Result<Simulator> {
        self.validate()?;
        let engine = Engine::new(self);
        let channels = self
            .montage
            .labels()
            .iter()
            .map(|&label| ChannelInfo {
                label: label.to_string(),
                unit: "uV".to_string(),
                kind: "EEG".to_string(),
            })
            .collect();
        let source_id = format!("neurostream-sim-{}", self.seed);
        let info = StreamInfo {
            name: "neurostream-sim".to_string(),
            stream_type: "EEG".to_string(),
            source_id: source_id.clone(),
            channels,
            nominal_rate: self.rate,
            format: ValueFormat::Float32,
        };
        let marker_info = StreamInfo {
            name: "neurostream-sim-markers".to_string(),
            stream_type: "Markers".to_string(),
            source_id: format!("{source_id}-markers"),
            channels: vec![ChannelInfo::new("Markers", "")],
            nominal_rate: IRREGULAR_RATE,
            format: ValueFormat::String,
        };
        let total_samples = self.duration_seconds.map(|d| samples_at(d, self.rate));
        Ok(Simulator {
            config: self.clone(),
            info,
            marker_info,
            engine,
            total_samples,
            pacer: None,
            pending: None,
            follower: self.follow_cues.then(CueFollower::new),
            imagery: Vec::new(),
        })
    }
}

impl Simulator {
    /// The same simulated headset under another stream name and source id (the marker stream
    /// follows as `NAME-markers`), e.g. to publish several on LSL.
    pub fn renamed(mut self, name: &str, source_id: Option<&str>) -> Self {
        let source_id = source_id.map_or_else(|| self.info.source_id.clone(), str::to_owned);
        self.marker_info.name = format!("{name}-markers");
        self.marker_info.source_id = format!("{source_id}-markers");
        self.info.name = name.to_owned();
        self.info.source_id = source_id;
        self
    }
}

/// Index of the sample at `seconds` (nearest), the one place times become sample counts.
fn samples_at(seconds: f64, rate: f64) -> u64 {
    (seconds * rate).round() as u64
}

/// The simulated headset as a [`Source`]: chunks of `chunk_samples`, each followed by the cue
/// markers whose onsets fall inside it. Build with [`SimulatorConfig::build`].
#[derive(Debug)]
pub struct Simulator {
    config: SimulatorConfig,
    info: StreamInfo,
    marker_info: StreamInfo,
    engine: Engine,
    total_samples: Option<u64>,
    /// Started on the first chunk, not at build time, so a source built early does not burst.
    pacer: Option<Pacer>,
    /// Markers of the chunk just yielded, handed out by the next call.
    pending: Option<Vec<Event>>,
    /// `follow_cues`: what the paradigm cues, and the imagery of each sample of a chunk.
    follower: Option<Arc<CueFollower>>,
    imagery: Vec<Imagery>,
}

impl Simulator {
    pub fn config(&self) -> &SimulatorConfig {
        &self.config
    }

    /// Samples generated so far (the index of the next sample).
    pub fn samples_generated(&self) -> u64 {
        self.engine.sample
    }

    /// With `follow_cues`, the handle a paradigm writes its cues to.
    pub fn cue_follower(&self) -> Option<Arc<CueFollower>> {
        self.follower.clone()
    }
}

impl Source for Simulator {
    fn stream_info(&self) -> &StreamInfo {
        &self.info
    }

    fn marker_info(&self) -> Option<&StreamInfo> {
        Some(&self.marker_info)
    }

    fn next_item(&mut self) -> Result<Option<SourceItem>> {
        if let Some(events) = self.pending.take() {
            return Ok(Some(SourceItem::Events(events)));
        }
        let start = self.engine.sample;
        let n = match self.total_samples {
            Some(total) if start >= total => return Ok(None),
            Some(total) => (total - start).min(self.config.chunk_samples as u64) as usize,
            None => self.config.chunk_samples,
        };
        let channels = self.info.channel_count();
        let mut data = vec![0.0f32; channels * n];
        let mut timestamps = vec![0.0f64; n];
        match &self.follower {
            Some(follower) => {
                for (s, t) in timestamps.iter_mut().enumerate() {
                    *t = (self.engine.sample + s as u64) as f64 / self.config.rate;
                }
                self.imagery.resize(n, Imagery::Other);
                follower.imagery_at(&timestamps, &mut self.imagery);
                self.engine
                    .generate_following(&self.imagery, &mut data, &mut timestamps);
            }
            None => self.engine.generate(&mut data, &mut timestamps),
        }
        let pacer = self
            .pacer
            .get_or_insert_with(|| Pacer::new(Pace::from_speed(self.config.speed)));
        // A chunk exists once its last sample period has elapsed, as with a real amplifier.
        pacer.wait_until(self.engine.sample as f64 / self.config.rate);
        if !self.engine.events.is_empty() {
            self.pending = Some(std::mem::take(&mut self.engine.events));
        }
        Ok(Some(SourceItem::Chunk(Chunk::from_channel_major(
            channels, data, timestamps,
        ))))
    }
}

/// Generate `seconds` of simulated EEG as a [`Recording`]: the signal stream (same values as
/// the [`Simulator`] source would yield for `config`) and a marker stream with every cue whose
/// onset falls inside the recording. `config.duration_seconds`, `speed` and `chunk_samples`
/// are ignored.
pub fn record(config: &SimulatorConfig, seconds: f64) -> Result<Recording> {
    config.validate()?;
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(Error::config(
            ORIGIN,
            format!("recording length {seconds} s is out of range: expected a finite number of seconds > 0"),
        ));
    }
    let mut sim = config.build()?;
    let n = samples_at(seconds, config.rate) as usize;
    let channels = sim.info.channel_count();
    let mut values = vec![0.0f32; channels * n];
    let mut timestamps = vec![0.0f64; n];
    sim.engine.generate(&mut values, &mut timestamps);
    let events = std::mem::take(&mut sim.engine.events);
    let signal = RecordedStream {
        info: sim.info.clone(),
        timestamps,
        data: StreamData::Signal { samples: n, values },
    };
    let markers = RecordedStream {
        info: sim.marker_info.clone(),
        timestamps: events.iter().map(|e| e.onset).collect(),
        data: StreamData::Markers(events),
    };
    Ok(Recording {
        streams: vec![signal, markers],
    })
}

/// Approximate scalp position of a 10-10 label on a flat grid, in electrode spacings:
/// `x` left (−) to right (+) from the number (odd → left, even → right, `z` → 0; 1/2 are one
/// step from the midline, 3/4 two...), `y` front (+) to back (−) from the letters (Fp +4 ...
/// C/T 0 ... O −4, Iz −5). Crude, but all the model needs is which electrodes are near which.
pub fn grid_position(label: &str) -> Option<(f64, f64)> {
    let split = label.find(|c: char| c.is_ascii_digit() || c == 'z' || c == 'Z')?;
    let (row, col) = label.split_at(split);
    let y = match row.to_ascii_lowercase().as_str() {
        "fp" => 4.0,
        "af" => 3.0,
        "f" => 2.0,
        "fc" | "ft" => 1.0,
        "c" | "t" => 0.0,
        "cp" | "tp" => -1.0,
        "p" => -2.0,
        "po" => -3.0,
        "o" => -4.0,
        "i" => -5.0,
        _ => return None,
    };
    let x = if col.eq_ignore_ascii_case("z") {
        0.0
    } else {
        let n: u32 = col.parse().ok()?;
        if n == 0 {
            return None;
        }
        if n % 2 == 1 {
            -f64::from(n.div_ceil(2))
        } else {
            f64::from(n / 2)
        }
    };
    Some((x, y))
}

/// Weight of a source at `src` seen from `at`: Gaussian in grid distance, a stand-in for the
/// spatial blurring of the skull.
fn spatial_weight(at: (f64, f64), src: (f64, f64), sigma: f64) -> f64 {
    let d2 = (at.0 - src.0).powi(2) + (at.1 - src.1).powi(2);
    (-d2 / (2.0 * sigma * sigma)).exp()
}

/// Output energy (= variance for unit white input) of a linear filter's impulse response, by
/// running it until the response has decayed. Build-time only.
fn impulse_energy(time_constant_samples: f64, mut step: impl FnMut(f64) -> f64) -> f64 {
    let n = (40.0 * time_constant_samples).ceil() as usize + 64;
    let mut energy = 0.0;
    for i in 0..n {
        let y = step(if i == 0 { 1.0 } else { 0.0 });
        energy += y * y;
    }
    energy
}

const PINK_SECTIONS: usize = 4;

/// Shared coefficients of the 1/f^α noise shaper (see the module doc); each noise generator
/// keeps its own `PinkState`.
#[derive(Debug, Clone)]
struct PinkShape {
    poles: [f64; PINK_SECTIONS],
    zeros: [f64; PINK_SECTIONS],
    /// Input scale that makes the output variance 1 for unit-variance white input.
    gain: f64,
}

/// `[x0(n−1), y0(n−1), y1(n−1), y2(n−1), y3(n−1)]`: the previous input of the first section and
/// the previous output of each section (= previous input of the next).
type PinkState = [f64; PINK_SECTIONS + 1];

impl PinkShape {
    fn new(rate: f64) -> Self {
        // Matched-z: a corner at f Hz becomes a root at exp(−2πf/rate).
        let root = |f: f64| (-2.0 * std::f64::consts::PI * f / rate).exp();
        let mut poles = [0.0; PINK_SECTIONS];
        let mut zeros = [0.0; PINK_SECTIONS];
        for k in 0..PINK_SECTIONS {
            let pole_hz = 0.5 * 4f64.powi(k as i32);
            poles[k] = root(pole_hz);
            // Each pole→zero span falls at −20 dB/decade (power), each zero→next pole span is
            // flat; a zero 4^(α/2) above its pole makes the average slope −10·α dB/decade.
            zeros[k] = root(pole_hz * 4f64.powf(PINK_ALPHA / 2.0));
        }
        let mut shape = PinkShape {
            poles,
            zeros,
            gain: 1.0,
        };
        let mut state = PinkState::default();
        let slowest = 1.0 / (1.0 - poles[0]);
        let energy = impulse_energy(slowest, |x| shape.step(&mut state, x));
        shape.gain = 1.0 / energy.sqrt();
        shape
    }

    #[inline(always)]
    fn step(&self, s: &mut PinkState, input: f64) -> f64 {
        let mut x = input * self.gain;
        for k in 0..PINK_SECTIONS {
            let y = x - self.zeros[k] * s[k] + self.poles[k] * s[k + 1];
            s[k] = x;
            x = y;
        }
        s[PINK_SECTIONS] = x;
        x
    }
}

/// A stochastic rhythm: white noise through a two-pole resonator at `freq` with bandwidth
/// `bandwidth` (unit output variance), times a slow log-normal envelope with unit mean square.
#[derive(Debug, Clone)]
struct Rhythm {
    a1: f64,
    a2: f64,
    in_gain: f64,
    y1: f64,
    y2: f64,
    /// AR(1) coefficient and innovation scale of the log-envelope (unit variance).
    env_a: f64,
    env_b: f64,
    env: f64,
    env_sigma: f64,
}

impl Rhythm {
    fn new(rate: f64, freq: f64, bandwidth: f64, env_seconds: f64, env_sigma: f64) -> Self {
        use std::f64::consts::PI;
        // Pole radius from the −3 dB bandwidth: 1 − r ≈ πB/rate.
        let r = (-PI * bandwidth / rate).exp();
        let a1 = 2.0 * r * (2.0 * PI * freq / rate).cos();
        let a2 = -r * r;
        let mut rhythm = Rhythm {
            a1,
            a2,
            in_gain: 1.0,
            y1: 0.0,
            y2: 0.0,
            env_a: (-1.0 / (env_seconds * rate)).exp(),
            env_b: 0.0,
            env: 0.0,
            env_sigma,
        };
        rhythm.env_b = (1.0 - rhythm.env_a * rhythm.env_a).sqrt();
        let mut probe = rhythm.clone();
        let energy = impulse_energy(1.0 / (1.0 - r), |x| probe.resonate(x));
        rhythm.in_gain = 1.0 / energy.sqrt();
        rhythm
    }

    #[inline(always)]
    fn resonate(&mut self, x: f64) -> f64 {
        let y = self.a1 * self.y1 + self.a2 * self.y2 + self.in_gain * x;
        self.y2 = self.y1;
        self.y1 = y;
        y
    }

    /// One sample from two independent standard normals (oscillator drive, envelope drive).
    #[inline(always)]
    fn step(&mut self, drive: f64, env_drive: f64) -> f64 {
        self.env = self.env_a * self.env + self.env_b * env_drive;
        // exp(σz − σ²) has E[·²] = 1, so the envelope rescales neither power nor RMS on average.
        let envelope = (self.env_sigma * self.env - self.env_sigma * self.env_sigma).exp();
        self.resonate(drive) * envelope
    }
}

/// Rhythm generators, in the order their random numbers are drawn.
const ALPHA: usize = 0;
const MU_LEFT: usize = 1;
const MU_RIGHT: usize = 2;
const BETA_LEFT: usize = 3;
const BETA_RIGHT: usize = 4;
const RHYTHMS: usize = 5;

/// Peak RMS (µV, at the electrode over the generator) and spatial spread (grid units) of each
/// rhythm. Alpha is broad and strong over the occiput; mu and beta are focal over C3/C4 so
/// that C1/C5/Fc3/Cp3 see ~60 % of the amplitude and the midline little.
const ALPHA_UV: f64 = 14.0;
const ALPHA_SPREAD: f64 = 1.5;
const MU_UV: f64 = 10.0;
const BETA_UV: f64 = 5.0;
const MOTOR_SPREAD: f64 = 1.0;

/// Centres of the shared background sources (3 × 3 grid) and their spread: wide enough that
/// adjacent electrodes share most of them.
const SHARED_X: [f64; 3] = [-3.0, 0.0, 3.0];
const SHARED_Y: [f64; 3] = [-3.0, 0.0, 3.0];
const SHARED: usize = 9;
const SHARED_SPREAD: f64 = 2.5;
/// Fraction of background variance that is shared between channels.
const SHARED_FRACTION: f64 = 0.5;

/// Time constant of each of the two smoothers of the ERD gain, seconds.
const ERD_TAU: f64 = 0.12;

/// Seconds run and discarded at build time, so filters and rhythms start in their steady
/// state instead of ramping up from zero (the slowest pink pole has τ ≈ 0.3 s).
const BURN_IN_SECONDS: f64 = 3.0;

/// The signal model: all generator state, advanced one sample at a time.
#[derive(Debug, Clone)]
struct Generator {
    rng: ChaCha8Rng,
    pink: PinkShape,
    shared_state: [PinkState; SHARED],
    own_state: Vec<PinkState>,
    /// Weight of shared source `k` at channel `c` at `[k * channels + c]` (source-major, so
    /// mixing is one contiguous, vectorisable pass over the channels per source), scaled so
    /// the shared part has variance `SHARED_FRACTION · noise_uv²`.
    shared_weights: Vec<f64>,
    own_scale: f64,
    rhythms: [Rhythm; RHYTHMS],
    /// µV per unit of rhythm `r` at channel `c`, at `[r * channels + c]`.
    rhythm_weights: Vec<f64>,
    /// Per-channel accumulator of the sample being built.
    acc: Vec<f64>,
    /// Two-stage smoothed ERD gain per hemisphere, `[left, right]`.
    erd_stage1: [f64; 2],
    erd_gain: [f64; 2],
    erd_alpha: f64,
}

impl Generator {
    fn new(config: &SimulatorConfig) -> Self {
        let rate = config.rate;
        // Per-"subject" parameters from their own stream, so they never shift the samples'.
        let mut params = ChaCha8Rng::seed_from_u64(config.seed);
        params.set_stream(2);
        let alpha_hz = params.gen_range(9.5..10.5);
        let mu_hz = [params.gen_range(10.0..12.0), params.gen_range(10.0..12.0)];
        let beta_hz = [params.gen_range(18.0..22.0), params.gen_range(18.0..22.0)];
        let rhythms = [
            Rhythm::new(rate, alpha_hz, 1.5, 1.5, 0.35),
            Rhythm::new(rate, mu_hz[0], 1.5, 1.5, 0.35),
            Rhythm::new(rate, mu_hz[1], 1.5, 1.5, 0.35),
            Rhythm::new(rate, beta_hz[0], 3.0, 1.5, 0.35),
            Rhythm::new(rate, beta_hz[1], 3.0, 1.5, 0.35),
        ];
        let c3 = grid_position("C3").expect("C3 is a 10-10 label");
        let c4 = grid_position("C4").expect("C4 is a 10-10 label");
        let oz = grid_position("Oz").expect("Oz is a 10-10 label");
        let positions: Vec<(f64, f64)> = config
            .montage
            .labels()
            .iter()
            .map(|l| grid_position(l).expect("montage labels are 10-10 labels"))
            .collect();
        let rhythm_weights: Vec<[f64; RHYTHMS]> = positions
            .iter()
            .map(|&p| {
                let motor = |src, uv| uv * spatial_weight(p, src, MOTOR_SPREAD);
                let mut w = [0.0; RHYTHMS];
                w[ALPHA] = ALPHA_UV * spatial_weight(p, oz, ALPHA_SPREAD);
                w[MU_LEFT] = motor(c3, MU_UV);
                w[MU_RIGHT] = motor(c4, MU_UV);
                w[BETA_LEFT] = motor(c3, BETA_UV);
                w[BETA_RIGHT] = motor(c4, BETA_UV);
                w
            })
            .collect();
        let noise = config.noise_uv;
        let shared_weights: Vec<[f64; SHARED]> = positions
            .iter()
            .map(|&p| {
                let mut w = [0.0; SHARED];
                for (i, &y) in SHARED_Y.iter().enumerate() {
                    for (j, &x) in SHARED_X.iter().enumerate() {
                        w[i * 3 + j] = spatial_weight(p, (x, y), SHARED_SPREAD);
                    }
                }
                // The shared sources are independent with unit variance: normalise the weight
                // vector so every channel gets the same shared variance.
                let norm = w.iter().map(|v| v * v).sum::<f64>().sqrt();
                let scale = noise * SHARED_FRACTION.sqrt() / norm;
                w.iter_mut().for_each(|v| *v *= scale);
                w
            })
            .collect();
        let mut generator = Generator {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            pink: PinkShape::new(rate),
            shared_state: [PinkState::default(); SHARED],
            own_state: vec![PinkState::default(); positions.len()],
            shared_weights: source_major(&shared_weights),
            own_scale: noise * (1.0 - SHARED_FRACTION).sqrt(),
            rhythms,
            rhythm_weights: source_major(&rhythm_weights),
            acc: vec![0.0; positions.len()],
            erd_stage1: [1.0; 2],
            erd_gain: [1.0; 2],
            erd_alpha: 1.0 - (-1.0 / (ERD_TAU * rate)).exp(),
        };
        let mut frame = vec![0.0f32; positions.len()];
        for _ in 0..samples_at(BURN_IN_SECONDS, rate) {
            generator.step([1.0, 1.0], &mut frame);
        }
        generator
    }

    /// Advance one sample towards the ERD target gains `[left, right]` and write every
    /// channel's value (µV) into `frame`. Random numbers are drawn in a fixed order: shared
    /// sources, rhythms (drive, envelope), then each channel's private noise.
    #[inline]
    fn step(&mut self, target: [f64; 2], frame: &mut [f32]) {
        let stages = self.erd_stage1.iter_mut().zip(&mut self.erd_gain);
        for ((stage1, gain), goal) in stages.zip(target) {
            *stage1 += self.erd_alpha * (goal - *stage1);
            *gain += self.erd_alpha * (*stage1 - *gain);
        }
        let rng = &mut self.rng;
        let mut shared = [0.0; SHARED];
        for (value, state) in shared.iter_mut().zip(&mut self.shared_state) {
            *value = self.pink.step(state, rng.sample(StandardNormal));
        }
        let mut src = [0.0; RHYTHMS];
        for (value, rhythm) in src.iter_mut().zip(&mut self.rhythms) {
            let drive = rng.sample(StandardNormal);
            let env_drive = rng.sample(StandardNormal);
            *value = rhythm.step(drive, env_drive);
        }
        let [left, right] = self.erd_gain;
        src[MU_LEFT] *= left;
        src[BETA_LEFT] *= left;
        src[MU_RIGHT] *= right;
        src[BETA_RIGHT] *= right;
        // Channel-private noise first, then one pass per source over all channels: each pass
        // is an independent multiply-add per channel, which the compiler vectorises, instead
        // of one long dependent sum per channel.
        // (Drawing all the noise before filtering keeps the RNG call out of the filter loop.)
        for a in self.acc.iter_mut() {
            *a = rng.sample(StandardNormal);
        }
        for (a, state) in self.acc.iter_mut().zip(&mut self.own_state) {
            *a = self.own_scale * self.pink.step(state, *a);
        }
        let channels = self.acc.len();
        let mixes = self.shared_weights.chunks_exact(channels).zip(shared);
        for (weights, value) in mixes.chain(self.rhythm_weights.chunks_exact(channels).zip(src)) {
            for (a, w) in self.acc.iter_mut().zip(weights) {
                *a += w * value;
            }
        }
        for (out, a) in frame.iter_mut().zip(&self.acc) {
            *out = *a as f32;
        }
    }
}

/// `[channel][source]` weights → source-major `[source * channels + channel]`.
fn source_major<const N: usize>(per_channel: &[[f64; N]]) -> Vec<f64> {
    (0..N)
        .flat_map(|k| per_channel.iter().map(move |w| w[k]))
        .collect()
}

/// Which hand a cue asks to imagine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Rest,
    /// `T1`: left fist → ERD over the right hemisphere.
    Left,
    /// `T2`: right fist → ERD over the left hemisphere.
    Right,
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Phase::Rest => "T0",
            Phase::Left => "T1",
            Phase::Right => "T2",
        }
    }
}

/// The cue schedule: rest, cue, rest, cue... with sample-exact boundaries.
#[derive(Debug, Clone)]
struct TrialClock {
    rng: ChaCha8Rng,
    rate: f64,
    rest: f64,
    cue: f64,
    /// Phase number (even = rest, odd = cue) and its kind.
    index: u64,
    phase: Phase,
    /// First sample of phase `index + 1`; `None` before the first phase starts.
    next_start: Option<u64>,
    block: [Phase; 4],
    block_pos: usize,
}

impl TrialClock {
    fn new(config: &SimulatorConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        rng.set_stream(1);
        TrialClock {
            rng,
            rate: config.rate,
            rest: config.trial.rest_seconds,
            cue: config.trial.cue_seconds,
            index: 0,
            phase: Phase::Rest,
            next_start: None,
            block: [Phase::Left, Phase::Left, Phase::Right, Phase::Right],
            block_pos: 4,
        }
    }

    /// Start of phase `index` in seconds, computed from the index rather than accumulated, so
    /// boundaries never drift over a long run.
    fn phase_start_seconds(&self, index: u64) -> f64 {
        let cycle = (index / 2) as f64 * (self.rest + self.cue);
        if index % 2 == 1 {
            cycle + self.rest
        } else {
            cycle
        }
    }

    fn next_cue(&mut self) -> Phase {
        if self.block_pos == self.block.len() {
            self.block.shuffle(&mut self.rng);
            self.block_pos = 0;
        }
        self.block_pos += 1;
        self.block[self.block_pos - 1]
    }

    /// The phase at `sample` (called for consecutive samples), pushing an event at each onset.
    fn at(&mut self, sample: u64, events: &mut Vec<Event>) -> Phase {
        let starts_now = match self.next_start {
            None => {
                self.index = 0;
                true
            }
            Some(start) if sample >= start => {
                self.index += 1;
                true
            }
            Some(_) => false,
        };
        if starts_now {
            self.phase = if self.index % 2 == 0 {
                Phase::Rest
            } else {
                self.next_cue()
            };
            let duration = if self.phase == Phase::Rest {
                self.rest
            } else {
                self.cue
            };
            let onset = samples_at(self.phase_start_seconds(self.index), self.rate);
            events.push(Event::new(
                self.phase.label(),
                onset as f64 / self.rate,
                duration,
            ));
            self.next_start = Some(samples_at(
                self.phase_start_seconds(self.index + 1),
                self.rate,
            ));
        }
        self.phase
    }
}

/// Generator + schedule + sample counter: everything that makes samples, shared by the
/// streaming source and [`record`].
#[derive(Debug, Clone)]
struct Engine {
    generator: Generator,
    clock: TrialClock,
    rate: f64,
    erd_depth: f64,
    /// Index of the next sample.
    sample: u64,
    /// One sample of every channel, reused.
    frame: Vec<f32>,
    /// Cue onsets generated since last taken.
    events: Vec<Event>,
}

impl Engine {
    fn new(config: &SimulatorConfig) -> Self {
        let generator = Generator::new(config);
        Engine {
            frame: vec![0.0; generator.own_state.len()],
            generator,
            clock: TrialClock::new(config),
            rate: config.rate,
            erd_depth: config.erd_depth,
            sample: 0,
            events: Vec::new(),
        }
    }

    /// Fill channel-major `data` (`channels × timestamps.len()`) and `timestamps` with the next
    /// samples.
    fn generate(&mut self, data: &mut [f32], timestamps: &mut [f64]) {
        let n = timestamps.len();
        debug_assert_eq!(data.len(), self.frame.len() * n);
        for (s, t) in timestamps.iter_mut().enumerate() {
            let low = 1.0 - self.erd_depth;
            let target = match self.clock.at(self.sample, &mut self.events) {
                Phase::Rest => [1.0, 1.0],
                Phase::Left => [1.0, low],
                Phase::Right => [low, 1.0],
            };
            self.generator.step(target, &mut self.frame);
            for (c, &v) in self.frame.iter().enumerate() {
                data[c * n + s] = v;
            }
            *t = self.sample as f64 / self.rate;
            self.sample += 1;
        }
    }

    /// [`Engine::generate`] with the imagery of each sample given (a virtual subject
    /// following external cues); the own schedule and its markers are not used.
    fn generate_following(
        &mut self,
        imagery: &[Imagery],
        data: &mut [f32],
        timestamps: &mut [f64],
    ) {
        let n = timestamps.len();
        debug_assert_eq!(data.len(), self.frame.len() * n);
        let low = 1.0 - self.erd_depth;
        for (s, (t, imagine)) in timestamps.iter_mut().zip(imagery).enumerate() {
            // Contralateral ERD: the left hand desynchronises the right hemisphere.
            let target = match imagine {
                Imagery::LeftHand => [1.0, low],
                Imagery::RightHand => [low, 1.0],
                Imagery::Other => [1.0, 1.0],
            };
            self.generator.step(target, &mut self.frame);
            for (c, &v) in self.frame.iter().enumerate() {
                data[c * n + s] = v;
            }
            *t = self.sample as f64 / self.rate;
            self.sample += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_montage_label_has_a_grid_position_and_hemisphere_by_parity() {
        for montage in [Montage::Motor16, Montage::Eegmmidb64] {
            for label in montage.labels() {
                let (x, _) = grid_position(label).unwrap_or_else(|| panic!("{label}"));
                let last = label.chars().last().unwrap();
                match last.to_digit(10) {
                    _ if label.ends_with('z') => assert_eq!(x, 0.0, "{label}"),
                    Some(_) if label.ends_with("10") => assert!(x > 0.0, "{label}"),
                    Some(d) if d % 2 == 1 => assert!(x < 0.0, "{label}"),
                    Some(_) => assert!(x > 0.0, "{label}"),
                    None => unreachable!(),
                }
            }
        }
        assert_eq!(grid_position("C3"), Some((-2.0, 0.0)));
        assert_eq!(grid_position("Fc4"), Some((2.0, 1.0)));
        assert_eq!(grid_position("Oz"), Some((0.0, -4.0)));
        assert_eq!(grid_position("T9"), Some((-5.0, 0.0)));
        assert_eq!(grid_position("Xy1"), None);
        assert_eq!(grid_position("C"), None);
    }

    #[test]
    fn montages_have_unique_labels() {
        for (montage, n) in [(Montage::Motor16, 16), (Montage::Eegmmidb64, 64)] {
            let labels = montage.labels();
            assert_eq!(labels.len(), n);
            let mut sorted = labels.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), n);
        }
    }

    fn variance(mut next: impl FnMut() -> f64, n: usize) -> f64 {
        let xs: Vec<f64> = (0..n).map(|_| next()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64
    }

    #[test]
    fn pink_shape_has_unit_variance() {
        let shape = PinkShape::new(160.0);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut state = PinkState::default();
        let v = variance(
            || shape.step(&mut state, rng.sample(StandardNormal)),
            400_000,
        );
        assert!((v - 1.0).abs() < 0.1, "variance {v}");
    }

    #[test]
    fn rhythm_has_unit_mean_square() {
        for (freq, bw) in [(10.0, 1.5), (20.0, 3.0)] {
            let mut rhythm = Rhythm::new(160.0, freq, bw, 1.5, 0.35);
            let mut rng = ChaCha8Rng::seed_from_u64(2);
            let v = variance(
                || rhythm.step(rng.sample(StandardNormal), rng.sample(StandardNormal)),
                400_000,
            );
            assert!((v - 1.0).abs() < 0.15, "{freq} Hz: variance {v}");
        }
    }

    #[test]
    fn erd_gain_glides_to_target_within_half_a_second() {
        let config = SimulatorConfig::default();
        let mut generator = Generator::new(&config);
        let mut frame = vec![0.0; 16];
        let mut gains = Vec::new();
        for _ in 0..160 {
            generator.step([1.0, 0.5], &mut frame);
            gains.push(generator.erd_gain[1]);
        }
        assert_eq!(generator.erd_gain[0], 1.0);
        // Smooth start: the first sample moves the gain far less than a one-pole smoother
        // would (α · 0.5 ≈ 0.025): the slope starts at zero, no corner at the onset.
        assert!(1.0 - gains[0] < 0.0025, "{}", gains[0]);
        // ~90 % of the way after 0.5 s, essentially there after 1 s.
        let at_half = gains[79];
        assert!(at_half < 0.56 && at_half > 0.5, "gain at 0.5 s: {at_half}");
        assert!((gains[159] - 0.5).abs() < 0.01);
        assert!(gains.windows(2).all(|w| w[1] <= w[0]));
    }

    #[test]
    fn schedule_boundaries_are_sample_exact_and_alternate() {
        let config = SimulatorConfig::default();
        let mut clock = TrialClock::new(&config);
        let mut events = Vec::new();
        for s in 0..(160 * 100) {
            clock.at(s, &mut events);
        }
        // 100 s at 8.3 s per cycle: 13 cycles (26 phases) inside, with the 13th cue at 103.8 s
        // outside; phase 24 (rest) starts at 99.6 s.
        assert_eq!(events.len(), 25);
        for (i, e) in events.iter().enumerate() {
            let cycle = (i / 2) as f64 * 8.3;
            let expect = if i % 2 == 0 { cycle } else { cycle + 4.2 };
            assert!((e.onset - expect).abs() < 0.5 / 160.0, "{e:?}");
            assert_eq!(e.label == "T0", i % 2 == 0);
        }
    }

    /// A virtual subject imagines the cued hand (contralateral ERD) during the cue only, and
    /// emits no markers of its own.
    #[test]
    fn a_follower_renders_erd_for_the_cued_hand_only() {
        let config = SimulatorConfig {
            follow_cues: true,
            noise_uv: 0.0,
            erd_depth: 0.9,
            speed: 0.0,
            duration_seconds: Some(30.0),
            ..SimulatorConfig::default()
        };
        let mut sim = config.build().unwrap();
        let follower = sim.cue_follower().expect("follow_cues gives a handle");
        follower.push(crate::source::cues::FollowedCue {
            imagery: Imagery::LeftHand,
            onset: 10.0,
            duration: 10.0,
        });
        let labels = config.montage.labels();
        let c3 = labels.iter().position(|l| *l == "C3").unwrap();
        let c4 = labels.iter().position(|l| *l == "C4").unwrap();
        let (mut rest, mut cue) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
        while let Some(item) = sim.next_item().unwrap() {
            let SourceItem::Chunk(chunk) = item else {
                panic!("a follower emits no markers: {item:?}");
            };
            for (s, &t) in chunk.timestamps().iter().enumerate() {
                let bucket = if (1.0..9.0).contains(&t) {
                    &mut rest
                } else if (11.0..19.0).contains(&t) {
                    &mut cue
                } else {
                    continue;
                };
                bucket[0].push(chunk.channel(c3)[s] as f64);
                bucket[1].push(chunk.channel(c4)[s] as f64);
            }
        }
        let var = |v: &[f64]| {
            let m = v.iter().sum::<f64>() / v.len() as f64;
            v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64
        };
        let c4_ratio = var(&cue[1]) / var(&rest[1]);
        let c3_ratio = var(&cue[0]) / var(&rest[0]);
        // Left hand → the right hemisphere (C4) desynchronises, the left one (C3) does not.
        assert!(c4_ratio < 0.5, "C4 cue/rest variance {c4_ratio}");
        assert!(c3_ratio > 0.6, "C3 cue/rest variance {c3_ratio}");
    }
}
