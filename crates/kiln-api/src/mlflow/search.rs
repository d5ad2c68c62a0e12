//! MLflow's search grammar (`mlflow/utils/search_utils.py`): the `filter` of runs/search
//! and experiments/search (`key op value [and key op value ...]`) and their `order_by`
//! terms, parsed into kiln-db's [`RunClause`] / [`ExpClause`] trees, which kiln-db compiles
//! to SQL with bound parameters. Anything the grammar does not allow is an error whose
//! message names the offending part (answered as `INVALID_PARAMETER_VALUE`).
//!
//! Identifiers are `entity.key` (`metrics`/`metric`, `params`/`param`/`parameter(s)`,
//! `tags`/`tag`, `attributes`/`attribute`/`attr`/`run`, `datasets`/`dataset`), a bare
//! key being an attribute; a key may be quoted with backticks or double quotes
//! (``metrics.`my loss` ``). Values are single- or double-quoted strings, numbers, or a
//! parenthesised list of strings for `IN` / `NOT IN`.

use kiln_db::repo::mlflow::{
    Cmp, ExpClause, ExpKey, ExpOrder, Operand, RunClause, RunKey, RunOrder,
};

/// An identifier as written: its entity (None: bare) and key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ident {
    pub entity: Option<String>,
    pub key: String,
}

/// A clause's value as written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Str(String),
    Num(f64, String),
    List(Vec<String>),
    Nothing,
}

/// One `key op value` clause as written, before it is checked against what a search allows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawClause {
    pub ident: Ident,
    pub cmp: Cmp,
    pub value: Value,
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

fn is_bare(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | ':' | '/')
}

impl<'a> Lexer<'a> {
    fn new(src: &'a str) -> Self {
        Lexer { src, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.src.len() - trimmed.len();
    }

    fn at_end(&mut self) -> bool {
        self.skip_ws();
        self.pos >= self.src.len()
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.rest().chars().next()
    }

    /// A keyword (case-insensitive) followed by a non-identifier character.
    fn keyword(&mut self, word: &str) -> bool {
        self.skip_ws();
        let rest = self.rest();
        if rest.len() >= word.len()
            && rest.is_char_boundary(word.len())
            && rest[..word.len()].eq_ignore_ascii_case(word)
            && !rest[word.len()..].chars().next().is_some_and(is_bare)
        {
            self.pos += word.len();
            true
        } else {
            false
        }
    }

    fn quoted(&mut self, quote: char) -> Result<String, String> {
        // At the opening quote; a doubled quote or a backslash escapes one.
        let start = self.pos;
        self.pos += quote.len_utf8();
        let mut out = String::new();
        let mut chars = self.rest().char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '\\' {
                if let Some((_, next)) = chars.next() {
                    out.push(next);
                    continue;
                }
            } else if c == quote {
                if chars.peek().is_some_and(|(_, n)| *n == quote) {
                    chars.next();
                    out.push(quote);
                    continue;
                }
                self.pos += i + c.len_utf8();
                return Ok(out);
            } else {
                out.push(c);
            }
        }
        Err(format!("unterminated quote starting at `{}`", &self.src[start..]))
    }

    fn bare(&mut self) -> String {
        let rest = self.rest();
        let end = rest.find(|c: char| !is_bare(c)).unwrap_or(rest.len());
        self.pos += end;
        rest[..end].to_owned()
    }

    fn ident(&mut self) -> Result<Ident, String> {
        match self.peek() {
            None => Err("expected an identifier such as `metrics.loss`, found the end".into()),
            Some(q @ ('`' | '"')) => Ok(Ident { entity: None, key: self.quoted(q)? }),
            Some(c) if c.is_alphanumeric() || c == '_' => {
                let rest = self.rest();
                let word_end =
                    rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
                if rest[word_end..].starts_with('.') {
                    let entity = rest[..word_end].to_owned();
                    self.pos += word_end + 1;
                    let key = match self.rest().chars().next() {
                        Some(q @ ('`' | '"')) => self.quoted(q)?,
                        _ => self.bare(),
                    };
                    if key.is_empty() {
                        return Err(format!("`{entity}.` needs a key after the dot"));
                    }
                    Ok(Ident { entity: Some(entity), key })
                } else {
                    Ok(Ident { entity: None, key: self.bare() })
                }
            }
            Some(c) => Err(format!("expected an identifier such as `metrics.loss`, found `{c}`")),
        }
    }

    fn cmp(&mut self) -> Result<Cmp, String> {
        for (tok, cmp) in [
            ("!=", Cmp::Ne),
            ("<=", Cmp::Le),
            (">=", Cmp::Ge),
            ("=", Cmp::Eq),
            ("<", Cmp::Lt),
            (">", Cmp::Gt),
        ] {
            self.skip_ws();
            if self.rest().starts_with(tok) {
                self.pos += tok.len();
                return Ok(cmp);
            }
        }
        if self.keyword("LIKE") {
            return Ok(Cmp::Like);
        }
        if self.keyword("ILIKE") {
            return Ok(Cmp::ILike);
        }
        if self.keyword("IN") {
            return Ok(Cmp::In);
        }
        if self.keyword("NOT") {
            if self.keyword("IN") {
                return Ok(Cmp::NotIn);
            }
            return Err("expected `IN` after `NOT`".into());
        }
        if self.keyword("IS") {
            let not = self.keyword("NOT");
            if self.keyword("NULL") {
                return Ok(if not { Cmp::IsNotNull } else { Cmp::IsNull });
            }
            return Err("expected `NULL` after `IS`".into());
        }
        match self.peek() {
            None => Err("expected a comparison (=, !=, <, <=, >, >=, LIKE, ILIKE, IN, NOT IN), found the end".into()),
            Some(_) => Err(format!(
                "expected a comparison (=, !=, <, <=, >, >=, LIKE, ILIKE, IN, NOT IN), found `{}`",
                self.rest().split_whitespace().next().unwrap_or_default()
            )),
        }
    }

    fn value(&mut self, cmp: Cmp) -> Result<Value, String> {
        if matches!(cmp, Cmp::IsNull | Cmp::IsNotNull) {
            return Ok(Value::Nothing);
        }
        match self.peek() {
            None => Err("expected a value, found the end".into()),
            Some(q @ ('\'' | '"')) => Ok(Value::Str(self.quoted(q)?)),
            Some('(') => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    match self.peek() {
                        Some(q @ ('\'' | '"')) => items.push(self.quoted(q)?),
                        Some(')') if items.is_empty() => {
                            return Err("an IN list needs at least one value".into());
                        }
                        _ => return Err("an IN list holds quoted strings: ('a', 'b')".into()),
                    }
                    match self.peek() {
                        Some(',') => self.pos += 1,
                        Some(')') => {
                            self.pos += 1;
                            return Ok(Value::List(items));
                        }
                        _ => return Err("expected `,` or `)` in an IN list".into()),
                    }
                }
            }
            Some(c) if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => {
                if c == '+' {
                    self.pos += 1;
                }
                let word = self.bare();
                word.parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite())
                    .map(|n| Value::Num(n, word.clone()))
                    .ok_or_else(|| format!("`{word}` is not a number"))
            }
            Some(_) => Err(format!(
                "the value `{}` must be quoted ('...') or a number",
                self.rest().split_whitespace().next().unwrap_or_default()
            )),
        }
    }
}

/// Lexes a filter into its clauses (joined by AND), the grammar every MLflow search shares:
/// runs, experiments, registered models, model versions and logged models.
pub(crate) fn parse_clauses(filter: &str) -> Result<Vec<RawClause>, String> {
    let mut lx = Lexer::new(filter);
    let mut out = Vec::new();
    if lx.at_end() {
        return Ok(out);
    }
    loop {
        let ident = lx.ident()?;
        let cmp = lx.cmp()?;
        let value = lx.value(cmp)?;
        out.push(RawClause { ident, cmp, value });
        if lx.at_end() {
            return Ok(out);
        }
        if lx.keyword("AND") {
            continue;
        }
        if lx.keyword("OR") {
            return Err("OR is not supported: clauses combine with AND".into());
        }
        return Err(format!(
            "expected AND or the end of the filter, found `{}`",
            lx.rest().split_whitespace().next().unwrap_or_default()
        ));
    }
}

const STRING_CMPS: &str = "=, !=, LIKE, ILIKE";
const NUMERIC_CMPS: &str = "=, !=, <, <=, >, >=";

fn is_numeric_cmp(c: Cmp) -> bool {
    matches!(c, Cmp::Eq | Cmp::Ne | Cmp::Lt | Cmp::Le | Cmp::Gt | Cmp::Ge)
}

pub(crate) fn cmp_name(c: Cmp) -> &'static str {
    match c {
        Cmp::Eq => "=",
        Cmp::Ne => "!=",
        Cmp::Lt => "<",
        Cmp::Le => "<=",
        Cmp::Gt => ">",
        Cmp::Ge => ">=",
        Cmp::Like => "LIKE",
        Cmp::ILike => "ILIKE",
        Cmp::In => "IN",
        Cmp::NotIn => "NOT IN",
        Cmp::IsNull => "IS NULL",
        Cmp::IsNotNull => "IS NOT NULL",
    }
}

fn number(what: &str, v: Value) -> Result<Operand, String> {
    match v {
        Value::Num(n, _) => Ok(Operand::Number(n)),
        Value::Str(s) => Err(format!("{what} compares with a number, not the string '{s}'")),
        _ => Err(format!("{what} compares with a number")),
    }
}

fn text(what: &str, v: Value, lists: bool) -> Result<Operand, String> {
    match v {
        Value::Str(s) => Ok(Operand::Text(s)),
        Value::List(items) if lists => Ok(Operand::List(items)),
        Value::Nothing => Ok(Operand::Nothing),
        Value::Num(_, raw) => Err(format!("{what} compares with a quoted string: write '{raw}'")),
        Value::List(_) => Err(format!("{what} takes no list")),
    }
}

enum Entity {
    Metric,
    Param,
    Tag,
    Attribute,
    Dataset,
}

fn entity(name: Option<&str>) -> Result<Entity, String> {
    Ok(match name {
        None => Entity::Attribute,
        Some("metric" | "metrics") => Entity::Metric,
        Some("param" | "params" | "parameter" | "parameters") => Entity::Param,
        Some("tag" | "tags") => Entity::Tag,
        Some("attribute" | "attributes" | "attr" | "run") => Entity::Attribute,
        Some("dataset" | "datasets") => Entity::Dataset,
        Some(other) => {
            return Err(format!(
                "invalid entity type `{other}`: use metrics., params., tags., attributes. or datasets."
            ));
        }
    })
}

const RUN_ATTRIBUTES: &str =
    "run_id, run_name, status, user_id, artifact_uri, start_time, end_time, created";

fn run_attribute(key: &str) -> Result<(RunKey, bool), String> {
    // (key, numeric)
    Ok(match key {
        "run_id" => (RunKey::RunId, false),
        "run_name" | "run name" | "Run name" | "Run Name" => (RunKey::RunName, false),
        "status" => (RunKey::Status, false),
        "user_id" => (RunKey::UserId, false),
        "artifact_uri" => (RunKey::ArtifactUri, false),
        "lifecycle_stage" => (RunKey::LifecycleStage, false),
        "start_time" | "created" | "Created" => (RunKey::StartTime, true),
        "end_time" => (RunKey::EndTime, true),
        other => {
            return Err(format!(
                "invalid attribute key `{other}`: valid keys are {RUN_ATTRIBUTES}"
            ));
        }
    })
}

/// Parses a runs/search `filter` (empty: no clause).
pub fn parse_run_filter(filter: &str) -> Result<Vec<RunClause>, String> {
    let raw = parse_clauses(filter).map_err(|e| format!("invalid filter `{filter}`: {e}"))?;
    raw.into_iter()
        .map(|c| run_clause(c).map_err(|e| format!("invalid filter `{filter}`: {e}")))
        .collect()
}

fn run_clause(c: RawClause) -> Result<RunClause, String> {
    let RawClause { ident, cmp, value } = c;
    let op = cmp_name(cmp);
    let (key, value) = match entity(ident.entity.as_deref())? {
        Entity::Metric => {
            let what = format!("metrics.{}", ident.key);
            if !is_numeric_cmp(cmp) {
                return Err(format!("{what} takes {NUMERIC_CMPS}, not {op}"));
            }
            (RunKey::Metric(ident.key), number(&what, value)?)
        }
        e @ (Entity::Param | Entity::Tag) => {
            let (what, key) = match e {
                Entity::Param => (format!("params.{}", ident.key), RunKey::Param(ident.key)),
                _ => (format!("tags.{}", ident.key), RunKey::Tag(ident.key)),
            };
            if !matches!(
                cmp,
                Cmp::Eq | Cmp::Ne | Cmp::Like | Cmp::ILike | Cmp::IsNull | Cmp::IsNotNull
            ) {
                return Err(format!("{what} takes {STRING_CMPS}, IS NULL, IS NOT NULL, not {op}"));
            }
            (key, text(&what, value, false)?)
        }
        Entity::Attribute => {
            let (key, numeric) = run_attribute(&ident.key)?;
            let what = format!("attributes.{}", ident.key);
            if numeric {
                if !is_numeric_cmp(cmp) {
                    return Err(format!("{what} takes {NUMERIC_CMPS}, not {op}"));
                }
                (key, number(&what, value)?)
            } else {
                if !matches!(cmp, Cmp::Eq | Cmp::Ne | Cmp::Like | Cmp::ILike | Cmp::In | Cmp::NotIn)
                {
                    return Err(format!("{what} takes {STRING_CMPS}, IN, NOT IN, not {op}"));
                }
                (key, text(&what, value, true)?)
            }
        }
        Entity::Dataset => {
            let key = match ident.key.as_str() {
                "name" => RunKey::DatasetName,
                "digest" => RunKey::DatasetDigest,
                "context" => RunKey::DatasetContext,
                other => {
                    return Err(format!(
                        "invalid dataset key `{other}`: valid keys are name, digest, context"
                    ));
                }
            };
            let what = format!("datasets.{}", ident.key);
            if !matches!(cmp, Cmp::Eq | Cmp::Ne | Cmp::Like | Cmp::ILike | Cmp::In | Cmp::NotIn) {
                return Err(format!("{what} takes {STRING_CMPS}, IN, NOT IN, not {op}"));
            }
            (key, text(&what, value, true)?)
        }
    };
    if matches!(cmp, Cmp::In | Cmp::NotIn) && !matches!(value, Operand::List(_)) {
        return Err(format!("{op} takes a parenthesised list of quoted strings: ('a', 'b')"));
    }
    Ok(RunClause { key, cmp, value })
}

/// Splits an order_by term into its identifier and direction.
pub(crate) fn order_term(term: &str) -> Result<(Ident, bool), String> {
    let mut lx = Lexer::new(term);
    let ident = lx.ident()?;
    let ascending = if lx.at_end() || lx.keyword("ASC") {
        true
    } else if lx.keyword("DESC") {
        false
    } else {
        return Err(format!("expected ASC or DESC after the key, found `{}`", lx.rest().trim()));
    };
    if !lx.at_end() {
        return Err(format!("unexpected `{}` after the direction", lx.rest().trim()));
    }
    Ok((ident, ascending))
}

/// Parses runs/search `order_by` terms such as `metrics.rmse DESC`, `attributes.start_time`.
pub fn parse_run_order(terms: &[String]) -> Result<Vec<RunOrder>, String> {
    terms
        .iter()
        .map(|term| {
            let bad = |e: String| format!("invalid order_by `{term}`: {e}");
            let (ident, ascending) = order_term(term).map_err(bad)?;
            let key = match entity(ident.entity.as_deref()).map_err(bad)? {
                Entity::Metric => RunKey::Metric(ident.key),
                Entity::Param => RunKey::Param(ident.key),
                Entity::Tag => RunKey::Tag(ident.key),
                Entity::Attribute => match run_attribute(&ident.key).map_err(bad)?.0 {
                    RunKey::LifecycleStage => {
                        return Err(bad(format!("cannot order by `{}`", ident.key)));
                    }
                    key => key,
                },
                Entity::Dataset => return Err(bad("cannot order by a dataset field".into())),
            };
            Ok(RunOrder { key, ascending })
        })
        .collect()
}

fn exp_key(ident: &Ident) -> Result<(ExpKey, bool), String> {
    match ident.entity.as_deref() {
        Some("tag" | "tags") => Ok((ExpKey::Tag(ident.key.clone()), false)),
        None | Some("attribute" | "attributes" | "attr") => match ident.key.as_str() {
            "name" => Ok((ExpKey::Name, false)),
            "creation_time" => Ok((ExpKey::CreationTime, true)),
            "last_update_time" => Ok((ExpKey::LastUpdateTime, true)),
            "experiment_id" => Ok((ExpKey::ExperimentId, true)),
            other => Err(format!(
                "invalid attribute key `{other}`: valid keys are name, creation_time, last_update_time"
            )),
        },
        Some(other) => Err(format!("invalid entity type `{other}`: use attributes. or tags.")),
    }
}

/// Parses an experiments/search `filter`.
pub fn parse_experiment_filter(filter: &str) -> Result<Vec<ExpClause>, String> {
    let bad = |e: String| format!("invalid filter `{filter}`: {e}");
    parse_clauses(filter)
        .map_err(bad)?
        .into_iter()
        .map(|c| {
            let (key, numeric) = exp_key(&c.ident).map_err(bad)?;
            let op = cmp_name(c.cmp);
            let value = if numeric {
                if !is_numeric_cmp(c.cmp) {
                    return Err(bad(format!("`{}` takes {NUMERIC_CMPS}, not {op}", c.ident.key)));
                }
                number(&c.ident.key, c.value).map_err(bad)?
            } else {
                if !matches!(c.cmp, Cmp::Eq | Cmp::Ne | Cmp::Like | Cmp::ILike) {
                    return Err(bad(format!("`{}` takes {STRING_CMPS}, not {op}", c.ident.key)));
                }
                text(&c.ident.key, c.value, false).map_err(bad)?
            };
            Ok(ExpClause { key, cmp: c.cmp, value })
        })
        .collect()
}

/// Parses experiments/search `order_by` terms (`name`, `creation_time DESC`, ...).
pub fn parse_experiment_order(terms: &[String]) -> Result<Vec<ExpOrder>, String> {
    terms
        .iter()
        .map(|term| {
            let bad = |e: String| format!("invalid order_by `{term}`: {e}");
            let (ident, ascending) = order_term(term).map_err(bad)?;
            let (key, _) = exp_key(&ident).map_err(bad)?;
            if matches!(key, ExpKey::Tag(_)) {
                return Err(bad(
                    "experiments order by name, experiment_id, creation_time or last_update_time"
                        .into(),
                ));
            }
            Ok(ExpOrder { key, ascending })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(filter: &str) -> RunClause {
        let mut v = parse_run_filter(filter).unwrap();
        assert_eq!(v.len(), 1, "{filter}");
        v.remove(0)
    }

    #[test]
    fn the_documented_examples_parse() {
        let v = parse_run_filter("metrics.rmse < 1 and params.x = 'y'").unwrap();
        assert_eq!(
            v[0],
            RunClause {
                key: RunKey::Metric("rmse".into()),
                cmp: Cmp::Lt,
                value: Operand::Number(1.0)
            }
        );
        assert_eq!(
            v[1],
            RunClause {
                key: RunKey::Param("x".into()),
                cmp: Cmp::Eq,
                value: Operand::Text("y".into())
            }
        );
        assert_eq!(one("tags.mlflow.runName LIKE 'tr%'").key, RunKey::Tag("mlflow.runName".into()));
        assert_eq!(one("metrics.`my loss` >= -1.5e-3").value, Operand::Number(-1.5e-3));
        assert_eq!(one("params.\"a b\" != \"c\"").key, RunKey::Param("a b".into()));
        assert_eq!(
            one("attributes.status IN ('FINISHED', 'FAILED')").value,
            Operand::List(vec!["FINISHED".into(), "FAILED".into()])
        );
        assert_eq!(one("run_id NOT IN ('abc')").cmp, Cmp::NotIn);
        assert_eq!(one("attr.start_time > 1700000000000").key, RunKey::StartTime);
        assert_eq!(one("attributes.`Run name` ILIKE '%x%'").key, RunKey::RunName);
        assert_eq!(one("tags.t IS NOT NULL").cmp, Cmp::IsNotNull);
        assert_eq!(one("params.p = 'it''s'").value, Operand::Text("it's".into()));
        assert_eq!(one("datasets.name = 'iris'").key, RunKey::DatasetName);
        assert!(parse_run_filter("").unwrap().is_empty());
        assert!(parse_run_filter("   ").unwrap().is_empty());
        assert_eq!(
            parse_run_filter("metrics.a > 0 AND metrics.b < 1 aNd params.c = 'd'").unwrap().len(),
            3
        );
    }

    #[test]
    fn bad_filters_name_what_is_wrong() {
        let err = |f: &str| parse_run_filter(f).unwrap_err();
        assert!(
            err("metrics.rmse < 'a'").contains("compares with a number"),
            "{}",
            err("metrics.rmse < 'a'")
        );
        assert!(err("metrics.rmse LIKE 1").contains("not LIKE"));
        assert!(err("params.x = 1").contains("quoted string"));
        assert!(err("params.x < 'a'").contains("not <"));
        assert!(err("attributes.bogus = 'a'").contains("invalid attribute key `bogus`"));
        assert!(err("foo.bar = 'a'").contains("invalid entity type `foo`"));
        assert!(err("metrics.a > 1 or metrics.b > 1").contains("OR is not supported"));
        assert!(err("metrics.a > 1 metrics.b > 1").contains("expected AND"));
        assert!(err("params.x = 'unterminated").contains("unterminated quote"));
        assert!(err("params.x").contains("expected a comparison"));
        assert!(err("params.x =").contains("expected a value"));
        assert!(err("params.x = abc").contains("must be quoted"));
        assert!(err("run_id IN 'a'").contains("parenthesised list"));
        assert!(err("status IN ()").contains("at least one"));
        assert!(err("metrics.x > 1e999").contains("not a number"));
        assert!(err("datasets.size = 'a'").contains("invalid dataset key"));
        assert!(err("'; DROP TABLE runs; --").contains("expected an identifier"));
    }

    #[test]
    fn order_by_terms() {
        let o = parse_run_order(&[
            "metrics.rmse DESC".into(),
            "attributes.start_time".into(),
            "params.lr asc".into(),
        ])
        .unwrap();
        assert_eq!(o[0], RunOrder { key: RunKey::Metric("rmse".into()), ascending: false });
        assert_eq!(o[1], RunOrder { key: RunKey::StartTime, ascending: true });
        assert_eq!(o[2].key, RunKey::Param("lr".into()));
        assert!(
            parse_run_order(&["metrics.rmse SIDEWAYS".into()]).unwrap_err().contains("ASC or DESC")
        );
        assert!(
            parse_run_order(&["attributes.nope".into()])
                .unwrap_err()
                .contains("invalid attribute key")
        );
    }

    #[test]
    fn experiment_filters() {
        let v = parse_experiment_filter("name LIKE 'exp-%' and tags.team = 'a'").unwrap();
        assert_eq!(v[0].key, ExpKey::Name);
        assert_eq!(v[1].key, ExpKey::Tag("team".into()));
        assert_eq!(
            parse_experiment_filter("creation_time > 5").unwrap()[0].value,
            Operand::Number(5.0)
        );
        assert!(
            parse_experiment_filter("metrics.x > 1").unwrap_err().contains("invalid entity type")
        );
        assert!(parse_experiment_filter("name < 'a'").unwrap_err().contains("not <"));
        let o = parse_experiment_order(&["name DESC".into(), "last_update_time".into()]).unwrap();
        assert_eq!(o[0], ExpOrder { key: ExpKey::Name, ascending: false });
    }
}
