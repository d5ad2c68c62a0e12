//! Proposing a trial's parameter values: random, grid and TPE.
//!
//! Every proposal draws from its own random stream, seeded by the study's seed and the
//! trial's number, so random and grid studies propose the same trials for the same spec
//! and seed whatever order trials finish in; TPE does too for its first (random) trials and
//! whenever the history it learns from is the same.

use std::collections::BTreeMap;

use kiln_types::study::{Algorithm, Goal, ParamSpec, StudySpec};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A finished (or paused) trial, as the TPE sampler learns from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub params: BTreeMap<String, Value>,
    /// The objective: the finished model's, or the last epoch's for a pruned trial.
    pub value: f64,
    /// Stopped early: ranked behind every trial that finished.
    pub pruned: bool,
}

/// TPE proposes at random until this many trials have an objective.
pub const TPE_STARTUP_TRIALS: usize = 5;
/// Candidates TPE draws from the good trials' density per parameter.
pub const TPE_CANDIDATES: usize = 24;

/// The random stream of trial `number` of a study with `seed`.
pub fn trial_rng(seed: u64, number: u32) -> StdRng {
    let digest = Sha256::digest(format!("kiln-study:{seed}:{number}").as_bytes());
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(&digest);
    StdRng::from_seed(bytes)
}

/// The values of trial `number`. `history` is what TPE learns from (ignored by the others).
pub fn propose(spec: &StudySpec, number: u32, history: &[Observation]) -> BTreeMap<String, Value> {
    let mut rng = trial_rng(spec.seed, number);
    match spec.algorithm {
        Algorithm::Random => random(&spec.parameters, &mut rng),
        Algorithm::Grid => grid_point(&spec.parameters, number),
        Algorithm::Tpe => {
            let scored = history.iter().filter(|o| o.value.is_finite()).count();
            if scored < TPE_STARTUP_TRIALS {
                random(&spec.parameters, &mut rng)
            } else {
                tpe(&spec.parameters, spec.objective.goal, history, &mut rng)
            }
        }
    }
}

fn random(space: &BTreeMap<String, ParamSpec>, rng: &mut StdRng) -> BTreeMap<String, Value> {
    space.iter().map(|(path, p)| (path.clone(), sample_prior(p, rng))).collect()
}

/// The `number`-th combination of the grid, the last parameter varying fastest (by path
/// order). Numbers past the grid's size wrap around (the scheduler never asks for them).
pub fn grid_point(space: &BTreeMap<String, ParamSpec>, number: u32) -> BTreeMap<String, Value> {
    let axes: Vec<(&String, Vec<Value>)> = space
        .iter()
        .map(|(path, p)| (path, p.grid().unwrap_or_else(|| vec![sample_mid(p)])))
        .collect();
    let mut rest = u64::from(number);
    let mut out = BTreeMap::new();
    for (path, values) in axes.iter().rev() {
        let n = values.len() as u64;
        out.insert((*path).clone(), values[(rest % n) as usize].clone());
        rest /= n;
    }
    out
}

fn sample_mid(p: &ParamSpec) -> Value {
    match p {
        ParamSpec::Float { min, max, .. } => Value::from((min + max) / 2.0),
        ParamSpec::Int { min, .. } => Value::from(*min),
        ParamSpec::Categorical { values } => values[0].clone(),
    }
}

/// A numeric parameter's sampling space: log or linear, as an interval.
fn interval(p: &ParamSpec) -> Option<(f64, f64, bool)> {
    match p {
        ParamSpec::Float { min, max, log, .. } => {
            Some(if *log { (min.ln(), max.ln(), true) } else { (*min, *max, false) })
        }
        ParamSpec::Int { min, max, log, .. } => {
            let (lo, hi) = (*min as f64 - 0.5, *max as f64 + 0.5);
            Some(if *log { (lo.max(0.5).ln(), hi.ln(), true) } else { (lo, hi, false) })
        }
        ParamSpec::Categorical { .. } => None,
    }
}

/// A point of the sampling space back to the parameter's value (rounded to its step).
fn to_value(p: &ParamSpec, x: f64) -> Value {
    match p {
        ParamSpec::Float { min, max, log, step } => {
            let mut v = if *log { x.exp() } else { x };
            if let Some(step) = step {
                v = min + ((v - min) / step).round() * step;
            }
            Value::from(v.clamp(*min, *max))
        }
        ParamSpec::Int { min, max, step, log } => {
            let v = if *log { x.exp() } else { x };
            let k = ((v - *min as f64) / *step as f64).round() as i64;
            Value::from((min + k * step).clamp(*min, *max - (*max - *min) % step))
        }
        ParamSpec::Categorical { values } => values[0].clone(),
    }
}

/// The inverse of [`to_value`] for a stored value (TPE's observations).
fn to_point(p: &ParamSpec, v: &Value) -> Option<f64> {
    let x = v.as_f64()?;
    match p {
        ParamSpec::Float { log: true, .. } | ParamSpec::Int { log: true, .. } => Some(x.ln()),
        ParamSpec::Float { .. } | ParamSpec::Int { .. } => Some(x),
        ParamSpec::Categorical { .. } => None,
    }
}

fn sample_prior(p: &ParamSpec, rng: &mut StdRng) -> Value {
    match p {
        ParamSpec::Categorical { values } => values[rng.random_range(0..values.len())].clone(),
        ParamSpec::Int { min, max, step, log: false } => {
            let k = rng.random_range(0..=(max - min) / step);
            Value::from(min + k * step)
        }
        _ => {
            let (lo, hi, _) = interval(p).expect("numeric");
            to_value(p, rng.random_range(lo..hi))
        }
    }
}

fn normal(rng: &mut StdRng) -> f64 {
    // Box–Muller.
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random_range(0.0..1.0);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A Parzen estimator on `[lo, hi]`: one Gaussian per observation plus a wide prior.
struct Parzen {
    mus: Vec<f64>,
    sigmas: Vec<f64>,
    lo: f64,
    hi: f64,
}

impl Parzen {
    fn new(points: &[f64], lo: f64, hi: f64) -> Self {
        let range = hi - lo;
        let mut mus = points.to_vec();
        let n = points.len().max(1) as f64;
        // Each kernel's width: the distance to its neighbours, within bounds (Optuna's
        // "magic clip" in spirit), so a tight cluster stays tight and a lone point does not.
        let mut sorted = points.to_vec();
        sorted.sort_by(f64::total_cmp);
        let min_sigma = range / (100.0_f64).min(1.0 + n);
        let mut sigmas: Vec<f64> = points
            .iter()
            .map(|x| {
                let i = sorted.partition_point(|s| s < x);
                let left = if i > 0 { x - sorted[i - 1] } else { x - lo };
                let right = if i + 1 < sorted.len() { sorted[i + 1] - x } else { hi - x };
                left.max(right).clamp(min_sigma, range)
            })
            .collect();
        mus.push((lo + hi) / 2.0);
        sigmas.push(range);
        Parzen { mus, sigmas, lo, hi }
    }

    fn sample(&self, rng: &mut StdRng) -> f64 {
        let i = rng.random_range(0..self.mus.len());
        for _ in 0..16 {
            let x = self.mus[i] + self.sigmas[i] * normal(rng);
            if (self.lo..=self.hi).contains(&x) {
                return x;
            }
        }
        self.mus[i].clamp(self.lo, self.hi)
    }

    fn log_density(&self, x: f64) -> f64 {
        let n = self.mus.len() as f64;
        let p: f64 = self
            .mus
            .iter()
            .zip(&self.sigmas)
            .map(|(mu, s)| {
                let z = (x - mu) / s;
                (-0.5 * z * z).exp() / s
            })
            .sum::<f64>()
            / n;
        p.max(1e-300).ln()
    }
}

/// Splits observations into the good quarter and the rest, best first.
fn split(goal: Goal, history: &[Observation]) -> (Vec<&Observation>, Vec<&Observation>) {
    let mut ranked: Vec<&Observation> = history.iter().filter(|o| o.value.is_finite()).collect();
    ranked.sort_by(|a, b| {
        a.pruned.cmp(&b.pruned).then_with(|| match goal {
            Goal::Minimize => a.value.total_cmp(&b.value),
            Goal::Maximize => b.value.total_cmp(&a.value),
        })
    });
    let n_good = ranked.len().div_ceil(4).clamp(1, 25);
    let bad = ranked.split_off(n_good);
    (ranked, bad)
}

fn tpe(
    space: &BTreeMap<String, ParamSpec>,
    goal: Goal,
    history: &[Observation],
    rng: &mut StdRng,
) -> BTreeMap<String, Value> {
    let (good, bad) = split(goal, history);
    let mut out = BTreeMap::new();
    for (path, p) in space {
        let value = match p {
            ParamSpec::Categorical { values } => {
                let weights = |group: &[&Observation]| -> Vec<f64> {
                    values
                        .iter()
                        .map(|v| {
                            let hits =
                                group.iter().filter(|o| o.params.get(path) == Some(v)).count();
                            (hits as f64 + 1.0) / (group.len() as f64 + values.len() as f64)
                        })
                        .collect()
                };
                let (l, g) = (weights(&good), weights(&bad));
                let total: f64 = l.iter().sum();
                let mut best = (f64::NEG_INFINITY, 0);
                for _ in 0..TPE_CANDIDATES {
                    let mut r = rng.random_range(0.0..total);
                    let mut i = 0;
                    while i + 1 < l.len() && r >= l[i] {
                        r -= l[i];
                        i += 1;
                    }
                    let score = l[i].ln() - g[i].ln();
                    if score > best.0 {
                        best = (score, i);
                    }
                }
                values[best.1].clone()
            }
            _ => {
                let (lo, hi, _) = interval(p).expect("numeric");
                let points = |group: &[&Observation]| -> Vec<f64> {
                    group.iter().filter_map(|o| to_point(p, o.params.get(path)?)).collect()
                };
                let l = Parzen::new(&points(&good), lo, hi);
                let g = Parzen::new(&points(&bad), lo, hi);
                let mut best = (f64::NEG_INFINITY, (lo + hi) / 2.0);
                for _ in 0..TPE_CANDIDATES {
                    let x = l.sample(rng);
                    let score = l.log_density(x) - g.log_density(x);
                    if score > best.0 {
                        best = (score, x);
                    }
                }
                to_value(p, best.1)
            }
        };
        out.insert(path.clone(), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(algorithm: &str, parameters: Value) -> StudySpec {
        StudySpec::parse(&json!({
            "name": "t", "algorithm": algorithm, "seed": 7, "max_trials": 50,
            "base": {"dataset_id": "0191b0a0-0000-7000-8000-000000000001", "task": "classification",
                     "target": "y", "model": {"type": "mlp", "hidden": [8]}},
            "parameters": parameters, "objective": {"metric": "val_loss"}
        }))
        .unwrap()
    }

    fn space() -> Value {
        json!({"hyperparameters.learning_rate": {"type": "float", "min": 1e-4, "max": 0.3, "log": true},
               "hyperparameters.batch_size": {"type": "int", "min": 8, "max": 64, "step": 8},
               "model.hidden": {"type": "categorical", "values": [[16], [64, 32]]}})
    }

    #[test]
    fn random_draws_stay_in_bounds_and_repeat_with_the_seed() {
        let s = spec("random", space());
        let mut log_lrs = Vec::new();
        for n in 0..200 {
            let p = propose(&s, n, &[]);
            assert_eq!(p, propose(&s, n, &[]), "trial {n} is reproducible");
            let lr = p["hyperparameters.learning_rate"].as_f64().unwrap();
            assert!((1e-4..=0.3).contains(&lr), "{lr}");
            log_lrs.push(lr.log10());
            let bs = p["hyperparameters.batch_size"].as_i64().unwrap();
            assert!((8..=64).contains(&bs) && bs % 8 == 0, "{bs}");
            assert!([json!([16]), json!([64, 32])].contains(&p["model.hidden"]));
        }
        // Log-uniform: about as many draws below 1e-2.5 (the log midpoint... of 1e-4 and 0.3
        // is 10^-2.26) as above it, and some in each decade.
        let mid = (1e-4f64.log10() + 0.3f64.log10()) / 2.0;
        let below = log_lrs.iter().filter(|x| **x < mid).count();
        assert!((70..=130).contains(&below), "{below} of 200 below the log midpoint");
        for decade in [-4.0, -3.0, -2.0, -1.0] {
            assert!(
                log_lrs.iter().any(|x| (decade..decade + 1.0).contains(x)),
                "no draw in 1e{decade}"
            );
        }
        // Another seed, other trials.
        let mut other = s.clone();
        other.seed = 8;
        assert_ne!(propose(&s, 0, &[]), propose(&other, 0, &[]));
    }

    #[test]
    fn a_grid_enumerates_every_combination_once() {
        let s = spec(
            "grid",
            json!({"hyperparameters.batch_size": {"type": "int", "min": 8, "max": 32, "step": 8},
                   "model.hidden": {"type": "categorical", "values": [[16], [32], [64]]}}),
        );
        assert_eq!(s.trial_budget(), 12);
        let points: Vec<_> = (0..12).map(|n| propose(&s, n, &[])).collect();
        for (i, a) in points.iter().enumerate() {
            for b in &points[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(points[0]["hyperparameters.batch_size"], 8);
        assert_eq!(points[0]["model.hidden"], json!([16]));
        assert_eq!(points[1]["model.hidden"], json!([32]), "the last path varies fastest");
        assert_eq!(points[11]["hyperparameters.batch_size"], 32);
    }

    #[test]
    fn tpe_concentrates_on_the_good_region() {
        // The objective: distance of log10(lr) from -2, and hidden [64, 32] is better.
        let s = spec("tpe", space());
        let score = |p: &BTreeMap<String, Value>| {
            let lr = p["hyperparameters.learning_rate"].as_f64().unwrap();
            (lr.log10() + 2.0).abs() + if p["model.hidden"] == json!([64, 32]) { 0.0 } else { 0.5 }
        };
        let mut history = Vec::new();
        for n in 0..40 {
            let p = propose(&s, n, &history);
            history.push(Observation { value: score(&p), params: p, pruned: false });
        }
        let early: f64 = history[..10].iter().map(|o| o.value).sum::<f64>() / 10.0;
        let late: f64 = history[30..].iter().map(|o| o.value).sum::<f64>() / 10.0;
        assert!(
            late < early * 0.6,
            "TPE's late trials ({late:.3}) beat the random start ({early:.3})"
        );
        let best_hidden =
            history[30..].iter().filter(|o| o.params["model.hidden"] == json!([64, 32])).count();
        assert!(best_hidden >= 7, "{best_hidden} of 10 late trials chose the better layers");
        // The same history proposes the same next trial.
        assert_eq!(propose(&s, 40, &history), propose(&s, 40, &history));
    }
}
