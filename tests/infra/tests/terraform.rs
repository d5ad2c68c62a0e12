//! The repository's own `terraform/`: every module wiring resolves (see the crate docs).

use std::path::Path;

#[test]
fn terraform_references_resolve() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../terraform");
    let problems = kiln_infra_tests::check_tree(&root).expect("terraform/ parses");
    let report: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(report.is_empty(), "broken references in terraform/:\n{}", report.join("\n"));
}

#[test]
fn terraform_has_the_modules_and_the_dev_root() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../terraform");
    for dir in [
        "modules/network",
        "modules/storage",
        "modules/database",
        "modules/cluster",
        "modules/identity",
        "modules/registry",
        "environments/dev",
    ] {
        let module = kiln_infra_tests::read_module(&root.join(dir)).expect(dir);
        assert!(!module.variables.is_empty() || !module.calls.is_empty(), "{dir} is empty");
    }
}
