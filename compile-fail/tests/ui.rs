//! Compile-fail tests for the typestate entry (SPEC §2): illegal transitions must not compile.
//!
//! Each `tests/ui/fail_*.rs` case must fail to compile with the error recorded in its `.stderr`
//! file; `tests/ui/pass_*.rs` shows the legal lifecycle compiles. Regenerate the expected output
//! with `TRYBUILD=overwrite cargo test -p livecache-compile-fail`, then review every changed
//! `.stderr`.

#[test]
fn typestate_compile_fail() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail_*.rs");
    t.pass("tests/ui/pass_*.rs");
}
