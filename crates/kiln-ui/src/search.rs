//! The runs list's search: whitespace-separated terms, all of which must hold.
//!
//! `lr=0.01` (a param or metric equals; numbers compare as numbers), `val_accuracy>0.9`
//! (`>`, `>=`, `<`, `<=`, `!=` on numbers), `optimizer~ada` (a param's text contains), and a
//! bare word matches the run's name. A param is looked up first, then the run's latest
//! metric value of that name.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::UiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Contains,
}

/// One parsed term.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    key: Option<String>,
    op: Op,
    value: String,
}

/// What a run offers the search.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub name: &'a str,
    pub params: &'a BTreeMap<String, Value>,
    pub metrics: &'a BTreeMap<String, f64>,
}

/// Parses a search; an empty one matches everything.
pub fn parse(q: &str) -> Result<Vec<Term>, UiError> {
    q.split_whitespace().map(parse_term).collect()
}

fn parse_term(t: &str) -> Result<Term, UiError> {
    const OPS: [(&str, Op); 7] = [
        (">=", Op::Ge),
        ("<=", Op::Le),
        ("!=", Op::Ne),
        ("=", Op::Eq),
        (">", Op::Gt),
        ("<", Op::Lt),
        ("~", Op::Contains),
    ];
    let found =
        OPS.iter().filter_map(|(s, op)| t.find(s).map(|i| (i, *s, *op))).min_by_key(|x| x.0);
    let Some((i, s, op)) = found else {
        return Ok(Term { key: None, op: Op::Contains, value: t.to_owned() });
    };
    let (key, value) = (&t[..i], &t[i + s.len()..]);
    if key.is_empty() || value.is_empty() {
        return Err(UiError::BadSearch {
            term: t.to_owned(),
            reason: "write it as name=value, name>number or name~text".to_owned(),
        });
    }
    if matches!(op, Op::Gt | Op::Ge | Op::Lt | Op::Le) && value.parse::<f64>().is_err() {
        return Err(UiError::BadSearch {
            term: t.to_owned(),
            reason: format!("`{value}` is not a number"),
        });
    }
    Ok(Term { key: Some(key.to_owned()), op, value: value.to_owned() })
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// True when every term holds for `s`.
pub fn matches(terms: &[Term], s: Subject<'_>) -> bool {
    terms.iter().all(|t| term_matches(t, s))
}

fn term_matches(t: &Term, s: Subject<'_>) -> bool {
    let Some(key) = &t.key else {
        return s.name.to_lowercase().contains(&t.value.to_lowercase());
    };
    let value = match (s.params.get(key), s.metrics.get(key)) {
        (Some(v), _) => v.clone(),
        (None, Some(m)) => serde_json::json!(m),
        (None, None) => return false,
    };
    let want = t.value.parse::<f64>().ok();
    let have = as_number(&value);
    match t.op {
        Op::Contains => as_text(&value).to_lowercase().contains(&t.value.to_lowercase()),
        Op::Eq => match (have, want) {
            (Some(h), Some(w)) => h == w,
            _ => as_text(&value) == t.value,
        },
        Op::Ne => match (have, want) {
            (Some(h), Some(w)) => h != w,
            _ => as_text(&value) != t.value,
        },
        op => match (have, want) {
            (Some(h), Some(w)) => match op {
                Op::Gt => h > w,
                Op::Ge => h >= w,
                Op::Lt => h < w,
                _ => h <= w,
            },
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_match_params_metrics_and_names() {
        let params = BTreeMap::from([
            ("lr".to_owned(), serde_json::json!(0.01)),
            ("optimizer".to_owned(), serde_json::json!("adamw")),
        ]);
        let metrics = BTreeMap::from([("val_accuracy".to_owned(), 0.93)]);
        let s = Subject { name: "iris-mlp", params: &params, metrics: &metrics };
        let yes = |q: &str| matches(&parse(q).unwrap(), s);
        assert!(yes(""));
        assert!(yes("lr=0.01 val_accuracy>0.9"));
        assert!(yes("optimizer~ADAM iris"));
        assert!(yes("val_accuracy<=0.93 lr!=0.1"));
        assert!(!yes("lr=0.1"));
        assert!(!yes("val_accuracy>0.95"));
        assert!(!yes("missing=1"));
        assert!(!yes("wine"));
    }

    #[test]
    fn malformed_terms_say_how_to_write_them() {
        assert!(matches!(parse("=3"), Err(UiError::BadSearch { .. })));
        assert!(matches!(parse("acc>high"), Err(UiError::BadSearch { .. })));
    }
}
