//! `junit.xml`: one `<testcase>` per trial (classname = gate id), the verdict message and metrics in
//! `<system-out>`. Written with `quick-junit`, the serializer cargo-nextest uses for its own JUnit
//! output, so CI systems read both files the same way.
//!
//! JUnit has four states for six verdicts. No CI reader may count anything but a PASS as passed,
//! so: PASS → success; FAIL → `<failure type="FAIL">`; XFAIL, INFO and SKIP → `<skipped>` with
//! `type` and a message starting with the verdict; XPASS → `<failure type="XPASS">` under
//! `INFERGATE_STRICT=1`, else success with the verdict in `<system-out>` (the claim held). Every
//! test case carries its verdict as the property `verdict`.

use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use crate::error::ReportError;
use crate::gate::verdict::strict;
use crate::gate::Verdict;

use super::input::RunData;

/// The JUnit document of a run: one test suite per gate, in the order the gates first appear.
pub fn render(data: &RunData) -> Result<String, ReportError> {
    let mut report = Report::new(format!("infergate {}", data.run_id));
    let mut gates: Vec<&str> = Vec::new();
    for t in data.results() {
        if !gates.contains(&t.trial.gate.as_str()) {
            gates.push(&t.trial.gate);
        }
    }
    let strict = strict();
    let mut total = Duration::ZERO;
    for gate in gates {
        let mut suite = TestSuite::new(gate);
        for t in data.trials.iter().filter(|t| t.result.trial.gate == gate) {
            let r = &t.result;
            let failure = |kind: &str| {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(r.message.as_str()).set_type(kind);
                s
            };
            let skipped = |v: Verdict| {
                let mut s = TestCaseStatus::skipped();
                s.set_message(format!("{v}: {}", r.message))
                    .set_type(v.label());
                s
            };
            let status = match r.verdict {
                Verdict::Pass => TestCaseStatus::success(),
                Verdict::Xpass if !strict => TestCaseStatus::success(),
                Verdict::Fail | Verdict::Xpass => failure(r.verdict.label()),
                Verdict::Xfail | Verdict::Info | Verdict::Skip => skipped(r.verdict),
            };
            let mut case = TestCase::new(r.trial.to_string(), status);
            case.set_classname(gate);
            case.add_property(Property::new("verdict", r.verdict.label()));
            if let Some(s) = t.elapsed_s.filter(|s| s.is_finite() && *s >= 0.0) {
                let d = Duration::from_secs_f64(s);
                case.set_time(d);
                total += d;
            }
            let metrics = r
                .metrics
                .iter()
                .map(|(k, v)| format!("{k} = {v}"))
                .collect::<Vec<_>>()
                .join("\n");
            let runs = &r.runs;
            case.set_system_out(format!(
                "{} {}\nruns: stated {}, recorded {}, ok {}, projected {}, degraded {}, error {}, warmup {}\n{metrics}",
                r.verdict.label(),
                r.message,
                runs.stated,
                runs.recorded,
                runs.ok,
                runs.projected,
                runs.degraded,
                runs.error,
                runs.warmup
            ));
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    report.set_time(total);
    report
        .to_string()
        .map_err(|e| ReportError::Junit(e.to_string()))
}
