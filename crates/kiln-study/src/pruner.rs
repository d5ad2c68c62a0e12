//! Early stopping: whether a trial stops at an epoch (asked by its worker, right after the
//! epoch's metrics are stored), and which paused trials ASHA promotes (asked by the
//! scheduler).

use kiln_types::JobState;
use kiln_types::study::{EarlyStopping, Goal};
use uuid::Uuid;

/// What the rule is judged on at one epoch: the other trials' values there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peer {
    pub job_id: Uuid,
    pub state: JobState,
    pub value: f64,
}

fn sort_best_first(goal: Goal, values: &mut [f64]) {
    values.sort_by(|a, b| match goal {
        Goal::Minimize => a.total_cmp(b),
        Goal::Maximize => b.total_cmp(a),
    });
}

/// True when the trial `job_id`, at `epoch` with its series so far `own` (by epoch, ending
/// at `epoch`), should stop.
///
/// - Median: its best value so far is worse than the median of the finished trials' values
///   at this epoch, once `min_trials` trials have finished (Optuna's `MedianPruner`, with
///   Katib's `min_trials_required`).
/// - ASHA, at a rung: its value is not among the top `1 / reduction_factor` of every trial
///   that reached the rung, itself included (with fewer than `reduction_factor` of them,
///   only the best so far goes on) — Optuna's `SuccessiveHalvingPruner`.
pub fn should_stop(
    rule: &EarlyStopping,
    goal: Goal,
    job_id: Uuid,
    epoch: u32,
    own: &[(u32, f64)],
    peers: &[Peer],
) -> bool {
    let Some(&(last_epoch, value)) = own.last() else { return false };
    if last_epoch != epoch || !value.is_finite() {
        return !value.is_finite() && last_epoch == epoch;
    }
    match *rule {
        EarlyStopping::Median { min_trials, start_epoch } => {
            if epoch < start_epoch {
                return false;
            }
            let mut finished: Vec<f64> = peers
                .iter()
                .filter(|p| p.job_id != job_id && p.state == JobState::Succeeded)
                .map(|p| p.value)
                .filter(|v| v.is_finite())
                .collect();
            if finished.len() < min_trials as usize {
                return false;
            }
            sort_best_first(goal, &mut finished);
            let median = median(&finished);
            let best_own = own
                .iter()
                .map(|(_, v)| *v)
                .filter(|v| v.is_finite())
                .reduce(|a, b| if goal.better(a, b) { a } else { b })
                .unwrap_or(value);
            goal.better(median, best_own)
        }
        EarlyStopping::Asha { reduction_factor, .. } => {
            if rule.rung_of(epoch).is_none() {
                return false;
            }
            let mut competing: Vec<f64> = peers
                .iter()
                .filter(|p| p.job_id != job_id)
                .map(|p| p.value)
                .filter(|v| v.is_finite())
                .collect();
            competing.push(value);
            sort_best_first(goal, &mut competing);
            let keep = (competing.len() / reduction_factor.max(2) as usize).max(1);
            goal.better(competing[keep - 1], value)
        }
    }
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 }
}

/// A paused trial ASHA might promote: its highest rung's epoch and value there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Paused {
    pub job_id: Uuid,
    pub rung_epoch: u32,
    pub value: f64,
}

/// The paused trials that now belong to the top `1 / reduction_factor` of their rung
/// (`rung_values(epoch)`: every trial's value at that rung epoch), best first. A trial
/// paused at a rung where fewer than `reduction_factor` trials have arrived is never
/// promoted: it was the weaker of too few to tell.
pub fn promotable(
    rule: &EarlyStopping,
    goal: Goal,
    paused: &[Paused],
    rung_values: impl Fn(u32) -> Vec<f64>,
) -> Vec<Uuid> {
    let EarlyStopping::Asha { reduction_factor, .. } = *rule else { return Vec::new() };
    let mut out: Vec<(f64, Uuid)> = Vec::new();
    for p in paused {
        let mut values: Vec<f64> =
            rung_values(p.rung_epoch).into_iter().filter(|v| v.is_finite()).collect();
        sort_best_first(goal, &mut values);
        let keep = values.len() / reduction_factor.max(2) as usize;
        if keep > 0 && !goal.better(values[keep - 1], p.value) {
            out.push((p.value, p.job_id));
        }
    }
    out.sort_by(|a, b| match goal {
        Goal::Minimize => a.0.total_cmp(&b.0),
        Goal::Maximize => b.0.total_cmp(&a.0),
    });
    out.into_iter().map(|(_, id)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn peers(values: &[(u128, JobState, f64)]) -> Vec<Peer> {
        values.iter().map(|&(n, state, value)| Peer { job_id: id(n), state, value }).collect()
    }

    #[test]
    fn median_stops_a_trial_worse_than_the_finished_median() {
        let rule = EarlyStopping::Median { min_trials: 3, start_epoch: 2 };
        let done = JobState::Succeeded;
        let three = peers(&[(1, done, 0.3), (2, done, 0.5), (3, done, 0.7)]);
        // Loss 0.6 at epoch 2 (best so far 0.6) > median 0.5: stop.
        assert!(should_stop(&rule, Goal::Minimize, id(9), 2, &[(1, 0.9), (2, 0.6)], &three));
        // A best-so-far below the median goes on even if this epoch was worse.
        assert!(!should_stop(&rule, Goal::Minimize, id(9), 2, &[(1, 0.4), (2, 0.6)], &three));
        // Before start_epoch, or with too few finished trials (running ones do not count):
        assert!(!should_stop(&rule, Goal::Minimize, id(9), 1, &[(1, 0.9)], &three));
        let running = peers(&[(1, done, 0.3), (2, done, 0.5), (3, JobState::Running, 0.1)]);
        assert!(!should_stop(&rule, Goal::Minimize, id(9), 2, &[(1, 0.9), (2, 0.9)], &running));
        // Maximising: accuracy 0.4 < median 0.5 stops.
        assert!(should_stop(&rule, Goal::Maximize, id(9), 2, &[(1, 0.2), (2, 0.4)], &three));
        assert!(!should_stop(&rule, Goal::Maximize, id(9), 2, &[(1, 0.2), (2, 0.6)], &three));
    }

    #[test]
    fn asha_keeps_the_top_third_at_a_rung() {
        let rule = EarlyStopping::Asha { min_epochs: 1, reduction_factor: 3 };
        let run = JobState::Running;
        // Alone at the rung: goes on.
        assert!(!should_stop(&rule, Goal::Minimize, id(1), 1, &[(1, 0.9)], &[]));
        // Second, and worse than the first: with fewer than 3 competitors only the best
        // goes on.
        let first = peers(&[(1, run, 0.5)]);
        assert!(should_stop(&rule, Goal::Minimize, id(2), 1, &[(1, 0.6)], &first));
        assert!(!should_stop(&rule, Goal::Minimize, id(2), 1, &[(1, 0.4)], &first));
        // Six at the rung: the best two go on.
        let five =
            peers(&[(1, run, 0.1), (2, run, 0.2), (3, run, 0.3), (4, run, 0.4), (5, run, 0.5)]);
        assert!(!should_stop(&rule, Goal::Minimize, id(6), 1, &[(1, 0.15)], &five));
        assert!(should_stop(&rule, Goal::Minimize, id(6), 1, &[(1, 0.25)], &five));
        // Not a rung (rungs: 1, 3, 9): never stops there.
        assert!(!should_stop(&rule, Goal::Minimize, id(6), 2, &[(1, 0.9), (2, 0.9)], &five));
        // A diverged trial (NaN loss) always stops.
        assert!(should_stop(&rule, Goal::Minimize, id(6), 2, &[(2, f64::NAN)], &five));
    }

    #[test]
    fn asha_promotes_a_paused_trial_once_enough_worse_ones_arrive() {
        let rule = EarlyStopping::Asha { min_epochs: 1, reduction_factor: 3 };
        let paused = [Paused { job_id: id(2), rung_epoch: 1, value: 0.4 }];
        // Paused as the weaker of two: not promoted while only those two are at the rung.
        assert!(promotable(&rule, Goal::Minimize, &paused, |_| vec![0.3, 0.4]).is_empty());
        // Six at the rung: the top two are 0.3 and 0.4, so it is promoted.
        let six = |_: u32| vec![0.3, 0.4, 0.5, 0.6, 0.7, 0.8];
        assert_eq!(promotable(&rule, Goal::Minimize, &paused, six), vec![id(2)]);
        // The median rule never promotes.
        let median = EarlyStopping::Median { min_trials: 1, start_epoch: 1 };
        assert!(promotable(&median, Goal::Minimize, &paused, six).is_empty());
    }
}
