//! The test binary itself proves the linking mechanism: it found libtorch through its rpath
//! (LD_LIBRARY_PATH does not point there), and `--as-needed` did not drop libtorch_cuda.

use std::process::Command;

fn dynamic_section() -> String {
    let exe = std::env::current_exe().unwrap();
    let output = Command::new("readelf")
        .arg("-d")
        .arg(&exe)
        .output()
        .unwrap_or_else(|e| panic!("readelf (binutils) is needed for this test: {e}"));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn lib_dir() -> &'static str {
    kiln_ml::libtorch_lib_dir().expect("the build recorded libtorch's directory")
}

#[test]
fn the_binary_finds_libtorch_through_its_rpath() {
    let dynamic = dynamic_section();
    let runpath = dynamic
        .lines()
        .find(|l| l.contains("(RUNPATH)") || l.contains("(RPATH)"))
        .unwrap_or_else(|| panic!("no RPATH/RUNPATH entry:\n{dynamic}"));
    assert!(runpath.contains(lib_dir()), "{runpath} lacks {}", lib_dir());
    assert!(dynamic.contains("[libtorch_cpu.so]"), "{dynamic}");
    let ld_path = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    assert!(
        !ld_path.split(':').any(|p| p.trim_end_matches('/') == lib_dir().trim_end_matches('/')),
        "LD_LIBRARY_PATH points at libtorch, so this test proves nothing: {ld_path}"
    );
    // And libtorch works.
    assert_eq!(tch_free_smoke(), 6.0);
}

/// A tiny computation through kiln-ml's public API only.
fn tch_free_smoke() -> f64 {
    let data = kiln_ml::Dataset::from_csv_bytes(b"a,y\n1,0\n2,1\n3,0\n4,1\n5,0\n6,1\n").unwrap();
    data.len() as f64
}

#[test]
fn libtorch_cuda_is_kept_despite_as_needed() {
    let has_cuda_build = std::path::Path::new(lib_dir()).join("libtorch_cuda.so").exists();
    let dynamic = dynamic_section();
    if has_cuda_build {
        assert!(dynamic.contains("[libtorch_cuda.so]"), "libtorch_cuda.so was dropped:\n{dynamic}");
        // Loaded into this very process, so CUDA would be seen on a GPU machine.
        let _ = kiln_ml::cuda_available();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert!(maps.contains("libtorch_cuda.so"), "libtorch_cuda.so is not loaded");
    } else {
        assert!(!dynamic.contains("[libtorch_cuda.so]"));
    }
    println!(
        "cuda available: {} ({} devices)",
        kiln_ml::cuda_available(),
        kiln_ml::cuda_device_count()
    );
}
