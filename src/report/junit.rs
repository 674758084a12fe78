//! `junit.xml`: one `<testcase>` per trial (classname = gate id), a `<failure>` with the reason for a
//! failed gate, `<skipped>` with the reason for a skipped one, the verdict message and metrics in
//! `<system-out>`. Written with `quick-junit`, the serializer cargo-nextest uses for its own JUnit
//! output, so CI systems read both files the same way.

use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use crate::error::ReportError;
use crate::gate::Verdict;

use super::input::RunData;

/// The JUnit document of a run: one test suite per gate, in the order the gates first appear.
pub fn render(data: &RunData) -> Result<String, ReportError> {
    let mut report = Report::new(format!("infergate {}", data.run_id));
    let mut gates: Vec<&str> = Vec::new();
    for t in &data.trials {
        if !gates.contains(&t.result.gate.as_str()) {
            gates.push(&t.result.gate);
        }
    }
    let mut total = Duration::ZERO;
    for gate in gates {
        let mut suite = TestSuite::new(gate);
        for t in data.trials.iter().filter(|t| t.result.gate == gate) {
            let r = &t.result;
            let status = match &r.verdict {
                Verdict::Pass { .. } => TestCaseStatus::success(),
                Verdict::Fail { reason } => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(reason.as_str()).set_type("gate failed");
                    s
                }
                Verdict::Skip { reason } => {
                    let mut s = TestCaseStatus::skipped();
                    s.set_message(reason.as_str());
                    s
                }
            };
            let mut case = TestCase::new(r.trial.as_str(), status);
            case.set_classname(gate);
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
                "{} {}\nruns: stated {}, recorded {}, ok {}, degraded {}, error {}, warmup {}\n{metrics}",
                r.verdict.label(),
                r.verdict.message(),
                runs.stated,
                runs.recorded,
                runs.ok,
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
