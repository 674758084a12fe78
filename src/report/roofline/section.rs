//! The card's roofline section: the table of every backend × scenario against its limit, and the
//! findings (below the roofline, slower than its fp32 parent).

use std::fmt::Write;

use super::model::{quiet_enough, Roofline, MIN_FRACTION};
use crate::host::ComputeDevice;
use crate::roofline::BANDWIDTH_FILE;

fn fmt_bytes(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else {
        format!("{:.1} MB", b / 1e6)
    }
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.filter(|v| v.is_finite()).map_or("n/a".into(), f)
}

/// The card's roofline section.
pub fn section(md: &mut String, r: &Roofline) {
    let _ = writeln!(md, "## Decode roofline (memory bandwidth, this run)\n");
    match r.best_bandwidth() {
        Some(b) => {
            let load = b
                .load_average_1m
                .map_or(String::new(), |l| format!(", load average {l:.2}"));
            let _ = writeln!(
                md,
                "CPU bandwidth **{:.1} GB/s**: the best of {} sample(s) of the probe's streaming fp32 matrix-vector kernel ({} MiB streamed per timing, {} thread(s){load}); CPU backends' limits divide by it. \
Limit = bandwidth of the backend's device ÷ bytes one decode step reads (the weights in their stored type, an embedding read by row gather counted as one row, plus the KV cache at the loop's mean context). \
A backend below {:.0} % of its limit, or a lower-precision variant slower than its fp32 parent in decode (it reads fewer bytes, and decode is memory-bound), is flagged **check its configuration** and left out of routing.\n",
                b.gb_per_s,
                r.bandwidth.len(),
                b.bytes_per_timing >> 20,
                b.threads,
                MIN_FRACTION * 100.0,
            );
            if !quiet_enough(b) {
                let _ = writeln!(
                    md,
                    "**The machine was busy when the bandwidth was measured** (load average {} on {} thread(s)): the fractions below are shown but not judged; run on a quiet machine to judge them. Variants are still compared with their fp32 parents (same run).\n",
                    b.load_average_1m.map_or("unknown".into(), |l| format!("{l:.2}")),
                    b.threads
                );
            }
        }
        None => {
            let _ = writeln!(md, "No CPU bandwidth was measured in this run (`{BANDWIDTH_FILE}` is absent), so no CPU backend has a limit; variants are still compared with their fp32 parents.\n");
        }
    }
    for c in &r.device_copy {
        let _ = writeln!(
            md,
            "`{}` bandwidth **{:.1} GB/s**: the median of {} device-to-device copies of {} MiB (max {:.1} GB/s; read + write counted, libtorch, `tools/{}` of this run); the limits of the backends on `{}` divide by it.\n",
            c.device,
            c.gb_per_s_median,
            c.reps,
            c.bytes >> 20,
            c.gb_per_s_max,
            super::super::tools::DECODE_MODES_FILE,
            c.device,
        );
    }
    let mut no_device_bw: Vec<String> = Vec::new();
    for row in r
        .rows
        .iter()
        .filter(|x| x.bandwidth.is_none() && x.traffic.is_some())
    {
        let what = match row.device {
            Some(ComputeDevice::Cuda(_)) => format!(
                "`{}` (no copy bandwidth of `{}` in this run's `tools/`)",
                row.backend,
                row.device.map_or(String::new(), |d| d.to_string())
            ),
            Some(ComputeDevice::Cpu) => continue,
            None => format!("`{}` (its device is decided when it opens)", row.backend),
        };
        if !no_device_bw.contains(&what) {
            no_device_bw.push(what);
        }
    }
    if !no_device_bw.is_empty() {
        let _ = writeln!(
            md,
            "No bandwidth of their device for {}: no limit (another device's bandwidth is never used).\n",
            no_device_bw.join(", ")
        );
    }
    if r.rows.is_empty() {
        let _ = writeln!(md, "No decode timings in this run.\n");
        return;
    }
    let _ = writeln!(md, "| backend | scenario | gen | runs | decode tok/s (median) | bytes/token | bandwidth | limit tok/s | of limit | vs fp32 parent | |");
    let _ = writeln!(
        md,
        "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- | --- |"
    );
    for row in &r.rows {
        let parent = row.parent.as_ref().map_or("—".to_string(), |p| {
            let ci =
                p.ci.map_or(String::new(), |(lo, hi)| format!(" [{lo:.2}, {hi:.2}]"));
            format!("×{:.2}{ci} vs `{}`", p.ratio, p.parent)
        });
        let flag = if row.findings().is_empty() {
            ""
        } else {
            "**check its configuration**"
        };
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {} |",
            row.backend,
            row.scenario,
            row.gen_tokens,
            row.runs,
            row.decode_tokens_per_s,
            opt(row.bytes_per_token, fmt_bytes),
            row.bandwidth.map_or("n/a".into(), |b| b.to_string()),
            opt(row.limit_tokens_per_s, |v| format!("{v:.1}")),
            opt(row.fraction, |v| format!("{:.0} %", v * 100.0)),
            parent,
            flag
        );
    }
    md.push('\n');
    let unknown: Vec<&str> = {
        let mut v: Vec<&str> = r
            .rows
            .iter()
            .filter(|x| x.traffic.is_none())
            .map(|x| x.backend.as_str())
            .collect();
        v.dedup();
        v
    };
    if !unknown.is_empty() {
        let _ = writeln!(
            md,
            "No bytes-per-token for {}: the backend does not report what it loaded, so it has no limit here.\n",
            unknown
                .iter()
                .map(|b| format!("`{b}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let flagged = r.flagged();
    if flagged.is_empty() {
        let judged = r.rows.iter().any(|x| x.fraction_judged);
        let _ = writeln!(
            md,
            "No backend is flagged: {}no variant is slower than its fp32 parent.\n",
            if judged {
                format!(
                    "each runs at ≥ {:.0} % of its limit where one is known, and ",
                    MIN_FRACTION * 100.0
                )
            } else {
                String::new()
            }
        );
    } else {
        for (backend, reasons) in &flagged {
            let _ = writeln!(
                md,
                "- **`{backend}`: check its configuration** (not a routing candidate in this run): {}",
                reasons.join("; ")
            );
        }
        md.push('\n');
    }
}
