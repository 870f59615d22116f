//! The Linux release binaries are static (musl): `bash tests/ci-tools/static-build.sh`
//! builds careplane for x86_64-unknown-linux-musl (as the release workflow and the
//! Dockerfile do) and runs the ignored test below, which checks that the result has no
//! program interpreter (no dynamic loader, so it runs on distroless "static" or scratch)
//! and works.
//!
//! It is ignored in the default suite (the extra build costs about six minutes on two
//! cores); CI runs it after the suite through that script (`.ci/run`).

use std::path::PathBuf;
use std::process::Command;

const TRIPLE: &str = "x86_64-unknown-linux-musl";

fn binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(TRIPLE)
        .join("debug/careplane");
    assert!(
        path.exists(),
        "{} does not exist: run `bash tests/ci-tools/static-build.sh` (it installs musl-tools and \
         the Rust target {TRIPLE}, builds it and runs this test)",
        path.display()
    );
    path
}

/// Whether a 64-bit little-endian ELF file has a PT_INTERP program header.
fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not a 64-bit ELF file");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == 3 // PT_INTERP
    })
}

#[test]
#[ignore = "needs the musl target and build: bash tests/ci-tools/static-build.sh"]
fn the_musl_binary_is_static_and_runs() {
    let bin = binary();
    let elf = std::fs::read(&bin).unwrap();
    assert!(
        !has_interpreter(&elf),
        "{} is dynamically linked",
        bin.display()
    );
    let out = Command::new(&bin).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("careplane "));
    let clinic = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/clinic");
    let out = Command::new(&bin)
        .arg("validate")
        .arg(clinic)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_interpreter_check_sees_a_dynamic_binary() {
    // the check above can fail: the test binary itself (glibc, dynamic) has an interpreter
    let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    assert!(has_interpreter(&me));
}
