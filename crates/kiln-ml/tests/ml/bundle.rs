//! Model bundles: self-describing, and predicting from them matches the trained model.

use kiln_ml::{DeviceChoice, MlError, ModelBundle, Prediction};
use serde_json::{Map, Value, json};

use crate::support::{cpu, data_path, prepared, spec, train_to_end};

fn rows_from_csv(path: &str, drop: &str, take: usize) -> Vec<Map<String, Value>> {
    let text = std::fs::read_to_string(data_path(path)).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .take(take)
        .map(|line| {
            header
                .iter()
                .zip(line.split(','))
                .filter(|(h, _)| **h != drop)
                .map(|(h, v)| (h.to_string(), v.parse::<f64>().map_or(json!(v), |x| json!(x))))
                .collect()
        })
        .collect()
}

#[test]
fn a_loaded_bundle_predicts_exactly_what_the_trained_model_does() {
    let spec = spec(
        "classification",
        Some("species"),
        json!({"type": "mlp", "hidden": [16], "dropout": 0.2}),
        json!({"epochs": 30, "batch_size": 16}),
    );
    let prepared = prepared(&spec, "iris.csv");
    let trained = train_to_end(&spec, &prepared, &cpu());
    let bytes = trained.bundle.to_bytes().unwrap();
    let bundle = ModelBundle::from_bytes(&bytes).unwrap();
    assert_eq!(bundle, trained.bundle);

    let meta = &bundle.meta;
    assert_eq!(meta.architecture.type_name(), "mlp");
    assert_eq!(meta.labels.as_deref().unwrap(), ["setosa", "versicolor", "virginica"]);
    assert_eq!(meta.input_schema["fields"][0], json!({"name": "sepal_length", "type": "number"}));
    assert_eq!(
        meta.lineage.dataset_sha256,
        kiln_ml::sha256_hex(&std::fs::read(data_path("iris.csv")).unwrap())
    );
    assert_eq!(meta.lineage.job_spec, spec.to_json());
    assert_eq!(meta.lineage.device, "cpu");
    assert!(!meta.lineage.git_commit.is_empty());
    assert_eq!(meta.parameters, (4 * 16 + 16 + 16 * 3 + 3) as u64);

    let loaded = bundle.load(DeviceChoice::Cpu).unwrap();
    let rows = rows_from_csv("iris.csv", "species", 150);
    let in_memory = trained.model.predict(&rows).unwrap();
    let from_bundle = loaded.predict(&rows).unwrap();
    assert_eq!(in_memory, from_bundle);
    // Rows one by one give the same as the batch, up to float rounding (a one-row matmul
    // takes another kernel than a 150-row one).
    for (row, expected) in rows.iter().zip(&from_bundle).step_by(7) {
        let single = &loaded.predict(std::slice::from_ref(row)).unwrap()[0];
        let (
            Prediction::Class { label: a, probabilities: pa },
            Prediction::Class { label: b, probabilities: pb },
        ) = (single, expected)
        else {
            panic!("not classes")
        };
        assert_eq!(a, b);
        for (x, y) in pa.values().zip(pb.values()) {
            assert!((x - y).abs() < 1e-6, "{x} vs {y}");
        }
    }
    // And they are good predictions: the training rows are mostly right.
    let correct = from_bundle
        .iter()
        .enumerate()
        .filter(|(i, p)| matches!(p, Prediction::Class { label, .. } if *label == ["setosa", "versicolor", "virginica"][i / 50]))
        .count();
    assert!(correct >= 135, "{correct}/150");
    let Prediction::Class { probabilities, .. } = &from_bundle[0] else { panic!() };
    assert!((probabilities.values().sum::<f64>() - 1.0).abs() < 1e-5);
    assert_eq!(serde_json::to_value(&from_bundle[0]).unwrap()["label"], "setosa");
}

#[test]
fn bad_rows_name_the_field_and_do_not_spoil_a_batch() {
    let spec =
        spec("classification", Some("species"), json!({"type": "linear"}), json!({"epochs": 2}));
    let prepared = prepared(&spec, "iris.csv");
    let trained = train_to_end(&spec, &prepared, &cpu());
    let model = &trained.model;
    let good =
        json!({"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2});
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("petal_width");
    let mut text = good.clone();
    text["sepal_width"] = json!("wide");
    let mut nested = good.clone();
    nested["petal_length"] = json!([1]);
    let rows: Vec<Map<String, Value>> =
        [good, missing, text, nested].into_iter().map(|v| v.as_object().unwrap().clone()).collect();

    let err = model.predict(&rows).unwrap_err();
    assert!(err.is_user_error());
    assert!(
        matches!(&err, MlError::Input { index: 1, field, .. } if field == "petal_width"),
        "{err}"
    );
    assert!(err.to_string().starts_with("instance 1, field `petal_width`: missing value"), "{err}");

    let each = model.predict_each(&rows);
    assert!(each[0].is_ok());
    let messages: Vec<String> =
        each[1..].iter().map(|r| r.as_ref().unwrap_err().to_string()).collect();
    assert_eq!(messages[1], "instance 2, field `sepal_width`: `wide` is not a number");
    assert_eq!(messages[2], "instance 3, field `petal_length`: must be a number or a string");
}

#[test]
fn image_bundles_take_arrays_and_check_their_size() {
    let spec =
        spec("classification", None, json!({"type": "cnn", "channels": [4]}), json!({"epochs": 1}));
    let prepared = prepared(&spec, "digits.npz");
    let trained = train_to_end(&spec, &prepared, &cpu());
    let loaded = ModelBundle::from_bytes(&trained.bundle.to_bytes().unwrap())
        .unwrap()
        .load(DeviceChoice::Cpu)
        .unwrap();
    let flat: Vec<f64> = (0..64).map(|i| f64::from(i % 17)).collect();
    let nested: Vec<Vec<Vec<f64>>> = vec![flat.chunks(8).map(<[f64]>::to_vec).collect()];
    let rows: Vec<Map<String, Value>> = [json!({"x": flat}), json!({"x": nested})]
        .into_iter()
        .map(|v| v.as_object().unwrap().clone())
        .collect();
    let predictions = loaded.predict(&rows).unwrap();
    assert_eq!(predictions[0], predictions[1]);
    assert_eq!(predictions, trained.model.predict(&rows).unwrap());
    let short = json!({"x": [1.0, 2.0]}).as_object().unwrap().clone();
    let err = loaded.predict(&[short]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "instance 0, field `x`: has 2 numbers; expected 64 (shape [1, 8, 8])"
    );
}

#[test]
fn a_corrupt_bundle_is_an_infrastructure_error() {
    let err = ModelBundle::from_bytes(b"PK\x03\x04nope").unwrap_err();
    assert!(!err.is_user_error(), "{err}");
}
