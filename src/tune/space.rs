//! The search space file: which knobs of a pipeline are tuned, over which values, and how the
//! fitness is scored. A genome is one value per gene; [`SearchSpace::apply`] writes it onto a
//! base pipeline and yields an ordinary [`PipelineConfig`].
//!
//! ```toml
//! [fitness]
//! metric = "auc"            # "auc" (two classes) or "accuracy"
//! folds = 5                 # default: the base pipeline's training.folds
//! repeats = 1               # k-fold splits with seeds training.seed, +1, ... (averaged)
//! compute_weight = 0.0      # score penalty per estimated giga-operation per second of stream
//!
//! [genes]
//! bandpass_low = { real = [4.0, 12.0], step = 0.5 }
//! svm_c = { real = [0.01, 100.0], log = true }
//! csp_components = { integer = [2, 8] }
//! channels = { choice = ["all", "motor"] }
//!
//! [channel_sets]
//! motor = ["FC3", "FC1", "FCz", "FC2", "FC4", "C3", "C1", "Cz", "C2", "C4"]
//!
//! [band_sets]
//! mu_beta = [{ name = "mu", low = 8.0, high = 12.0 }, { name = "beta", low = 13.0, high = 30.0 }]
//! ```
//!
//! Every table rejects unknown keys and every range is checked against what the knob allows,
//! so a typo in a search space fails before any evaluation, naming the key and the value.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::config::PipelineConfig;
use crate::decoder::lda::{LdaConfig, Shrinkage};
use crate::decoder::mlp::MlpConfig;
use crate::decoder::svm::{Gamma, Kernel, SvmConfig};
use crate::decoder::DecoderConfig;
use crate::error::{Error, Result};
use crate::features::band_power::Band;
use crate::features::MAX_WINDOW_SECONDS;
use crate::preprocess::{BandpassConfig, Reference};

/// A tunable setting of a pipeline. The declaration order is the order genes are applied in:
/// the structural choices (feature kind, decoder kind, kernel) come first, so the settings that
/// belong to them land on the chosen structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Knob {
    /// `[features]` table: `band_power`, `csp` or `tangent_space`.
    Features,
    /// `[decoder] kind`: `lda`, `svm` or `mlp`.
    Decoder,
    /// `[decoder] kernel` of the SVM: `linear` or `rbf`.
    SvmKernel,
    /// `preprocess.bandpass.low`, Hz.
    BandpassLow,
    /// `preprocess.bandpass.high`, Hz.
    BandpassHigh,
    /// `features.band_power.bands`: a name from `[band_sets]`.
    BandSet,
    /// `features.window_seconds` (also the epoch length).
    WindowSeconds,
    /// `features.hop_seconds`; clamped to the window length.
    HopSeconds,
    /// `preprocess.channels`: a name from `[channel_sets]`, or `all`.
    Channels,
    /// `preprocess.reference`: `none` or `average`.
    Reference,
    /// `features.csp.components`.
    CspComponents,
    /// `decoder.c` of the SVM.
    SvmC,
    /// `decoder.gamma` of the RBF SVM.
    SvmGamma,
    /// `decoder.shrinkage` of the LDA, a fixed intensity.
    LdaShrinkage,
    /// Width of every hidden layer of the MLP.
    MlpWidth,
    /// `decoder.learning_rate` of the MLP (calibration).
    MlpLearningRate,
    /// `decoder.online.learning_rate` of the MLP (adaptation while it runs).
    MlpAdaptationRate,
}

impl Knob {
    pub fn name(self) -> &'static str {
        match self {
            Knob::Features => "features",
            Knob::Decoder => "decoder",
            Knob::SvmKernel => "svm_kernel",
            Knob::BandpassLow => "bandpass_low",
            Knob::BandpassHigh => "bandpass_high",
            Knob::BandSet => "band_set",
            Knob::WindowSeconds => "window_seconds",
            Knob::HopSeconds => "hop_seconds",
            Knob::Channels => "channels",
            Knob::Reference => "reference",
            Knob::CspComponents => "csp_components",
            Knob::SvmC => "svm_c",
            Knob::SvmGamma => "svm_gamma",
            Knob::LdaShrinkage => "lda_shrinkage",
            Knob::MlpWidth => "mlp_width",
            Knob::MlpLearningRate => "mlp_learning_rate",
            Knob::MlpAdaptationRate => "mlp_adaptation_rate",
        }
    }

    /// What kind of gene the knob takes and the widest range it accepts.
    fn allowed(self) -> Allowed {
        match self {
            Knob::Features => Allowed::Choice(&["band_power", "csp", "tangent_space"]),
            Knob::Decoder => Allowed::Choice(&["lda", "svm", "mlp"]),
            Knob::SvmKernel => Allowed::Choice(&["linear", "rbf"]),
            Knob::Reference => Allowed::Choice(&["none", "average"]),
            // Names come from the [band_sets] / [channel_sets] tables.
            Knob::BandSet | Knob::Channels => Allowed::Choice(&[]),
            Knob::BandpassLow => Allowed::Real(0.1, 100.0),
            Knob::BandpassHigh => Allowed::Real(0.5, 500.0),
            Knob::WindowSeconds => Allowed::Real(0.25, MAX_WINDOW_SECONDS),
            Knob::HopSeconds => Allowed::Real(0.01, 10.0),
            Knob::SvmC => Allowed::Real(1e-6, 1e6),
            Knob::SvmGamma => Allowed::Real(1e-9, 1e3),
            Knob::LdaShrinkage => Allowed::Real(0.0, 1.0),
            Knob::MlpLearningRate | Knob::MlpAdaptationRate => Allowed::Real(1e-6, 1.0),
            Knob::CspComponents => Allowed::Integer(1, 64),
            Knob::MlpWidth => Allowed::Integer(1, 1024),
        }
    }
}

impl fmt::Display for Knob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

enum Allowed {
    Real(f64, f64),
    Integer(i64, i64),
    /// Fixed names; empty: names from a table of the space file.
    Choice(&'static [&'static str]),
}

/// One gene as written in `[genes]`: exactly one of `real`, `integer`, `choice`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct GeneSpec {
    real: Option<[f64; 2]>,
    integer: Option<[i64; 2]>,
    choice: Option<Vec<String>>,
    /// Real genes: search in log space (for scale parameters such as C and γ).
    #[serde(default)]
    log: bool,
    /// Real genes: round to multiples of this (fewer distinct front ends, more cache hits).
    step: Option<f64>,
}

/// The values a gene can take.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Domain {
    Real {
        low: f64,
        high: f64,
        log: bool,
        step: Option<f64>,
    },
    Integer {
        low: i64,
        high: i64,
    },
    Choice(Vec<String>),
}

/// One value of a gene.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Allele {
    Real(f64),
    Integer(i64),
    /// Index into the gene's choices.
    Choice(usize),
}

impl Allele {
    /// Bit-exact identity, for recognising a genome that was already evaluated.
    fn key(self) -> u64 {
        match self {
            Allele::Real(x) => x.to_bits(),
            Allele::Integer(i) => i as u64,
            Allele::Choice(c) => c as u64,
        }
    }
}

/// One value per gene of a [`SearchSpace`], in the space's gene order.
#[derive(Debug, Clone, PartialEq)]
pub struct Genome(pub Vec<Allele>);

impl Genome {
    pub fn key(&self) -> Vec<u64> {
        self.0.iter().map(|a| a.key()).collect()
    }
}

/// A gene: a knob and its domain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gene {
    pub knob: Knob,
    pub domain: Domain,
}

/// Scale of a Gaussian mutation step, as a fraction of a gene's (log-)range.
pub const MUTATION_SCALE: f64 = 0.15;

impl Gene {
    pub fn sample(&self, rng: &mut impl Rng) -> Allele {
        match &self.domain {
            Domain::Real { .. } => Allele::Real(self.value_at(rng.gen::<f64>())),
            Domain::Integer { low, high } => Allele::Integer(rng.gen_range(*low..=*high)),
            Domain::Choice(names) => Allele::Choice(rng.gen_range(0..names.len())),
        }
    }

    /// Position of a real value in `[0, 1]` across the range (log range when `log`).
    fn to_unit(&self, x: f64) -> f64 {
        let Domain::Real { low, high, log, .. } = self.domain else {
            unreachable!("to_unit on a real gene only")
        };
        let u = if log {
            (x.ln() - low.ln()) / (high.ln() - low.ln())
        } else {
            (x - low) / (high - low)
        };
        u.clamp(0.0, 1.0)
    }

    /// The real value at `u` in `[0, 1]`, rounded to the step and kept inside the range.
    fn value_at(&self, u: f64) -> f64 {
        let Domain::Real { low, high, log, .. } = self.domain else {
            unreachable!("value_at on a real gene only")
        };
        let u = u.clamp(0.0, 1.0);
        let x = if log {
            (low.ln() + u * (high.ln() - low.ln())).exp()
        } else {
            low + u * (high - low)
        };
        self.snap(x)
    }

    fn snap(&self, x: f64) -> f64 {
        let Domain::Real {
            low, high, step, ..
        } = self.domain
        else {
            unreachable!("snap on a real gene only")
        };
        let x = match step {
            Some(s) => {
                // Steps are counted from `low` so both ends of the range stay reachable.
                let snapped = low + ((x - low) / s).round() * s;
                if snapped > high + 1e-9 * s {
                    snapped - s
                } else {
                    snapped
                }
            }
            None => x,
        };
        x.clamp(low, high)
    }

    /// A random change of `allele`; `scale` is the Gaussian step as a fraction of the range.
    /// A choice gene always moves to another choice (when it has one).
    pub fn mutate(&self, allele: Allele, scale: f64, rng: &mut impl Rng) -> Allele {
        let normal: f64 = StandardNormal.sample(rng);
        match (&self.domain, allele) {
            (Domain::Real { .. }, Allele::Real(x)) => {
                Allele::Real(self.value_at(self.to_unit(x) + scale * normal))
            }
            (Domain::Integer { low, high }, Allele::Integer(i)) => {
                let span = (high - low) as f64;
                let mut delta = (scale * span * normal).round() as i64;
                if delta == 0 && high > low {
                    delta = if rng.gen::<bool>() { 1 } else { -1 };
                }
                Allele::Integer((i + delta).clamp(*low, *high))
            }
            (Domain::Choice(names), Allele::Choice(c)) => {
                if names.len() < 2 {
                    return Allele::Choice(c);
                }
                let other = rng.gen_range(0..names.len() - 1);
                Allele::Choice(if other >= c { other + 1 } else { other })
            }
            (_, other) => other,
        }
    }

    /// A child of two alleles: a blend for numbers (it can land a little outside the
    /// parents, which keeps the population from collapsing onto their hull), one parent's
    /// value for a choice.
    pub fn cross(&self, a: Allele, b: Allele, rng: &mut impl Rng) -> Allele {
        // BLX-α with α = 0.25.
        let weight = rng.gen_range(-0.25..1.25);
        match (&self.domain, a, b) {
            (Domain::Real { .. }, Allele::Real(x), Allele::Real(y)) => {
                let (u, v) = (self.to_unit(x), self.to_unit(y));
                Allele::Real(self.value_at(u + weight * (v - u)))
            }
            (Domain::Integer { low, high }, Allele::Integer(x), Allele::Integer(y)) => {
                let blended = x as f64 + weight * (y - x) as f64;
                Allele::Integer((blended.round() as i64).clamp(*low, *high))
            }
            _ => {
                if weight < 0.5 {
                    a
                } else {
                    b
                }
            }
        }
    }

    /// The allele for a concrete value written as text (a choice name) or number.
    fn nearest(&self, value: &Value) -> Allele {
        match (&self.domain, value) {
            (Domain::Real { .. }, Value::Number(x)) => Allele::Real(self.snap(*x)),
            (Domain::Integer { low, high }, Value::Number(x)) => {
                Allele::Integer((x.round() as i64).clamp(*low, *high))
            }
            (Domain::Choice(names), Value::Name(name)) => {
                Allele::Choice(names.iter().position(|n| n == name).unwrap_or(0))
            }
            (Domain::Real { low, high, .. }, _) => Allele::Real(self.snap((low + high) / 2.0)),
            (Domain::Integer { low, high }, _) => Allele::Integer((low + high) / 2),
            (Domain::Choice(_), _) => Allele::Choice(0),
        }
    }

    /// The value of `allele` for logs and headers: a number or a choice name.
    pub fn describe(&self, allele: Allele) -> serde_json::Value {
        match (&self.domain, allele) {
            (_, Allele::Real(x)) => serde_json::json!(x),
            (_, Allele::Integer(i)) => serde_json::json!(i),
            (Domain::Choice(names), Allele::Choice(c)) => serde_json::json!(names[c]),
            (_, Allele::Choice(c)) => serde_json::json!(c),
        }
    }
}

/// The pipeline's band-pass, created with broad defaults when the base pipeline has none.
fn bandpass(config: &mut PipelineConfig) -> &mut BandpassConfig {
    config.preprocess.bandpass.get_or_insert(BandpassConfig {
        low: 1.0,
        high: 40.0,
        order: 4,
    })
}

/// A knob's value read from a pipeline, to start the search from the base pipeline.
enum Value {
    Number(f64),
    Name(String),
    Absent,
}

/// How a genome's pipeline is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Mean over folds of the ROC-AUC (two classes only).
    #[default]
    Auc,
    /// Mean over folds of the accuracy.
    Accuracy,
}

/// `[fitness]` of a search space.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FitnessConfig {
    pub metric: Metric,
    /// Cross-validation folds; `None`: the base pipeline's `training.folds`.
    pub folds: Option<usize>,
    /// Repetitions of the k-fold split with seeds `training.seed`, `+1`, ...: on a few dozen
    /// trials one split's score is noisy enough for a search to chase the noise.
    pub repeats: usize,
    /// Score subtracted per estimated giga-operation per second of stream (0: no penalty).
    pub compute_weight: f64,
}

impl Default for FitnessConfig {
    fn default() -> Self {
        FitnessConfig {
            metric: Metric::Auc,
            folds: None,
            repeats: 1,
            compute_weight: 0.0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpaceFile {
    #[serde(default)]
    fitness: FitnessConfig,
    genes: BTreeMap<Knob, GeneSpec>,
    #[serde(default)]
    channel_sets: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    band_sets: BTreeMap<String, Vec<Band>>,
}

/// A validated search space.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchSpace {
    pub fitness: FitnessConfig,
    /// In [`Knob`] order: the order genes are applied in.
    pub genes: Vec<Gene>,
    pub channel_sets: BTreeMap<String, Vec<String>>,
    pub band_sets: BTreeMap<String, Vec<Band>>,
}

/// The channel-set name that keeps every channel.
pub const ALL_CHANNELS: &str = "all";

impl SearchSpace {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Parse and check a search space; `origin` (a path) goes into error messages.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        let file: SpaceFile =
            toml::from_str(text).map_err(|e| Error::config(origin, e.to_string()))?;
        let bad = |detail: String| Err(Error::config(origin, detail));
        if file.genes.is_empty() {
            return bad("[genes] is empty; allowed: at least one gene, e.g. svm_c = { real = [0.01, 100.0], log = true }".into());
        }
        if let Some(folds) = file.fitness.folds {
            if !(2..=50).contains(&folds) {
                return bad(format!(
                    "fitness.folds = {folds} is out of range; allowed: 2..=50"
                ));
            }
        }
        if !(1..=20).contains(&file.fitness.repeats) {
            return bad(format!(
                "fitness.repeats = {} is out of range; allowed: 1..=20",
                file.fitness.repeats
            ));
        }
        let weight = file.fitness.compute_weight;
        if !(weight.is_finite() && weight >= 0.0) {
            return bad(format!(
                "fitness.compute_weight = {weight} is out of range; allowed: a number >= 0"
            ));
        }
        for (name, bands) in &file.band_sets {
            if bands.is_empty() {
                return bad(format!(
                    "band_sets.{name} is empty; allowed: at least one band"
                ));
            }
            for band in bands {
                if !(band.low.is_finite() && band.low >= 0.0 && band.high > band.low) {
                    return bad(format!(
                        "band_sets.{name}: band {:?} = {}..{} Hz is not valid; allowed: 0 <= low < high",
                        band.name, band.low, band.high
                    ));
                }
            }
        }
        for (name, channels) in &file.channel_sets {
            if channels.is_empty() {
                return bad(format!(
                    "channel_sets.{name} is empty; allowed: at least one channel label (\"{ALL_CHANNELS}\" keeps every channel)"
                ));
            }
            if name == ALL_CHANNELS {
                return bad(format!(
                    "channel_sets.{ALL_CHANNELS} is reserved (it keeps every channel); choose another name"
                ));
            }
        }

        let mut genes = Vec::new();
        for (knob, spec) in &file.genes {
            genes.push(Self::check_gene(origin, *knob, spec, &file)?);
        }
        let space = SearchSpace {
            fitness: file.fitness,
            genes,
            channel_sets: file.channel_sets,
            band_sets: file.band_sets,
        };
        if let (Some(low), Some(high)) = (
            space.real_range(Knob::BandpassLow),
            space.real_range(Knob::BandpassHigh),
        ) {
            if low.1 >= high.0 {
                return bad(format!(
                    "genes.bandpass_low can reach {} Hz and genes.bandpass_high can be as low as {} Hz; allowed: every bandpass_low below every bandpass_high",
                    low.1, high.0
                ));
            }
        }
        Ok(space)
    }

    fn real_range(&self, knob: Knob) -> Option<(f64, f64)> {
        self.genes.iter().find_map(|g| match g.domain {
            Domain::Real { low, high, .. } if g.knob == knob => Some((low, high)),
            _ => None,
        })
    }

    fn check_gene(origin: &str, knob: Knob, spec: &GeneSpec, file: &SpaceFile) -> Result<Gene> {
        let bad = |detail: String| Err(Error::config(origin, format!("genes.{knob}: {detail}")));
        let given = [
            spec.real.is_some().then_some("real"),
            spec.integer.is_some().then_some("integer"),
            spec.choice.is_some().then_some("choice"),
        ];
        let given: Vec<&str> = given.into_iter().flatten().collect();
        let allowed = knob.allowed();
        let expected = match allowed {
            Allowed::Real(..) => "real",
            Allowed::Integer(..) => "integer",
            Allowed::Choice(..) => "choice",
        };
        if given != [expected] {
            return bad(format!(
                "has {}; allowed: exactly one `{expected} = ...` for this knob",
                if given.is_empty() {
                    "no domain".to_string()
                } else {
                    given.join(" and ")
                }
            ));
        }
        if (spec.log || spec.step.is_some()) && expected != "real" {
            return bad("`log` and `step` apply to real genes only".into());
        }
        let domain = match allowed {
            Allowed::Real(min, max) => {
                let [low, high] = spec.real.expect("checked above");
                if !(low.is_finite() && high.is_finite() && low < high) {
                    return bad(format!(
                        "real = [{low}, {high}] is not a range; allowed: [low, high] with low < high"
                    ));
                }
                if spec.log && low <= 0.0 {
                    return bad(format!(
                        "log = true needs a positive range, got real = [{low}, {high}]"
                    ));
                }
                if low < min || high > max {
                    return bad(format!(
                        "real = [{low}, {high}] is out of range; allowed: within [{min}, {max}]"
                    ));
                }
                if let Some(step) = spec.step {
                    if !(step.is_finite() && step > 0.0 && step <= high - low) {
                        return bad(format!(
                            "step = {step} is out of range; allowed: 0 < step <= {}",
                            high - low
                        ));
                    }
                }
                Domain::Real {
                    low,
                    high,
                    log: spec.log,
                    step: spec.step,
                }
            }
            Allowed::Integer(min, max) => {
                let [low, high] = spec.integer.expect("checked above");
                if low > high || low < min || high > max {
                    return bad(format!(
                        "integer = [{low}, {high}] is out of range; allowed: low <= high within [{min}, {max}]"
                    ));
                }
                Domain::Integer { low, high }
            }
            Allowed::Choice(fixed) => {
                let names = spec.choice.clone().expect("checked above");
                if names.is_empty() {
                    return bad("choice = [] is empty; allowed: at least one value".into());
                }
                let valid: Vec<String> = match knob {
                    Knob::Channels => std::iter::once(ALL_CHANNELS.to_string())
                        .chain(file.channel_sets.keys().cloned())
                        .collect(),
                    Knob::BandSet => file.band_sets.keys().cloned().collect(),
                    _ => fixed.iter().map(|s| s.to_string()).collect(),
                };
                for (i, name) in names.iter().enumerate() {
                    if !valid.contains(name) {
                        let table = match knob {
                            Knob::Channels => " (names from [channel_sets])",
                            Knob::BandSet => " (names from [band_sets])",
                            _ => "",
                        };
                        return bad(format!(
                            "choice value {name:?} is not known; allowed: {}{table}",
                            if valid.is_empty() {
                                "none defined".to_string()
                            } else {
                                valid
                                    .iter()
                                    .map(|v| format!("{v:?}"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            }
                        ));
                    }
                    if names[..i].contains(name) {
                        return bad(format!("choice value {name:?} is repeated"));
                    }
                }
                Domain::Choice(names)
            }
        };
        Ok(Gene { knob, domain })
    }

    pub fn random_genome(&self, rng: &mut impl Rng) -> Genome {
        Genome(self.genes.iter().map(|g| g.sample(rng)).collect())
    }

    /// The genome closest to `base`: each knob takes the base pipeline's value, clamped into
    /// its range (or the first choice when the base value is not among the choices).
    pub fn genome_of(&self, base: &PipelineConfig) -> Genome {
        Genome(
            self.genes
                .iter()
                .map(|g| g.nearest(&self.read(base, g.knob)))
                .collect(),
        )
    }

    /// Knob → value of `genome`, for logs and the tuned file's header.
    pub fn describe(&self, genome: &Genome) -> serde_json::Map<String, serde_json::Value> {
        self.genes
            .iter()
            .zip(&genome.0)
            .map(|(g, &a)| (g.knob.name().to_string(), g.describe(a)))
            .collect()
    }

    fn read(&self, base: &PipelineConfig, knob: Knob) -> Value {
        let number = Value::Number;
        let name = |s: &str| Value::Name(s.to_string());
        let features = &base.features;
        match knob {
            Knob::Features => name(if features.csp.is_some() {
                "csp"
            } else if features.tangent_space.is_some() {
                "tangent_space"
            } else {
                "band_power"
            }),
            Knob::Decoder => base
                .decoder
                .as_ref()
                .map_or(Value::Absent, |d| name(d.kind())),
            Knob::SvmKernel => match &base.decoder {
                Some(DecoderConfig::Svm(s)) => name(match s.kernel {
                    Kernel::Linear => "linear",
                    Kernel::Rbf => "rbf",
                }),
                _ => Value::Absent,
            },
            Knob::BandpassLow => base
                .preprocess
                .bandpass
                .as_ref()
                .map_or(Value::Absent, |b| number(b.low)),
            Knob::BandpassHigh => base
                .preprocess
                .bandpass
                .as_ref()
                .map_or(Value::Absent, |b| number(b.high)),
            Knob::BandSet => {
                let bands = features.band_power.clone().unwrap_or_default().bands;
                self.band_sets
                    .iter()
                    .find(|(_, set)| **set == bands)
                    .map_or(Value::Absent, |(n, _)| name(n))
            }
            Knob::WindowSeconds => number(features.window_seconds),
            Knob::HopSeconds => number(features.hop_seconds),
            Knob::Channels => {
                if base.preprocess.channels.is_empty() {
                    name(ALL_CHANNELS)
                } else {
                    self.channel_sets
                        .iter()
                        .find(|(_, set)| **set == base.preprocess.channels)
                        .map_or(Value::Absent, |(n, _)| name(n))
                }
            }
            Knob::Reference => name(match base.preprocess.reference {
                Reference::None => "none",
                Reference::Average => "average",
            }),
            Knob::CspComponents => features
                .csp
                .map_or(Value::Absent, |c| number(c.components as f64)),
            Knob::SvmC => match &base.decoder {
                Some(DecoderConfig::Svm(s)) => number(s.c),
                _ => Value::Absent,
            },
            Knob::SvmGamma => match &base.decoder {
                Some(DecoderConfig::Svm(SvmConfig {
                    gamma: Gamma::Value(g),
                    ..
                })) => number(*g),
                _ => Value::Absent,
            },
            Knob::LdaShrinkage => match &base.decoder {
                Some(DecoderConfig::Lda(LdaConfig {
                    shrinkage: Shrinkage::Fixed(x),
                    ..
                })) => number(*x),
                _ => Value::Absent,
            },
            Knob::MlpWidth => match &base.decoder {
                Some(DecoderConfig::Mlp(m)) => number(m.hidden[0] as f64),
                _ => Value::Absent,
            },
            Knob::MlpLearningRate => match &base.decoder {
                Some(DecoderConfig::Mlp(m)) => number(m.learning_rate),
                _ => Value::Absent,
            },
            Knob::MlpAdaptationRate => match &base.decoder {
                Some(DecoderConfig::Mlp(m)) => number(m.online.learning_rate),
                _ => Value::Absent,
            },
        }
    }

    /// `base` with every gene of `genome` written onto it: an ordinary pipeline. Settings that
    /// belong to a structure the genome did not choose (SVM C under an LDA decoder) are left
    /// out, so two genomes that differ only there give the same pipeline.
    pub fn apply(&self, base: &PipelineConfig, genome: &Genome) -> Result<PipelineConfig> {
        if genome.0.len() != self.genes.len() {
            return Err(Error::Other(format!(
                "a genome of {} genes for a space of {}",
                genome.0.len(),
                self.genes.len()
            )));
        }
        let mut config = base.clone();
        for (gene, &allele) in self.genes.iter().zip(&genome.0) {
            let real = match allele {
                Allele::Real(x) => x,
                Allele::Integer(i) => i as f64,
                Allele::Choice(_) => f64::NAN,
            };
            let choice = match (&gene.domain, allele) {
                (Domain::Choice(names), Allele::Choice(c)) => names[c].as_str(),
                _ => "",
            };
            match gene.knob {
                Knob::Features => {
                    let f = &mut config.features;
                    let band_power = f.band_power.take();
                    let csp = f.csp.take();
                    let tangent_space = f.tangent_space.take();
                    match choice {
                        "csp" => f.csp = Some(csp.unwrap_or_default()),
                        "tangent_space" => {
                            f.tangent_space = Some(tangent_space.unwrap_or_default())
                        }
                        _ => f.band_power = Some(band_power.unwrap_or_default()),
                    }
                }
                Knob::Decoder => {
                    let keep = config.decoder.as_ref().is_some_and(|d| d.kind() == choice);
                    if !keep {
                        config.decoder = Some(match choice {
                            "svm" => DecoderConfig::Svm(SvmConfig::default()),
                            "mlp" => DecoderConfig::Mlp(MlpConfig::default()),
                            _ => DecoderConfig::Lda(LdaConfig::default()),
                        });
                    }
                }
                Knob::SvmKernel => {
                    if let Some(DecoderConfig::Svm(s)) = &mut config.decoder {
                        s.kernel = if choice == "linear" {
                            Kernel::Linear
                        } else {
                            Kernel::Rbf
                        };
                    }
                }
                Knob::BandpassLow => bandpass(&mut config).low = real,
                Knob::BandpassHigh => bandpass(&mut config).high = real,
                Knob::BandSet => {
                    if let Some(bp) = &mut config.features.band_power {
                        bp.bands = self.band_sets[choice].clone();
                    }
                }
                Knob::WindowSeconds => config.features.window_seconds = real,
                Knob::HopSeconds => config.features.hop_seconds = real,
                Knob::Channels => {
                    config.preprocess.channels = if choice == ALL_CHANNELS {
                        Vec::new()
                    } else {
                        self.channel_sets[choice].clone()
                    }
                }
                Knob::Reference => {
                    config.preprocess.reference = if choice == "average" {
                        Reference::Average
                    } else {
                        Reference::None
                    }
                }
                Knob::CspComponents => {
                    if let Some(csp) = &mut config.features.csp {
                        csp.components = real as usize;
                    }
                }
                Knob::SvmC => {
                    if let Some(DecoderConfig::Svm(s)) = &mut config.decoder {
                        s.c = real;
                    }
                }
                Knob::SvmGamma => {
                    if let Some(DecoderConfig::Svm(s)) = &mut config.decoder {
                        if s.kernel == Kernel::Rbf {
                            s.gamma = Gamma::Value(real);
                        }
                    }
                }
                Knob::LdaShrinkage => {
                    if let Some(DecoderConfig::Lda(l)) = &mut config.decoder {
                        l.shrinkage = Shrinkage::Fixed(real);
                    }
                }
                Knob::MlpWidth => {
                    if let Some(DecoderConfig::Mlp(m)) = &mut config.decoder {
                        m.hidden.iter_mut().for_each(|w| *w = real as usize);
                    }
                }
                Knob::MlpLearningRate => {
                    if let Some(DecoderConfig::Mlp(m)) = &mut config.decoder {
                        m.learning_rate = real;
                    }
                }
                Knob::MlpAdaptationRate => {
                    if let Some(DecoderConfig::Mlp(m)) = &mut config.decoder {
                        m.online.learning_rate = real;
                        // The adaptive rate moves between min_rate and max_rate around the
                        // base rate; keep the base rate inside that band.
                        m.online.max_rate = m.online.max_rate.max(real);
                        m.online.min_rate = m.online.min_rate.min(real);
                    }
                }
            }
        }
        // A hop longer than the window would skip samples; the tuner shortens it instead.
        config.features.hop_seconds = config
            .features
            .hop_seconds
            .min(config.features.window_seconds);
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const SPACE: &str = r#"
[genes]
bandpass_low = { real = [4.0, 12.0], step = 0.5 }
svm_c = { real = [0.01, 100.0], log = true }
csp_components = { integer = [2, 8] }
channels = { choice = ["all", "motor"] }
decoder = { choice = ["lda", "svm"] }

[channel_sets]
motor = ["C3", "Cz", "C4"]
"#;

    fn err(text: &str) -> String {
        SearchSpace::from_toml(text, "space.toml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn genes_stay_in_their_domain() {
        let space = SearchSpace::from_toml(SPACE, "t").unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..500 {
            let a = space.random_genome(&mut rng);
            let b = space.random_genome(&mut rng);
            for (i, gene) in space.genes.iter().enumerate() {
                let child = gene.cross(a.0[i], b.0[i], &mut rng);
                let mutant = gene.mutate(child, 0.5, &mut rng);
                for allele in [a.0[i], child, mutant] {
                    match (&gene.domain, allele) {
                        (
                            Domain::Real {
                                low, high, step, ..
                            },
                            Allele::Real(x),
                        ) => {
                            assert!((*low..=*high).contains(&x), "{x}");
                            if let Some(s) = step {
                                let k = (x - low) / s;
                                assert!((k - k.round()).abs() < 1e-9, "{x} off step {s}");
                            }
                        }
                        (Domain::Integer { low, high }, Allele::Integer(v)) => {
                            assert!((*low..=*high).contains(&v))
                        }
                        (Domain::Choice(n), Allele::Choice(c)) => assert!(c < n.len()),
                        other => panic!("allele of the wrong type: {other:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn a_choice_mutation_always_changes_the_choice() {
        let space = SearchSpace::from_toml(SPACE, "t").unwrap();
        let gene = space
            .genes
            .iter()
            .find(|g| g.knob == Knob::Decoder)
            .unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for c in 0..2 {
            for _ in 0..20 {
                assert_ne!(
                    gene.mutate(Allele::Choice(c), 0.1, &mut rng),
                    Allele::Choice(c)
                );
            }
        }
    }

    #[test]
    fn apply_writes_a_valid_pipeline_and_reads_back() {
        let space = SearchSpace::from_toml(SPACE, "t").unwrap();
        let base = PipelineConfig::from_toml(
            include_str!("../../pipelines/mi_csp_lda.toml"),
            "mi_csp_lda",
        )
        .unwrap();
        let start = space.genome_of(&base);
        // Genes in knob order: decoder, bandpass_low, channels, csp_components, svm_c.
        assert_eq!(start.0[0], Allele::Choice(0));
        assert_eq!(start.0[1], Allele::Real(8.0));
        assert_eq!(start.0[3], Allele::Integer(4));
        let same = space.apply(&base, &start).unwrap();
        assert_eq!(
            same, base,
            "the base genome must give back the base pipeline"
        );

        let mut genome = start.clone();
        genome.0[2] = Allele::Choice(1); // channels = motor
        genome.0[0] = Allele::Choice(1); // decoder = svm
        let tuned = space.apply(&base, &genome).unwrap();
        assert_eq!(tuned.preprocess.channels, ["C3", "Cz", "C4"]);
        let text = toml::to_string(&tuned).unwrap();
        let back = PipelineConfig::from_toml(&text, "round trip").unwrap();
        assert_eq!(back, tuned);
    }

    #[test]
    fn malformed_spaces_are_named() {
        let e = err("[genes]\nsvm_cc = { real = [1.0, 2.0] }\n");
        assert!(e.contains("svm_cc") && e.contains("svm_c"), "{e}");
        let e = err("[genes]\nsvm_c = { real = [1.0, 2.0], scale = 3 }\n");
        assert!(e.contains("scale"), "{e}");
        let e = err("[genes]\nsvm_c = { real = [10.0, 2.0] }\n");
        assert!(e.contains("genes.svm_c") && e.contains("[10, 2]"), "{e}");
        let e = err("[genes]\nlda_shrinkage = { real = [0.0, 2.0] }\n");
        assert!(
            e.contains("genes.lda_shrinkage") && e.contains("[0, 1]"),
            "{e}"
        );
        let e = err("[genes]\ncsp_components = { real = [2.0, 6.0] }\n");
        assert!(
            e.contains("genes.csp_components") && e.contains("integer"),
            "{e}"
        );
        let e = err("[genes]\ndecoder = { choice = [\"lda\", \"knn\"] }\n");
        assert!(e.contains("\"knn\"") && e.contains("\"mlp\""), "{e}");
        let e = err("[genes]\nchannels = { choice = [\"all\", \"motor\"] }\n");
        assert!(
            e.contains("\"motor\"") && e.contains("[channel_sets]"),
            "{e}"
        );
        let e = err("[genes]\nsvm_c = { real = [0.0, 2.0], log = true }\n");
        assert!(e.contains("log = true") && e.contains("positive"), "{e}");
        let e = err("[genes]\nbandpass_low = { real = [4.0, 20.0] }\nbandpass_high = { real = [15.0, 40.0] }\n");
        assert!(
            e.contains("bandpass_low") && e.contains("bandpass_high"),
            "{e}"
        );
        let e = err("[fitness]\nfolds = 1\n[genes]\nsvm_c = { real = [1.0, 2.0] }\n");
        assert!(e.contains("fitness.folds = 1"), "{e}");
        let e = err("[fitness]\nmetric = \"f1\"\n[genes]\nsvm_c = { real = [1.0, 2.0] }\n");
        assert!(e.contains("f1"), "{e}");
        let e = err("[genes]\n");
        assert!(e.contains("[genes] is empty"), "{e}");
        assert!(e.starts_with("config space.toml"), "{e}");
    }
}
