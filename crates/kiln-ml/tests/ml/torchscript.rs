//! A user's own `torch.jit.script`ed module, trained from Rust.
//!
//! The module is created here by the libtorch virtualenv's Python (`$KILN_PYTHON`, set by
//! `scripts/env.sh`, else `python3`); the test fails, not skips, when it cannot run.

use std::process::Command;

use kiln_ml::{DeviceChoice, MlError, ModelBundle, TrainOptions, TrainOutcome, train};
use serde_json::json;

use crate::support::{Recorder, init, prepared, spec};

const MODULE: &str = r#"
import sys
import torch

class IrisNet(torch.nn.Module):
    def __init__(self, inputs: int, outputs: int):
        super().__init__()
        self.hidden = torch.nn.Linear(inputs, 16)
        self.drop = torch.nn.Dropout(0.1)
        self.out = torch.nn.Linear(16, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(torch.tanh(self.hidden(x))))

torch.manual_seed(0)
torch.jit.script(IrisNet(int(sys.argv[2]), int(sys.argv[3]))).save(sys.argv[1])
"#;

/// Scripts a small module with `inputs` → `outputs` and returns its bytes.
fn scripted_module(inputs: usize, outputs: usize) -> Vec<u8> {
    let python = std::env::var("KILN_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("module.pt");
    // A file, not `-c`: torch.jit.script reads the module's source back.
    let source = dir.path().join("make_module.py");
    std::fs::write(&source, MODULE).unwrap();
    let output = Command::new(&python)
        .arg(&source)
        .args([path.to_str().unwrap(), &inputs.to_string(), &outputs.to_string()])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{python}` (source scripts/env.sh and run kiln_ensure_libtorch): {e}"
            )
        });
    assert!(
        output.status.success(),
        "`{python}` could not script the module (is torch installed? source scripts/env.sh): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read(&path).unwrap()
}

#[test]
fn a_scripted_module_learns_and_ships_in_its_bundle() {
    init();
    let script = scripted_module(4, 3);
    let spec = spec(
        "classification",
        Some("species"),
        json!({"type": "torchscript", "dataset_id": crate::support::DATASET_ID}),
        json!({"epochs": 30, "batch_size": 16, "learning_rate": 0.01}),
    );
    let prepared = prepared(&spec, "iris.csv");
    let options =
        TrainOptions { device: DeviceChoice::Cpu, script: Some(script), ..Default::default() };
    let mut recorder = Recorder::default();
    let TrainOutcome::Completed(trained) =
        train(&spec, &prepared, &options, &mut recorder, None).unwrap()
    else {
        panic!("stopped")
    };
    let first = recorder.steps[0].loss;
    let last = trained.history.last().unwrap().train_loss;
    println!(
        "torchscript: first batch loss {first:.4}, last epoch train loss {last:.4}, val_accuracy {:?}",
        trained.metrics.validation.val_accuracy
    );
    assert!(last <= first / 2.0, "loss fell from {first} to {last} only");

    // The bundle carries the module; loaded, it predicts what the trained one does.
    let bundle = ModelBundle::from_bytes(&trained.bundle.to_bytes().unwrap()).unwrap();
    assert_eq!(bundle.meta.architecture.type_name(), "torchscript");
    let loaded = bundle.load(DeviceChoice::Cpu).unwrap();
    let row =
        json!({"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3});
    let rows = [row.as_object().unwrap().clone()];
    assert_eq!(loaded.predict(&rows).unwrap(), trained.model.predict(&rows).unwrap());
}

#[test]
fn a_module_whose_outputs_do_not_fit_the_task_is_a_user_error() {
    init();
    let script = scripted_module(4, 5);
    let spec = spec(
        "classification",
        Some("species"),
        json!({"type": "torchscript", "dataset_id": crate::support::DATASET_ID}),
        json!({"epochs": 1}),
    );
    let prepared = prepared(&spec, "iris.csv");
    let options =
        TrainOptions { device: DeviceChoice::Cpu, script: Some(script), ..Default::default() };
    let err = train(&spec, &prepared, &options, &mut Recorder::default(), None).unwrap_err();
    assert!(err.is_user_error());
    assert!(
        matches!(&err, MlError::Script(m) if m.contains("returns [2, 5]; expected [batch, 3]")),
        "{err}"
    );
    let garbage = TrainOptions { script: Some(b"not a module".to_vec()), ..options };
    let err = train(&spec, &prepared, &garbage, &mut Recorder::default(), None).unwrap_err();
    assert!(matches!(&err, MlError::Script(m) if m.contains("cannot load")), "{err}");
}
