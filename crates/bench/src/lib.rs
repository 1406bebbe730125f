//! Benchmarks run by `gridwatch-bench`: measured, never asserted. Each compares variants side by
//! side in one run (interleaved repeats, medians, ratios), because these machines are noisy.

pub mod accuracy;
pub mod baseline;
pub mod decode;
pub mod history;
pub mod html;
pub mod live;
pub mod model;
pub mod replay;
pub mod report;
pub mod suite;

/// CPU time (user + system) used by this process so far, in seconds.
pub fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}
