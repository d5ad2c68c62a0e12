//! Models learn: the accuracy floors of the issue, metrics, schedules and divergence.

use kiln_ml::{Dataset, MlError, NoObserver, TrainOutcome, prepare, train};
use serde_json::json;

use crate::support::{Recorder, cpu, init, prepared, spec, train_to_end};

#[test]
fn iris_mlp_reaches_93_percent_validation_accuracy() {
    let spec = spec(
        "classification",
        Some("species"),
        json!({"type": "mlp", "hidden": [32], "dropout": 0.1}),
        json!({"epochs": 60, "batch_size": 16, "learning_rate": 0.01}),
    );
    let prepared = prepared(&spec, "iris.csv");
    let trained = train_to_end(&spec, &prepared, &cpu());
    let v = &trained.metrics.validation;
    println!("iris mlp: val_accuracy {:?}, val_f1 {:?}", v.val_accuracy, v.val_f1);
    assert!(v.val_accuracy.unwrap() >= 0.93, "{v:?}");
    assert!(v.val_f1.unwrap() >= 0.9, "{v:?}");
    let matrix = trained.metrics.confusion_matrix.as_ref().unwrap();
    assert_eq!(matrix.len(), 3);
    assert_eq!(matrix.iter().flatten().sum::<u64>(), 30);
    assert_eq!(trained.history.len(), 60);
    assert!(trained.history[59].train_loss < trained.history[0].train_loss / 2.0);
}

#[test]
fn digits_mlp_from_csv_reaches_95_percent() {
    let spec = spec(
        "classification",
        Some("digit"),
        json!({"type": "mlp", "hidden": [64]}),
        json!({"epochs": 20, "batch_size": 32, "learning_rate": 0.003, "lr_schedule": "cosine"}),
    );
    let prepared = prepared(&spec, "digits.csv");
    let trained = train_to_end(&spec, &prepared, &cpu());
    let accuracy = trained.metrics.validation.val_accuracy.unwrap();
    println!("digits mlp (csv): val_accuracy {accuracy}");
    assert!(accuracy >= 0.95, "{accuracy}");
    // The cosine schedule decays the learning rate towards 0.
    assert!(trained.history[19].learning_rate < trained.history[0].learning_rate / 10.0);
}

#[test]
fn digits_cnn_from_npz_reaches_95_percent() {
    let spec = spec(
        "classification",
        None,
        json!({"type": "cnn", "channels": [16, 32]}),
        json!({"epochs": 12, "batch_size": 32, "learning_rate": 0.003, "optimizer": "adamw",
               "weight_decay": 0.01}),
    );
    let prepared = prepared(&spec, "digits.npz");
    let trained = train_to_end(&spec, &prepared, &cpu());
    let accuracy = trained.metrics.validation.val_accuracy.unwrap();
    println!("digits cnn (npz): val_accuracy {accuracy}");
    assert!(accuracy >= 0.95, "{accuracy}");
}

/// y = 3 a - 2 b + 0.5 c + 10 + small noise.
fn synthetic_regression_csv(rows: usize) -> String {
    let mut rng = 12345u64;
    let mut uniform = move || {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (rng >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut csv = String::from("a,b,c,y\n");
    for _ in 0..rows {
        let (a, b, c) = (uniform() * 10.0, uniform() * 5.0 - 2.0, uniform() * 100.0);
        let y = 3.0 * a - 2.0 * b + 0.5 * c + 10.0 + (uniform() - 0.5) * 0.5;
        csv.push_str(&format!("{a:.4},{b:.4},{c:.4},{y:.4}\n"));
    }
    csv
}

#[test]
fn linear_regression_fits_a_linear_function() {
    init();
    let data = Dataset::from_csv_bytes(synthetic_regression_csv(500).as_bytes()).unwrap();
    let spec = spec(
        "regression",
        Some("y"),
        json!({"type": "linear"}),
        json!({"epochs": 40, "batch_size": 32, "learning_rate": 0.05, "optimizer": "sgd",
               "momentum": 0.9, "lr_schedule": {"type": "step", "step_size": 15, "gamma": 0.5}}),
    );
    let prepared = prepare(&spec, &data).unwrap();
    let trained = train_to_end(&spec, &prepared, &cpu());
    let v = &trained.metrics.validation;
    println!(
        "synthetic linear regression: val_r2 {:?}, val_rmse {:?}, val_mae {:?}",
        v.val_r2, v.val_rmse, v.val_mae
    );
    assert!(v.val_r2.unwrap() >= 0.99, "{v:?}");
    assert!(v.val_rmse.unwrap() < 1.0 && v.val_mae.unwrap() < 1.0, "{v:?}");
    assert!(v.val_accuracy.is_none());
    let names: Vec<&str> = trained.history[0].series().iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["train_loss", "val_loss", "val_rmse", "val_mae", "val_r2"]);
}

#[test]
fn early_stopping_stops_and_keeps_the_best_epoch() {
    let spec = spec(
        "classification",
        Some("species"),
        json!({"type": "mlp", "hidden": [32]}),
        // A learning rate this high oscillates, so validation loss stops improving soon.
        json!({"epochs": 200, "batch_size": 8, "learning_rate": 0.5, "optimizer": "sgd",
               "early_stopping_patience": 3}),
    );
    let prepared = prepared(&spec, "iris.csv");
    let trained = train_to_end(&spec, &prepared, &cpu());
    let m = &trained.metrics;
    assert!(m.stopped_early && m.epochs_run < 200, "{m:?}");
    assert_eq!(m.epochs_run, m.best_epoch + 3);
    let best = &trained.history[m.best_epoch as usize - 1];
    assert!(
        (m.validation.val_loss - best.val_loss).abs() < 1e-6,
        "{} vs {}",
        m.validation.val_loss,
        best.val_loss
    );
}

#[test]
fn a_diverging_loss_is_a_user_error_naming_epoch_and_step() {
    init();
    let mut csv = String::from("x,y\n");
    for i in 0..64 {
        csv.push_str(&format!("{}e30,{}\n", i + 1, i % 5));
    }
    let data = Dataset::from_csv_bytes(csv.as_bytes()).unwrap();
    let mut body = spec(
        "regression",
        Some("y"),
        json!({"type": "linear"}),
        json!({"learning_rate": 1.0, "optimizer": "sgd", "batch_size": 8}),
    )
    .to_json();
    body["preprocessing"]["standardize"] = json!(false);
    let spec = kiln_types::JobSpec::parse(&body).unwrap();
    let prepared = prepare(&spec, &data).unwrap();
    let err = train(&spec, &prepared, &cpu(), &mut NoObserver, None).unwrap_err();
    assert!(err.is_user_error());
    match err {
        MlError::NonFiniteLoss { epoch, step, .. } => assert_eq!((epoch, step), (1, 1)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_observer_sees_every_step_and_epoch_and_can_cancel() {
    init();
    let spec = spec(
        "classification",
        Some("species"),
        json!({"type": "linear"}),
        json!({"epochs": 3, "batch_size": 40, "checkpoint_every_epochs": 1}),
    );
    let prepared = prepared(&spec, "iris.csv");
    let mut recorder = Recorder::default();
    let TrainOutcome::Completed(_) = train(&spec, &prepared, &cpu(), &mut recorder, None).unwrap()
    else {
        panic!("stopped")
    };
    // 120 training rows in batches of 40: 3 steps per epoch.
    assert_eq!(recorder.steps.len(), 9);
    assert_eq!(
        (recorder.steps[4].epoch, recorder.steps[4].step, recorder.steps[4].steps_per_epoch),
        (2, 2, 3)
    );
    assert_eq!(recorder.epochs.iter().map(|m| m.epoch).collect::<Vec<_>>(), [1, 2, 3]);
    // Checkpoints after epochs 1 and 2; the bundle supersedes one after the last.
    assert_eq!(recorder.checkpoints.iter().map(|c| c.epoch()).collect::<Vec<_>>(), [1, 2]);

    let mut cancelling = Recorder { stop_before: Some(5), ..Default::default() };
    match train(&spec, &prepared, &cpu(), &mut cancelling, None).unwrap() {
        TrainOutcome::Stopped { reason, checkpoint } => {
            assert_eq!(reason, kiln_ml::StopReason::Cancelled);
            assert_eq!((checkpoint.epoch(), checkpoint.step()), (1, 1));
            assert_eq!(cancelling.steps.len(), 4);
        }
        TrainOutcome::Completed(_) => panic!("did not stop"),
    }
}
