//! kiln-infra-tests owns the static checks of `terraform/` that `terraform validate` would
//! make if it could run. It cannot here: `validate` needs `terraform init`, and `init`
//! downloads the AWS, Kubernetes and Helm providers, which no machine of this project can
//! reach. What a typo in a module wiring breaks is caught from the HCL alone, parsed with
//! `hcl-rs`:
//!
//! - every `var.X` referenced in a module is declared by a `variable "X"` block of that
//!   module;
//! - every input given in a `module "M"` block whose `source` is a local path is a variable
//!   of the called module, and every variable of the called module without a `default` is
//!   given;
//! - every `module.M.OUT` reference names a `module "M"` block of the same module and an
//!   `output "OUT"` of the module it calls.
//!
//! A "module" is a directory holding `.tf` files (Terraform's own definition): the reusable
//! modules under `terraform/modules/` and the roots under `terraform/environments/` alike.
//! [`check_tree`] walks a directory and returns one [`Problem`] per broken reference, so a
//! test asserts an empty list and prints every problem at once when it is not.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use hcl::expr::{Expression, ObjectKey, TemplateExpr, TraversalOperator};
use hcl::template::{Directive, Element, Template};
use hcl::{Block, Body, Structure};

/// Arguments of a `module` block that Terraform itself interprets: never module inputs.
const MODULE_META_ARGUMENTS: &[&str] =
    &["source", "version", "count", "for_each", "providers", "depends_on"];

/// One broken reference, located by file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// The `.tf` file holding the reference.
    pub file: PathBuf,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

/// What one module declares and references, gathered from all its `.tf` files.
#[derive(Debug, Default)]
pub struct Module {
    /// Declared variables: name → whether it has a default (is optional).
    pub variables: BTreeMap<String, bool>,
    /// Declared outputs.
    pub outputs: BTreeSet<String>,
    /// `module` blocks of this module.
    pub calls: Vec<ModuleCall>,
    /// Every `var.X` referenced: (file, X).
    pub variable_refs: Vec<(PathBuf, String)>,
    /// Every `module.M.OUT` referenced: (file, M, OUT). OUT is empty for a bare `module.M`.
    pub output_refs: Vec<(PathBuf, String, String)>,
}

/// One `module "NAME" { source = ..., inputs... }` block.
#[derive(Debug)]
pub struct ModuleCall {
    pub file: PathBuf,
    pub name: String,
    /// The `source` string as written.
    pub source: String,
    /// The inputs given (attributes other than Terraform's meta-arguments).
    pub inputs: BTreeSet<String>,
}

/// Reads one module: every `*.tf` file directly in `dir`.
pub fn read_module(dir: &Path) -> io::Result<Module> {
    let mut module = Module::default();
    for file in tf_files(dir)? {
        let text = fs::read_to_string(&file)?;
        let body = hcl::parse(&text).map_err(|err| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{}: {err}", file.display()))
        })?;
        collect_module(&file, &body, &mut module);
    }
    Ok(module)
}

/// Checks every module under `root` (every directory holding `.tf` files) and the module
/// calls between them. Returns the problems found, sorted; empty when all is well.
pub fn check_tree(root: &Path) -> io::Result<Vec<Problem>> {
    let mut modules = BTreeMap::new();
    for dir in module_dirs(root)? {
        let module = read_module(&dir)?;
        modules.insert(dir, module);
    }
    let mut problems = Vec::new();
    for (dir, module) in &modules {
        check_module(dir, module, &modules, &mut problems);
    }
    problems.sort();
    Ok(problems)
}

fn check_module(
    dir: &Path,
    module: &Module,
    modules: &BTreeMap<PathBuf, Module>,
    problems: &mut Vec<Problem>,
) {
    for (file, name) in &module.variable_refs {
        if !module.variables.contains_key(name) {
            problems.push(Problem {
                file: file.clone(),
                message: format!("var.{name} is not declared in {}", dir.display()),
            });
        }
    }
    let mut callees = BTreeMap::new();
    for call in &module.calls {
        if !(call.source.starts_with("./") || call.source.starts_with("../")) {
            // A registry or git module: its interface is not in this repository.
            continue;
        }
        let target = normalize(&dir.join(&call.source));
        let Some(callee) = modules.get(&target) else {
            problems.push(Problem {
                file: call.file.clone(),
                message: format!(
                    "module \"{}\": source {} is no module (no .tf files at {})",
                    call.name,
                    call.source,
                    target.display()
                ),
            });
            continue;
        };
        for input in &call.inputs {
            if !callee.variables.contains_key(input) {
                problems.push(Problem {
                    file: call.file.clone(),
                    message: format!(
                        "module \"{}\": input {input} is not a variable of {}",
                        call.name, call.source
                    ),
                });
            }
        }
        for (variable, optional) in &callee.variables {
            if !optional && !call.inputs.contains(variable) {
                problems.push(Problem {
                    file: call.file.clone(),
                    message: format!(
                        "module \"{}\": required variable {variable} of {} is not given",
                        call.name, call.source
                    ),
                });
            }
        }
        callees.insert(call.name.as_str(), callee);
    }
    let declared: BTreeSet<&str> = module.calls.iter().map(|c| c.name.as_str()).collect();
    for (file, name, output) in &module.output_refs {
        if !declared.contains(name.as_str()) {
            problems.push(Problem {
                file: file.clone(),
                message: format!("module.{name} names no module block in {}", dir.display()),
            });
            continue;
        }
        if let Some(callee) = callees.get(name.as_str())
            && !output.is_empty()
            && !callee.outputs.contains(output)
        {
            problems.push(Problem {
                file: file.clone(),
                message: format!("module.{name}.{output}: the module declares no such output"),
            });
        }
    }
}

fn collect_module(file: &Path, body: &Body, module: &mut Module) {
    for structure in body.iter() {
        match structure {
            Structure::Attribute(attribute) => collect_refs(file, &attribute.expr, module),
            Structure::Block(block) => collect_block(file, block, module),
        }
    }
}

fn collect_block(file: &Path, block: &Block, module: &mut Module) {
    let label = block.labels.first().map(|l| l.as_str().to_owned());
    match (block.identifier.as_str(), label) {
        ("variable", Some(name)) => {
            let optional = block.body.attributes().any(|a| a.key.as_str() == "default");
            module.variables.insert(name, optional);
        }
        ("output", Some(name)) => {
            module.outputs.insert(name);
        }
        ("module", Some(name)) => {
            let mut source = String::new();
            let mut inputs = BTreeSet::new();
            for attribute in block.body.attributes() {
                let key = attribute.key.as_str();
                if key == "source" {
                    if let Expression::String(s) = &attribute.expr {
                        source = s.clone();
                    }
                } else if !MODULE_META_ARGUMENTS.contains(&key) {
                    inputs.insert(key.to_owned());
                }
            }
            module.calls.push(ModuleCall { file: file.to_owned(), name, source, inputs });
        }
        _ => {}
    }
    // References anywhere in the block count, the variable and module blocks' own included
    // (a `validation` may only name its own variable, which is then declared).
    collect_module(file, &block.body, module);
}

/// Records every `var.X` and `module.M.OUT` found in `expr`, at any depth.
fn collect_refs(file: &Path, expr: &Expression, module: &mut Module) {
    match expr {
        Expression::Null
        | Expression::Bool(_)
        | Expression::Number(_)
        | Expression::String(_)
        | Expression::Variable(_) => {}
        Expression::Array(items) => items.iter().for_each(|e| collect_refs(file, e, module)),
        Expression::Object(object) => {
            for (key, value) in object {
                if let ObjectKey::Expression(key) = key {
                    collect_refs(file, key, module);
                }
                collect_refs(file, value, module);
            }
        }
        Expression::TemplateExpr(template) => collect_template_expr(file, template, module),
        Expression::Traversal(traversal) => {
            if let Expression::Variable(root) = &traversal.expr {
                let attrs: Vec<&str> = traversal
                    .operators
                    .iter()
                    .map_while(|op| match op {
                        TraversalOperator::GetAttr(ident) => Some(ident.as_str()),
                        _ => None,
                    })
                    .collect();
                match (root.as_str(), attrs.as_slice()) {
                    ("var", [name, ..]) => {
                        module.variable_refs.push((file.to_owned(), (*name).to_owned()));
                    }
                    ("module", [name, rest @ ..]) => {
                        let output = rest.first().map(|o| (*o).to_owned()).unwrap_or_default();
                        module.output_refs.push((file.to_owned(), (*name).to_owned(), output));
                    }
                    _ => {}
                }
            } else {
                collect_refs(file, &traversal.expr, module);
            }
            for operator in &traversal.operators {
                if let TraversalOperator::Index(index) = operator {
                    collect_refs(file, index, module);
                }
            }
        }
        Expression::FuncCall(call) => call.args.iter().for_each(|e| collect_refs(file, e, module)),
        Expression::Parenthesis(inner) => collect_refs(file, inner, module),
        Expression::Conditional(c) => {
            collect_refs(file, &c.cond_expr, module);
            collect_refs(file, &c.true_expr, module);
            collect_refs(file, &c.false_expr, module);
        }
        Expression::Operation(operation) => match operation.as_ref() {
            hcl::expr::Operation::Unary(op) => collect_refs(file, &op.expr, module),
            hcl::expr::Operation::Binary(op) => {
                collect_refs(file, &op.lhs_expr, module);
                collect_refs(file, &op.rhs_expr, module);
            }
        },
        Expression::ForExpr(f) => {
            collect_refs(file, &f.collection_expr, module);
            if let Some(key) = &f.key_expr {
                collect_refs(file, key, module);
            }
            collect_refs(file, &f.value_expr, module);
            if let Some(cond) = &f.cond_expr {
                collect_refs(file, cond, module);
            }
        }
        // The expression type is non-exhaustive: a new kind of expression hides nothing we
        // know how to look into.
        _ => {}
    }
}

fn collect_template_expr(file: &Path, template: &TemplateExpr, module: &mut Module) {
    // A template that does not parse is Terraform's error to report (`terraform fmt` runs
    // beside this check); here it just holds no reference we can see.
    if let Ok(template) = Template::from_expr(template) {
        collect_template(file, &template, module);
    }
}

fn collect_template(file: &Path, template: &Template, module: &mut Module) {
    for element in template.elements() {
        match element {
            Element::Literal(_) => {}
            Element::Interpolation(interpolation) => {
                collect_refs(file, &interpolation.expr, module)
            }
            Element::Directive(directive) => match directive.as_ref() {
                Directive::If(d) => {
                    collect_refs(file, &d.cond_expr, module);
                    collect_template(file, &d.true_template, module);
                    if let Some(f) = &d.false_template {
                        collect_template(file, f, module);
                    }
                }
                Directive::For(d) => {
                    collect_refs(file, &d.collection_expr, module);
                    collect_template(file, &d.template, module);
                }
            },
        }
    }
}

/// The `*.tf` files directly in `dir`, sorted.
fn tf_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "tf") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Every directory under `root` (itself included) holding `.tf` files, skipping hidden ones
/// (`.terraform/` holds downloaded modules, not ours).
fn module_dirs(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![normalize(root)];
    while let Some(dir) = pending.pop() {
        if !tf_files(&dir)?.is_empty() {
            found.push(dir.clone());
        }
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            let hidden =
                path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
            if path.is_dir() && !hidden {
                pending.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// `a/b/../c` → `a/c`, without touching the file system (so a missing target stays
/// comparable with the keys of the module map).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `files` (path relative to a fresh directory → contents), checks the tree and
    /// returns the problems' messages.
    fn check(files: &[(&str, &str)]) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        check_tree(dir.path()).unwrap().into_iter().map(|p| p.message).collect()
    }

    const BUCKET_MODULE: &str = r#"
variable "name" {
  type = string
}
variable "tags" {
  type    = map(string)
  default = {}
}
resource "aws_s3_bucket" "this" {
  bucket = "${var.name}-artifacts"
  tags   = merge(var.tags, { for k, v in var.tags : k => upper(v) if v != "" })
}
output "bucket_arn" {
  value = aws_s3_bucket.this.arn
}
"#;

    #[test]
    fn a_well_wired_tree_has_no_problem() {
        let root = r#"
variable "env" {
  type = string
}
module "bucket" {
  source = "../../modules/bucket"
  name   = "kiln-${var.env}"
}
output "arn" {
  value = module.bucket.bucket_arn
}
"#;
        let problems =
            check(&[("modules/bucket/main.tf", BUCKET_MODULE), ("environments/dev/main.tf", root)]);
        assert_eq!(problems, Vec::<String>::new());
    }

    #[test]
    fn an_undeclared_variable_is_reported_wherever_it_hides() {
        let module = r#"
variable "declared" {
  type = string
}
locals {
  in_template = "${var.declared}-${var.in_template}"
  in_heredoc  = <<-EOT
    %{ if var.in_directive }yes%{ endif }
  EOT
  in_for      = [for s in var.in_for : s.id]
  in_index    = aws_subnet.x[var.in_index].id
  in_cond     = var.in_cond ? 1 : 2
}
"#;
        let problems = check(&[("m/main.tf", module)]);
        let expected = ["in_cond", "in_directive", "in_for", "in_index", "in_template"];
        assert_eq!(problems.len(), expected.len(), "{problems:?}");
        for (problem, name) in problems.iter().zip(expected) {
            let want = format!("var.{name} is not declared in ");
            assert!(problem.starts_with(&want), "{problem:?} should start with {want:?}");
        }
    }

    #[test]
    fn an_unknown_module_input_and_a_missing_required_one_are_reported() {
        let root = r#"
module "bucket" {
  source     = "../modules/bucket"
  nmae       = "typo"
  count      = 1
  depends_on = []
}
"#;
        assert_eq!(
            check(&[("modules/bucket/main.tf", BUCKET_MODULE), ("root/main.tf", root)]),
            [
                "module \"bucket\": input nmae is not a variable of ../modules/bucket",
                "module \"bucket\": required variable name of ../modules/bucket is not given",
            ]
        );
    }

    #[test]
    fn an_undeclared_module_output_or_module_is_reported() {
        let root = r#"
module "bucket" {
  source = "../modules/bucket"
  name   = "x"
}
output "a" {
  value = module.bucket.bucket_id
}
output "b" {
  value = module.buckets.bucket_arn
}
"#;
        let problems = check(&[("modules/bucket/main.tf", BUCKET_MODULE), ("root/main.tf", root)]);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0], "module.bucket.bucket_id: the module declares no such output");
        assert!(problems[1].starts_with("module.buckets names no module block in "));
    }

    #[test]
    fn a_local_source_without_tf_files_is_reported() {
        let root = "module \"gone\" {\n  source = \"../modules/gone\"\n}\n";
        let problems = check(&[("root/main.tf", root)]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("module \"gone\": source ../modules/gone is no module"));
    }

    #[test]
    fn registry_modules_are_not_checked() {
        let root = "module \"vpc\" {\n  source = \"terraform-aws-modules/vpc/aws\"\n  x = 1\n}\n";
        assert_eq!(check(&[("root/main.tf", root)]), Vec::<String>::new());
    }
}
