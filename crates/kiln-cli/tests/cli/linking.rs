//! The `kiln` binary is a small client: it links no libtorch (only this test binary does,
//! for the API and worker it runs in process), and `--version`/`--help` read no config.
//! Its start-up time is a benchmark (docs/benchmarks.md), not a test.

use std::process::Command;

/// The shared libraries an ELF file names as NEEDED, and its RPATH/RUNPATH entries.
fn dynamic_section(path: &str) -> (Vec<String>, Vec<String>) {
    let out =
        Command::new("readelf").args(["-d", "-W", path]).output().expect("readelf (binutils) runs");
    assert!(out.status.success(), "readelf -d {path}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let bracketed = |line: &str| {
        line.split_once('[').and_then(|(_, rest)| rest.split_once(']')).map(|(v, _)| v.to_owned())
    };
    let needed = text.lines().filter(|l| l.contains("(NEEDED)")).filter_map(bracketed).collect();
    let paths = text
        .lines()
        .filter(|l| l.contains("(RPATH)") || l.contains("(RUNPATH)"))
        .filter_map(bracketed)
        .collect();
    (needed, paths)
}

fn is_torch(name: &str) -> bool {
    ["torch", "c10", "gomp", "cuda", "cudnn", "nccl"].iter().any(|t| name.contains(t))
}

#[test]
fn the_kiln_binary_links_no_libtorch_and_few_shared_libraries() {
    let (needed, paths) = dynamic_section(env!("CARGO_BIN_EXE_kiln"));
    assert!(!needed.is_empty(), "kiln is dynamically linked against libc at least");
    let torch: Vec<&String> = needed.iter().filter(|n| is_torch(n)).collect();
    assert!(torch.is_empty(), "kiln links {torch:?}: {needed:?}");
    assert!(paths.iter().all(|p| !is_torch(p)), "kiln's rpath points into libtorch: {paths:?}");
    // libc, libm, libgcc_s and the loader; nothing else.
    assert!(needed.len() <= 5, "kiln links {} libraries: {needed:?}", needed.len());

    // ldd follows NEEDED transitively: what the loader maps at start-up.
    let out = Command::new("ldd").arg(env!("CARGO_BIN_EXE_kiln")).output().expect("ldd runs");
    let loaded = String::from_utf8(out.stdout).unwrap();
    assert!(!is_torch(&loaded), "{loaded}");
    assert!(loaded.lines().count() <= 6, "kiln loads: {loaded}");

    // The check can fail: this test binary, which runs kiln-api and a worker in process,
    // does link libtorch, and finds it through the rpath build.rs gives test targets only.
    let me = std::env::current_exe().unwrap();
    let (needed, paths) = dynamic_section(me.to_str().unwrap());
    assert!(needed.iter().any(|n| n.starts_with("libtorch_cpu")), "{needed:?}");
    // build.rs found the same libtorch kiln-ml was built against.
    let lib = kiln_ml::libtorch_lib_dir().expect("kiln-ml knows its libtorch");
    assert!(paths.iter().any(|p| p.split(':').any(|d| d == lib)), "{paths:?} vs {lib}");
}

#[test]
fn version_help_and_completions_read_no_config() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("config.toml");
    std::fs::write(&broken, "this is [not toml").unwrap();
    let kiln = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.env_clear().env("KILN_CONFIG", &broken).args(args);
        cmd.output().unwrap()
    };
    for args in [&["--version"][..], &["--help"], &["jobs", "--help"], &["completions", "zsh"]] {
        let out = kiln(args);
        assert!(out.status.success(), "kiln {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(!out.stdout.is_empty(), "kiln {args:?} printed nothing");
    }
    let version = String::from_utf8(kiln(&["--version"]).stdout).unwrap();
    assert_eq!(version.trim(), format!("kiln {}", env!("CARGO_PKG_VERSION")));
    // A command that talks to the API does read it, and says what is wrong with it.
    let out = kiln(&["queue", "stats"]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success());
    assert!(stderr.contains("is not a valid Kiln config"), "{stderr}");
}
