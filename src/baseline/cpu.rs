//! CPU time consumed by this process (all threads) and its direct child processes (an engine
//! server such as `llama-server`), for the regression gate's `e2e_cpu_ms` metric.
//!
//! Why: on a shared machine a run's wall time swings with other processes' load, while the CPU time
//! the engine itself needs for the same work barely moves (measured here under load 7–10 on 2
//! cores: ONNX Runtime wall 1.9–3.1 s, CPU 1.16–1.38 s per 32-token generation). An engine that
//! spin-waits (llama.cpp's threads) burns CPU while it waits, so for it CPU time swings too.
//! Linux only (`getrusage` and `/proc/<pid>/stat`); elsewhere the metric is unavailable with the reason.

/// CPU time (user + system) in ms of this process and its direct children, now.
pub fn process_tree_cpu_ms() -> Result<f64, String> {
    // SAFETY: getrusage only writes the struct it is given; a zeroed rusage is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Err(format!(
            "getrusage failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    let own = tv(usage.ru_utime) + tv(usage.ru_stime);
    Ok(own + children_cpu_ms(std::process::id())?)
}

/// Sum of `utime + stime` of the processes whose parent is `parent`, from `/proc/<pid>/stat`.
fn children_cpu_ms(parent: u32) -> Result<f64, String> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks <= 0 {
        return Err("sysconf(_SC_CLK_TCK) failed".into());
    }
    let entries = std::fs::read_dir("/proc")
        .map_err(|e| format!("cannot list /proc ({e}): e2e_cpu_ms needs Linux procfs"))?;
    let mut total = 0.0;
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // A process may exit between listing and reading: skip it.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((ppid, cpu_ticks)) = parse_stat(&stat) {
            if ppid == parent {
                total += cpu_ticks as f64 * 1e3 / ticks as f64;
            }
        }
    }
    Ok(total)
}

/// `(ppid, utime + stime)` from a `/proc/<pid>/stat` line (fields 4, 14 and 15; the command name
/// in parentheses may contain spaces, so fields are counted after its closing parenthesis).
pub fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split(' ').collect();
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_spaces_in_the_name() {
        let line = "4242 (llama server) S 4000 4242 4000 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 3 0 1000 0 0";
        assert_eq!(parse_stat(line), Some((4000, 280)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn cpu_time_never_decreases() {
        let a = process_tree_cpu_ms().unwrap();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = process_tree_cpu_ms().unwrap();
        assert!(a >= 0.0 && b >= a, "{a} → {b}");
    }
}
