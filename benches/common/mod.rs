//! Settings shared by the benchmarks.
//!
//! `cargo bench` runs a `harness = false` bench with `--bench`; `cargo test
//! --all-targets` (CI) runs the same binary without it. Without `--bench`
//! a benchmark runs as a *smoke test*: small sizes, one round, the same
//! correctness checks, so CI proves the bench still works without spending
//! minutes on figures nobody reads.

/// True under `cargo bench`, false under `cargo test`.
pub fn is_bench_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// `name` from the environment as a number, else `bench_default` under
/// `cargo bench` and `smoke_default` under `cargo test`.
pub fn env_u64(name: &str, bench_default: u64, smoke_default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if is_bench_run() {
            bench_default
        } else {
            smoke_default
        })
}
