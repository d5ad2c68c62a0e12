//! Reading datasets and preparing them: typing, encoding, splitting, clear errors.

use kiln_ml::{
    ColumnEncoding, Dataset, DatasetFormat, InputEncoding, MlError, TargetEncoding, prepare,
};
use serde_json::json;

use crate::support::{dataset, spec};

fn iris_spec() -> kiln_types::JobSpec {
    spec("classification", Some("species"), json!({"type": "linear"}), json!({}))
}

#[test]
fn iris_is_split_stratified_and_standardised_on_the_training_rows() {
    let data = dataset("iris.csv");
    assert_eq!((data.format(), data.len()), (DatasetFormat::Csv, 150));
    assert_eq!(data.sha256().len(), 64);
    let prepared = prepare(&iris_spec(), &data).unwrap();
    // 20% of each 50-row class: 10 per class.
    assert_eq!((prepared.train_len(), prepared.val_len()), (120, 30));
    let TargetEncoding::Classes { labels, .. } = &prepared.preprocessor.target else { panic!() };
    assert_eq!(labels, &["setosa", "versicolor", "virginica"]);
    let InputEncoding::Columns { columns } = &prepared.preprocessor.input else { panic!() };
    let names: Vec<&str> = columns.iter().map(ColumnEncoding::name).collect();
    assert_eq!(names, ["sepal_length", "sepal_width", "petal_length", "petal_width"]);
    let ColumnEncoding::Number { shift, scale, .. } = &columns[0] else { panic!() };
    // Fitted on 120 training rows only: close to, but not exactly, the full-data statistics.
    assert!((shift - 5.843).abs() < 0.1 && (scale - 0.825).abs() < 0.1, "{shift} {scale}");
    assert_ne!(*shift, 5.843_333_333_333_334);
}

#[test]
fn the_split_depends_on_the_seed_only() {
    let data = dataset("iris.csv");
    let a = prepare(&iris_spec(), &data).unwrap();
    let b = prepare(&iris_spec(), &data).unwrap();
    assert_eq!(a.preprocessor, b.preprocessor);
    let other =
        spec("classification", Some("species"), json!({"type": "linear"}), json!({"seed": 7}));
    assert_ne!(prepare(&other, &data).unwrap().preprocessor, a.preprocessor);
}

#[test]
fn categorical_columns_are_one_hot_encoded_with_the_training_vocabulary() {
    let mut csv = String::from("colour,size,label\n");
    for i in 0..40 {
        let colour = ["red", "green", "blue"][i % 3];
        csv.push_str(&format!("{colour},{},{}\n", i % 7, if i % 2 == 0 { "yes" } else { "no" }));
    }
    let data = Dataset::from_csv_bytes(csv.as_bytes()).unwrap();
    let schema = serde_json::to_value(data.schema()).unwrap();
    assert_eq!(
        schema["columns"][0],
        json!({"name": "colour", "type": "category", "missing": 0, "distinct": 3, "label_candidate": true})
    );
    assert_eq!(schema["columns"][1]["type"], "number");
    assert_eq!(schema["columns"][1]["distinct"], 7);
    // Few distinct integers or categories: each could be a classification target.
    assert_eq!(schema["label_candidates"], json!(["colour", "size", "label"]));
    let prepared = prepare(
        &spec("classification", Some("label"), json!({"type": "linear"}), json!({})),
        &data,
    )
    .unwrap();
    let InputEncoding::Columns { columns } = &prepared.preprocessor.input else { panic!() };
    assert_eq!(
        columns[0],
        ColumnEncoding::Category {
            name: "colour".into(),
            categories: vec!["blue".into(), "green".into(), "red".into()],
        }
    );
    assert_eq!(prepared.preprocessor.input.width(), 4);
    let TargetEncoding::Classes { labels, .. } = &prepared.preprocessor.target else { panic!() };
    assert_eq!(labels, &["no", "yes"]);
}

#[test]
fn a_bad_value_is_reported_with_its_row_and_column() {
    let csv = "a,b,y\n1,2,0\n3,4,1\n5,oops,0\n7,8,1\n9,10,0\n11,12,1\n";
    let data = Dataset::from_csv_bytes(csv.as_bytes()).unwrap();
    let spec = spec(
        "classification",
        Some("y"),
        json!({"type": "linear"}),
        json!({"validation_split": 0.3}),
    );
    let err = prepare(&spec, &data).unwrap_err();
    assert!(err.is_user_error());
    match &err {
        MlError::DatasetValue { row, line, column, problem } => {
            assert_eq!((*row, *line, column.as_str()), (3, 4, "b"));
            assert!(problem.contains("`oops` is not a number"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "row 3 (line 4), column `b`: `oops` is not a number (the column is numeric)"
    );
}

#[test]
fn missing_values_fail_unless_imputed() {
    let csv = "a,b,y\n1,2,0\n3,,1\n5,6,0\n7,8,1\n9,10,0\n11,12,1\n13,14,0\n15,16,1\n";
    let data = Dataset::from_csv_bytes(csv.as_bytes()).unwrap();
    let strict = spec(
        "classification",
        Some("y"),
        json!({"type": "linear"}),
        json!({"validation_split": 0.25}),
    );
    let err = prepare(&strict, &data).unwrap_err();
    assert!(matches!(&err, MlError::DatasetValue { row: 2, column, .. } if column == "b"), "{err}");
    assert!(err.to_string().contains("missing value"), "{err}");

    let mut body = strict.to_json();
    body["preprocessing"]["missing"] = json!("impute");
    let imputed = kiln_types::JobSpec::parse(&body).unwrap();
    let prepared = prepare(&imputed, &data).unwrap();
    assert!(prepared.preprocessor.impute_missing);
}

#[test]
fn the_spec_must_fit_the_columns() {
    let data = dataset("iris.csv");
    // The rules the API applies at submission (JobSpec::check_against), by field.
    let unfit = |spec: &kiln_types::JobSpec, field: &str, words: &str| {
        let err = prepare(spec, &data).unwrap_err();
        assert!(err.is_user_error(), "{err}");
        let MlError::Unfit(errors) = &err else { panic!("{err:?}") };
        assert!(errors.fields()[field].contains(words), "{err}");
        assert!(err.to_string().contains(words), "{err}");
    };
    let wrong_target = spec("classification", Some("specis"), json!({"type": "linear"}), json!({}));
    unfit(&wrong_target, "target", "no column `specis`");
    let cnn = spec("classification", Some("species"), json!({"type": "cnn"}), json!({}));
    unfit(&cnn, "model.type", "a CNN needs images");
    let regression_on_text =
        spec("regression", Some("species"), json!({"type": "linear"}), json!({}));
    unfit(&regression_on_text, "target", "regression needs a numeric target");

    // What needs the values stays here: a numeric column with a word in it.
    let mut csv = String::from("a,y\n");
    for i in 0..20 {
        csv.push_str(&format!("{i},{}\n", if i == 7 { "seven".to_owned() } else { i.to_string() }));
    }
    let data = Dataset::from_csv_bytes(csv.as_bytes()).unwrap();
    let regression = spec("regression", Some("y"), json!({"type": "linear"}), json!({}));
    let err = prepare(&regression, &data).unwrap_err();
    assert!(err.to_string().contains("target `seven` is not a number"), "{err}");
}

/// The schemas kiln-ml infers are the JSON the `datasets.schema` rows hold: kiln-types'
/// contract fixtures are these files' schemas.
#[test]
fn schemas_are_the_stored_rows() {
    let fixture = |name: &str| -> serde_json::Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../kiln-types/tests/fixtures")
            .join(name);
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    for (data, fixture_name) in
        [("iris.csv", "schema_iris_csv.json"), ("digits.npz", "schema_digits_npz.json")]
    {
        let schema = serde_json::to_value(dataset(data).schema()).unwrap();
        assert_eq!(schema, fixture(fixture_name), "{data}");
        let (_, streamed) = kiln_ml::schema_of_file(crate::support::data_path(data)).unwrap();
        assert_eq!(serde_json::to_value(streamed).unwrap(), schema, "{data}");
    }
}

#[test]
fn malformed_files_are_user_errors() {
    let ragged = Dataset::from_csv_bytes(b"a,b\n1,2\n3\n").unwrap_err();
    assert!(ragged.is_user_error());
    assert!(
        ragged.to_string().contains("row 2 (line 3) has 1 fields but the header has 2"),
        "{ragged}"
    );
    assert!(Dataset::from_csv_bytes(b"a,b\n").unwrap_err().to_string().contains("no rows"));
    let npz = Dataset::from_npz_bytes(b"PK\x03\x04garbage").unwrap_err();
    assert!(npz.is_user_error(), "{npz}");
}

#[test]
fn digits_npz_holds_images_with_per_channel_statistics() {
    let data = dataset("digits.npz");
    assert_eq!((data.format(), data.len()), (DatasetFormat::Npz, 1797));
    assert_eq!(serde_json::to_value(data.schema()).unwrap()["x"]["shape"], json!([1797, 1, 8, 8]));
    let spec = spec("classification", None, json!({"type": "cnn"}), json!({}));
    let prepared = prepare(&spec, &data).unwrap();
    let InputEncoding::Tensor { shape, shift, scale, .. } = &prepared.preprocessor.input else {
        panic!()
    };
    assert_eq!((shape.as_slice(), shift.len(), scale.len()), (&[1, 8, 8][..], 1, 1));
    let TargetEncoding::Classes { labels, .. } = &prepared.preprocessor.target else { panic!() };
    assert_eq!(labels.len(), 10);
    assert_eq!(prepared.train_len() + prepared.val_len(), 1797);
}

#[test]
fn continuous_columns_are_not_label_candidates() {
    let mut csv = String::from("x,y\n");
    for i in 0..300 {
        csv.push_str(&format!("{}.5,{}\n", i, i % 2));
    }
    let schema =
        serde_json::to_value(Dataset::from_csv_bytes(csv.as_bytes()).unwrap().schema()).unwrap();
    assert_eq!(schema["columns"][0]["label_candidate"], false);
    assert_eq!(
        schema["columns"][0]["distinct"],
        serde_json::Value::Null,
        "counted only up to the cap"
    );
    assert_eq!(schema["label_candidates"], json!(["y"]));
}

/// `schema_of_file` (the API's upload path: one streaming pass) must answer exactly what
/// the whole-file parse answers, schema or error, for every file.
#[test]
fn the_streamed_schema_of_a_file_is_the_whole_file_schema_and_errors_alike() {
    use std::io::Write;

    use kiln_ml::schema_of_file;

    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<(String, Vec<u8>)> = ["iris.csv", "wine.csv", "digits.csv", "digits.npz"]
        .iter()
        .map(|name| (name.to_string(), std::fs::read(crate::support::data_path(name)).unwrap()))
        .collect();
    // Missing-value tokens, empty cells, numbers and words mixed, integers and not,
    // 150 distinct values (past the cap), padded cells.
    let mut mixed = String::from("id, a ,b,c,d\n");
    for i in 0..400 {
        let b = match i % 9 {
            0 => "NA".to_owned(),
            1 => String::new(),
            _ => format!(" {} ", i % 4),
        };
        let c = if i % 3 == 0 { "word".to_owned() } else { format!("{}.5", i % 150) };
        let d = if i % 2 == 0 { "x" } else { "" };
        mixed.push_str(&format!("{i},{},{b},{c},{d}\n", i % 150));
    }
    files.push(("mixed.csv".into(), mixed.into_bytes()));
    let npz = |entries: &[(&str, Vec<u8>)], method: zip::CompressionMethod| {
        let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, bytes) in entries {
            let options = zip::write::FileOptions::default().compression_method(method);
            writer.start_file(*name, options).unwrap();
            writer.write_all(bytes).unwrap();
        }
        writer.finish().unwrap().into_inner()
    };
    let npy = |descr: &str, shape: &str, data: &[u8]| {
        let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    };
    let floats = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let x = npy("<f4", "(3, 2)", &floats(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
    let y =
        npy("<i8", "(3,)", &[1i64, 0, 1].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>());
    let nan_x = npy("<f4", "(3, 2)", &floats(&[1.0, 2.0, 3.0, f32::NAN, 5.0, 6.0]));
    let deflated = zip::CompressionMethod::Deflated;
    files.extend([
        ("small.npz".into(), npz(&[("x.npy", x.clone()), ("y.npy", y.clone())], deflated)),
        (
            "stored.npz".into(),
            npz(&[("x.npy", x.clone()), ("y.npy", y.clone())], zip::CompressionMethod::Stored),
        ),
        ("nan.npz".into(), npz(&[("x.npy", nan_x.clone()), ("y.npy", y.clone())], deflated)),
        // A NaN in `x` and no `y`: the missing array is reported first.
        ("no-y.npz".into(), npz(&[("x.npy", nan_x)], deflated)),
        ("short.npz".into(), npz(&[("x.npy", x[..x.len() - 3].to_vec()), ("y.npy", y)], deflated)),
        ("rank.npz".into(), npz(&[("x.npy", x.clone()), ("y.npy", x)], deflated)),
        ("garbage.npz".into(), b"PK\x03\x04garbage".to_vec()),
        ("ragged.csv".into(), b"a,b\n1,2\n3\n".to_vec()),
        ("no-rows.csv".into(), b"a,b\n".to_vec()),
        ("twice.csv".into(), b"a,b,a\n1,2,3\n".to_vec()),
        ("unnamed.csv".into(), b"a,,b\n1,2,3\n".to_vec()),
        ("latin1.csv".into(), b"a,b\n1,2\n3,caf\xe9\n".to_vec()),
        ("empty.csv".into(), Vec::new()),
    ]);
    for (name, bytes) in &files {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let whole = Dataset::from_bytes(bytes).map(|d| (d.format(), d.schema()));
        let streamed = schema_of_file(&path);
        match (whole, streamed) {
            (Ok(whole), Ok(streamed)) => assert_eq!(whole, streamed, "{name}"),
            (Err(whole), Err(streamed)) => {
                assert!(streamed.is_user_error(), "{name}: {streamed}");
                assert_eq!(whole.to_string(), streamed.to_string(), "{name}");
            }
            (whole, streamed) => panic!("{name}: {whole:?} but streamed {streamed:?}"),
        }
    }
    let (_, mixed) = schema_of_file(dir.path().join("mixed.csv")).unwrap();
    let mixed = serde_json::to_value(mixed).unwrap();
    assert_eq!(mixed["columns"][1]["distinct"], json!(null), "150 distinct values: past the cap");
    assert_eq!(mixed["columns"][2]["missing"], 45, "empty cells only; NA counts as a value");
    let nan = schema_of_file(dir.path().join("nan.npz")).unwrap_err();
    assert!(nan.to_string().contains("non-finite value in sample 1"), "{nan}");
}
