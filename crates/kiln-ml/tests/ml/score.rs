//! Offline scoring (batch predictions): the same predictions as `LoadedModel::predict`,
//! bad rows reported and left out, and a resumed scorer that writes exactly what an
//! uninterrupted one does.

use kiln_ml::{DeviceChoice, ModelBundle, Prediction, ScoringInput};
use serde_json::json;

use crate::support::{cpu, data_path, init, prepared, spec, train_to_end};

/// Iris's rows as predict instances (numbers), without the label.
fn iris_instances() -> Vec<serde_json::Map<String, serde_json::Value>> {
    let text = std::fs::read_to_string(data_path("iris.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|line| {
            header
                .iter()
                .zip(line.split(','))
                .filter(|(h, _)| **h != "species")
                .map(|(h, v)| (h.to_string(), json!(v.parse::<f64>().unwrap())))
                .collect()
        })
        .collect()
}

fn iris_model() -> ModelBundle {
    init();
    let spec = spec(
        "classification",
        Some("species"),
        json!({"type": "mlp", "hidden": [8]}),
        json!({"epochs": 10, "batch_size": 16, "seed": 3}),
    );
    let prepared = prepared(&spec, "iris.csv");
    train_to_end(&spec, &prepared, &cpu()).bundle
}

/// Iris with the label dropped, an `id` column first, and two bad rows.
fn input() -> Vec<u8> {
    let text = std::fs::read_to_string(data_path("iris.csv")).unwrap();
    let mut out = String::from("id,petal_width,petal_length,sepal_width,sepal_length\n");
    for (i, line) in text.lines().skip(1).enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        match i {
            4 => out.push_str(&format!("a{i},{},,{},{}\n", f[3], f[1], f[0])),
            9 => out.push_str(&format!("\"a,{i}\",{},{},{},x\n", f[3], f[2], f[1])),
            _ => out.push_str(&format!("a{i},{},{},{},{}\n", f[3], f[2], f[1], f[0])),
        }
    }
    out.into_bytes()
}

#[test]
fn scored_rows_equal_predict_and_bad_rows_are_reported() {
    let bundle = iris_model();
    let model = bundle.load(DeviceChoice::Cpu).unwrap();
    let input = ScoringInput::open(model.meta(), input(), None).unwrap();
    assert_eq!(input.rows(), 150);
    assert_eq!(input.header(), "row,id,label,p_setosa,p_versicolor,p_virginica");
    let mut scorer = input.from_row(0);
    let part = scorer.next_part(&model, 1_000).unwrap().unwrap();
    assert!(scorer.next_part(&model, 1_000).unwrap().is_none());
    assert_eq!((part.rows, part.predictions), (150, 148));
    let bad: Vec<(u64, Option<&str>)> =
        part.bad.iter().map(|b| (b.row, b.field.as_deref())).collect();
    assert_eq!(bad, [(4, Some("petal_length")), (9, Some("sepal_length"))]);
    assert!(part.bad[0].error.contains("missing value"), "{:?}", part.bad);
    assert!(part.bad[1].error.contains("`x` is not a number"), "{:?}", part.bad);

    let rows = iris_instances();
    let text = String::from_utf8(part.csv).unwrap();
    let mut lines = text.lines().skip(1);
    for (i, row) in rows.iter().enumerate().filter(|(i, _)| *i != 4 && *i != 9) {
        let line = lines.next().unwrap();
        let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(line.as_bytes());
        let fields = reader.records().next().unwrap().unwrap();
        assert_eq!(&fields[0], i.to_string());
        assert_eq!(&fields[1], format!("a{i}"));
        let Prediction::Class { label, probabilities } =
            model.predict(std::slice::from_ref(row)).unwrap().remove(0)
        else {
            panic!("a class")
        };
        assert_eq!(&fields[2], label, "row {i}");
        for (k, l) in ["setosa", "versicolor", "virginica"].iter().enumerate() {
            let p: f64 = fields[3 + k].parse().unwrap();
            assert!((p - probabilities[*l]).abs() < 1e-6, "row {i}");
        }
    }
    assert!(lines.next().is_none());
}

#[test]
fn a_resumed_scorer_writes_what_an_uninterrupted_one_does() {
    let bundle = iris_model();
    let model = bundle.load(DeviceChoice::Cpu).unwrap();
    let input = ScoringInput::open(model.meta(), input(), Some("id")).unwrap();
    let whole = |scorer: &mut kiln_ml::PartScorer<'_>| {
        let mut lines = Vec::new();
        while let Some(part) = scorer.next_part(&model, 40).unwrap() {
            let text = String::from_utf8(part.csv).unwrap();
            lines.extend(text.lines().skip(1).map(str::to_owned));
        }
        lines
    };
    let all = whole(&mut input.from_row(0));
    assert_eq!(all.len(), 148);
    // Parts of 40 rows: resuming at row 80 (after two parts) gives the rest exactly.
    let rest = whole(&mut input.from_row(80));
    let expected: Vec<&String> =
        all.iter().filter(|l| l.split(',').next().unwrap().parse::<u64>().unwrap() >= 80).collect();
    assert_eq!(rest.iter().collect::<Vec<_>>(), expected);
    assert!(input.from_row(150).next_part(&model, 40).unwrap().is_none());
}

#[test]
fn an_input_that_cannot_fit_the_model_is_refused_before_scoring() {
    let bundle = iris_model();
    let meta = &bundle.meta;
    let err =
        ScoringInput::open(meta, b"sepal_length,sepal_width\n1,2\n".to_vec(), None).unwrap_err();
    assert!(err.is_user_error());
    assert!(err.to_string().contains("petal_length, petal_width"), "{err}");
    let err = ScoringInput::open(meta, input(), Some("order")).unwrap_err();
    assert!(err.to_string().contains("no id column `order`"), "{err}");
    let npz = std::fs::read(data_path("digits.npz")).unwrap();
    let err = ScoringInput::open(meta, npz, None).unwrap_err();
    assert!(err.to_string().contains("takes named columns"), "{err}");
}

#[test]
fn an_array_model_scores_an_npz_and_a_regression_writes_values() {
    init();
    // Digits from NPZ: `x` is N×64, the model's sample shape.
    let digits = spec(
        "classification",
        None,
        json!({"type": "mlp", "hidden": [16]}),
        json!({"epochs": 3, "batch_size": 64, "seed": 5}),
    );
    let data = prepared(&digits, "digits.npz");
    let model = train_to_end(&digits, &data, &cpu()).bundle.load(DeviceChoice::Cpu).unwrap();
    let npz = std::fs::read(data_path("digits.npz")).unwrap();
    let input = ScoringInput::open(model.meta(), npz, None).unwrap();
    assert!(input.header().starts_with("row,label,p_"), "{}", input.header());
    let part = input.from_row(0).next_part(&model, 100).unwrap().unwrap();
    assert_eq!((part.rows, part.predictions, part.bad.len()), (100, 100, 0));
    // The same samples as predict instances (`{"x": [...]}`, the CSV file's rows).
    let text = std::fs::read_to_string(data_path("digits.csv")).unwrap();
    let instances: Vec<serde_json::Map<String, serde_json::Value>> = text
        .lines()
        .skip(1)
        .take(100)
        .map(|line| {
            let x: Vec<f64> = line.split(',').take(64).map(|v| v.parse().unwrap()).collect();
            [("x".to_owned(), json!(x))].into_iter().collect()
        })
        .collect();
    let online = model.predict(&instances).unwrap();
    let csv = String::from_utf8(part.csv).unwrap();
    for (line, p) in csv.lines().skip(1).zip(&online) {
        let Prediction::Class { label, .. } = p else { panic!("a class") };
        assert_eq!(line.split(',').nth(1).unwrap(), label, "{line}");
    }

    // Wine's alcohol by regression: one `value` column, the predicted number.
    let alcohol = spec(
        "regression",
        Some("alcohol"),
        json!({"type": "mlp", "hidden": [8]}),
        json!({"epochs": 5, "batch_size": 16, "seed": 5}),
    );
    let data = prepared(&alcohol, "wine.csv");
    let model = train_to_end(&alcohol, &data, &cpu()).bundle.load(DeviceChoice::Cpu).unwrap();
    let wine = std::fs::read(data_path("wine.csv")).unwrap();
    let input = ScoringInput::open(model.meta(), wine, None).unwrap();
    assert_eq!(input.header(), "row,value");
    let part = input.from_row(170).next_part(&model, 100).unwrap().unwrap();
    assert_eq!((part.rows, part.predictions), (8, 8), "178 rows, from row 170");
    let values: Vec<f64> = String::from_utf8(part.csv)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(values.iter().all(|v| v.is_finite() && (5.0..20.0).contains(v)), "{values:?}");
}
